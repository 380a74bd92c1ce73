"""Local users and proxies get no control (issue 17, items 2, 3 and 11): a real daemon.

Loopback is not a trust boundary: any local user can reach the daemon's port. So every
state-changing request needs the token from ``control.json`` (the CLI) or a browser session,
which a user gets from a one-time link (`peerfarm up` prints one, `peerfarm dashboard` prints
more) or the farm's password; forwarding headers never make a request local; logout ends a
session on the server; logins are rate limited.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from peerfarm.testing.daemons import Daemon, LocalFarm, wait_until

MARK = {"X-Peerfarm": "1"}


@pytest.fixture(scope="module")
def solo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalFarm, Daemon]]:
    with LocalFarm(tmp_path_factory.mktemp("farm")) as farm:
        (solo,) = farm.start_all(["solo"], web=True, allow_command=True)
        yield farm, solo


def _scene(tmp_path: Path) -> Path:
    scene = tmp_path / "x.sh"
    scene.write_text('#!/bin/sh\ntouch "$PEERFARM_OUTPUT_DIR/x"\n')
    return scene


def _link(peer: Daemon) -> str:
    done = peer.cli("dashboard", check=False)
    assert done.returncode == 0, done.stderr
    assert "works once" in done.stderr
    return done.stdout.strip()


def _redeem(client: httpx.Client, link: str) -> httpx.Response:
    code = httpx.URL(link).params["login"]
    return client.post("/api/login", json={"code": code}, headers=MARK)


def test_a_local_process_without_the_token_cannot_act(
    solo: tuple[LocalFarm, Daemon], tmp_path: Path
) -> None:
    _farm, peer = solo
    with httpx.Client(base_url=peer.url, timeout=10) as other_user:
        assert other_user.get("/api/status").status_code == 200  # viewing stays open
        submit = {"scene": str(_scene(tmp_path)), "frames": "1", "renderer": "command"}
        refused = other_user.post("/api/jobs", json=submit, headers=MARK)
        assert refused.status_code == 401, refused.text
        assert "peerfarm dashboard" in refused.json()["error"]
        upload = other_user.post(
            "/api/upload", headers=MARK, files={"scene": ("x.sh", b"#!/bin/sh\n")},
            data={"frames": "1"},
        )  # fmt: skip
        assert upload.status_code == 401
        fetch = other_user.post("/api/jobs/x/fetch", json={"dest": str(tmp_path)}, headers=MARK)
        assert fetch.status_code == 401
        assert other_user.post("/api/login-link", headers=MARK).status_code == 401
    assert peer.status()["jobs"] == []


def test_the_one_time_link_from_up_and_from_dashboard_each_work_once(
    solo: tuple[LocalFarm, Daemon], tmp_path: Path
) -> None:
    farm, peer = solo
    printed = re.findall(r"dashboard: (http://\S+/\?login=\S+)", peer.log_path.read_text())
    assert printed and printed[0].startswith(peer.url + "/?login=")
    slow = tmp_path / "slow.sh"
    slow.write_text("#!/bin/sh\nsleep 30\n")
    job = farm.submit(peer, slow, "1-3", renderer="command", name="held")
    for link in (printed[0], _link(peer)):
        with httpx.Client(base_url=peer.url, timeout=10) as browser:
            assert browser.get(link).status_code == 200  # the page, which swaps the code
            first = _redeem(browser, link)
            assert first.status_code == 200, first.text
            key = {**MARK, "X-Peerfarm-Key": first.json()["key"]}
            paused = browser.post(f"/api/jobs/{job}/pause", headers=key)
            assert paused.status_code == 200 and paused.json()["state"] == "paused"
            resumed = browser.post(f"/api/jobs/{job}/resume", headers=key)
            assert resumed.status_code == 200
            assert _redeem(browser, link).status_code == 401  # spent
            last_key = key
        with httpx.Client(base_url=peer.url, timeout=10) as someone_else:
            assert _redeem(someone_else, link).status_code == 401
    with httpx.Client(base_url=peer.url, timeout=10) as browser:
        assert browser.post(f"/api/jobs/{job}/cancel", headers=last_key).status_code == 200


def test_dashboard_open_hands_a_fresh_link_to_the_browser(
    solo: tuple[LocalFarm, Daemon], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _farm, peer = solo
    seen = tmp_path / "opened.txt"
    browser = tmp_path / "browser.py"
    browser.write_text(f"import sys\nopen({str(seen)!r}, 'w').write(sys.argv[1])\n")
    monkeypatch.setenv("BROWSER", f"{sys.executable} {browser} %s")
    done = peer.cli("dashboard", "--open", "--json", check=False)
    assert done.returncode == 0, done.stderr
    link = json.loads(done.stdout)["url"]
    wait_until(seen.exists, 10, "the browser to be started")
    assert seen.read_text() == link
    with httpx.Client(base_url=peer.url, timeout=10) as client:
        assert _redeem(client, link).status_code == 200


@pytest.mark.parametrize(
    "header",
    [
        {"X-Forwarded-For": "203.0.113.9"},
        {"Forwarded": "for=203.0.113.9"},
        {"X-Forwarded-Host": "farm.example"},
        {"X-Real-IP": "203.0.113.9"},
    ],
)
def test_a_request_through_a_reverse_proxy_is_not_local(
    solo: tuple[LocalFarm, Daemon], tmp_path: Path, header: dict[str, str]
) -> None:
    """nginx on the same host: the daemon sees 127.0.0.1 and a loopback Host, plus the
    forwarding header the proxy adds. That header makes the request remote."""
    _farm, peer = solo
    with httpx.Client(base_url=peer.url, timeout=10, headers=header) as remote:
        assert remote.get("/api/status").status_code == 401
        submit = {"scene": str(_scene(tmp_path)), "frames": "1", "renderer": "command"}
        assert remote.post("/api/jobs", json=submit, headers=MARK).status_code == 401
        assert remote.get("/").status_code == 200  # the page (with its login box) is served


def test_logout_ends_the_session_for_every_copy_of_it(solo: tuple[LocalFarm, Daemon]) -> None:
    _farm, peer = solo
    with httpx.Client(base_url=peer.url, timeout=10) as browser:
        key = {**MARK, "X-Peerfarm-Key": _redeem(browser, _link(peer)).json()["key"]}
        probe = {"frames": "1"}
        assert browser.post("/api/jobs/nope/retry", json=probe, headers=key).status_code == 404
        assert browser.post("/api/logout", headers=key).status_code == 200
        denied = browser.post("/api/jobs/nope/retry", json=probe, headers=key)
        assert denied.status_code == 401
        assert browser.get("/api/session", headers=key).json()["actions"] is False


def test_password_logins_are_rate_limited_per_source(solo: tuple[LocalFarm, Daemon]) -> None:
    _farm, peer = solo
    with httpx.Client(base_url=peer.url, timeout=10) as guesser:
        answers = [
            guesser.post("/api/login", json={"password": f"guess-{i}"}, headers=MARK).status_code
            for i in range(8)
        ]
    assert answers[:5] == [401] * 5 and set(answers[5:]) == {429}
    with httpx.Client(base_url=peer.url, timeout=10) as owner:  # a link still works meanwhile
        assert _redeem(owner, _link(peer)).status_code == 200
