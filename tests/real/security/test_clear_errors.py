"""Clear 4xx answers and one-line errors instead of internal errors (issue 17, item 10).

Each case used to answer "internal error: <Exception>" (HTTP 500, or the CLI's "unexpected
error") from a real daemon. Now each is a 4xx / exit 2 with one line that says what is wrong,
and the daemon logs no traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from peerfarm.testing.daemons import Daemon, LocalFarm, wait_until

HUGE = "99999999999999999999999999"


@pytest.fixture
def rendered(farm: LocalFarm, tmp_path: Path) -> tuple[Daemon, str]:
    a = farm.start("a", "--allow-command")
    scene = tmp_path / "s.sh"
    scene.write_text('#!/bin/sh\necho "$PEERFARM_FRAME" > "$PEERFARM_OUTPUT_DIR/frame.txt"\n')
    job = a.cli_json("submit", str(scene), "1-3", "--renderer", "command",
                 "--output", str(tmp_path / "out"))["job"]  # fmt: skip
    wait_until(lambda: a.status(job)["jobs"][0]["state"] == "done", 60, "the job done")
    return a, str(job)


def _api(daemon: Daemon) -> httpx.Client:
    control: dict[str, Any] = json.loads((daemon.data_dir / "control.json").read_text())
    return httpx.Client(
        base_url=control["url"],
        timeout=30,
        headers={"Authorization": f"Bearer {control['token']}", "X-Peerfarm": "1"},
    )


def _one_line_usage(result: Any) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert result.stderr.startswith("peerfarm: ") and result.stderr.count("\n") == 1
    assert "internal error" not in result.stderr and "unexpected" not in result.stderr
    return str(result.stderr)


def test_bad_requests_to_the_api_are_4xx_with_a_reason(rendered: tuple[Daemon, str]) -> None:
    a, job = rendered
    with _api(a) as api:
        index = api.get(f"/api/jobs/{job}/frames/1/output", params={"index": "-7"})
        assert index.status_code == 400 and "'index'" in index.json()["error"]
        deep = api.post("/api/jobs", content=b"[" * 100_000 + b"]" * 100_000,
                        headers={"Content-Type": "application/json"})  # fmt: skip
        assert deep.status_code == 400 and "nested too deeply" in deep.json()["error"]
        raw = (
            b'--B\r\nContent-Disposition: form-data; name="scene"; filename="s.sh"\r\n\r\n'
            b'#!/bin/sh\n\r\n--B\r\nContent-Disposition: form-data; name="frames"\r\n\r\n'
            b"\xff\xfe1\r\n--B--\r\n"
        )
        bad = api.post("/api/upload", content=raw,
                       headers={"Content-Type": "multipart/form-data; boundary=B"})  # fmt: skip
        assert bad.status_code == 400 and "not UTF-8" in bad.json()["error"]
        for scene in ("/tmp/a\x00b.pov", "~no-such-user-here/x.pov"):
            answer = api.post("/api/jobs", json={"scene": scene, "frames": "1"})
            assert answer.status_code == 400, answer.text
        for field, value in (("priority", 10**26), ("chunk", 10**26), ("retries", 10**26),
                             ("fps", 1e308)):  # fmt: skip
            body = {"scene": "/etc/hostname", "frames": "1", field: value}
            answer = api.post("/api/jobs", json=body)
            assert answer.status_code == 400 and f"'{field}' must be" in answer.json()["error"]
    assert a.alive() and "Traceback" not in a.log()


def test_a_frame_number_beyond_any_range_is_one_line(
    rendered: tuple[Daemon, str], tmp_path: Path
) -> None:
    a, job = rendered
    scene = tmp_path / "t.sh"
    scene.write_text("#!/bin/sh\n")
    message = _one_line_usage(a.cli("submit", str(scene), HUGE, check=False))
    assert "far too large" in message
    _one_line_usage(a.cli("submit", str(scene), "1-1000000001", check=False))
    _one_line_usage(a.cli("retry", job, HUGE, check=False))
    _one_line_usage(a.cli("logs", job, HUGE, check=False))
    assert a.alive() and "Traceback" not in a.log()


def test_fetch_and_encode_to_a_path_that_cannot_be_written_are_one_line(
    rendered: tuple[Daemon, str], tmp_path: Path
) -> None:
    a, job = rendered
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    message = _one_line_usage(a.cli("fetch", job, str(blocker / "sub"), check=False))
    assert "cannot write the frames into" in message and "Not a directory" in message
    message = _one_line_usage(a.cli("encode", job, str(blocker / "v.mp4"), check=False))
    assert "cannot write the video" in message
    _one_line_usage(a.cli("fetch", job, "/proc/peerfarm-nope", check=False))
    assert a.alive() and "Traceback" not in a.log()


def test_a_symlink_planted_in_the_fetch_destination_is_replaced_not_followed(
    rendered: tuple[Daemon, str], tmp_path: Path
) -> None:
    a, job = rendered
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "frame_0001.txt").symlink_to(victim)  # outside the destination
    (dest / "frame_0002.txt").symlink_to(dest / "elsewhere.txt")  # dangling, inside
    result = a.cli("fetch", job, str(dest))
    assert "3 file(s)" in result.stdout, result.stderr
    assert victim.read_text() == "precious\n"
    assert not (dest / "elsewhere.txt").exists()
    for n in (1, 2, 3):
        path = dest / f"frame_{n:04d}.txt"
        assert not path.is_symlink() and path.read_text() == f"{n}\n"
    assert not list(dest.glob(".*.part"))


def test_the_default_fetch_folder_stays_inside_peerfarm_out(
    farm: LocalFarm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = farm.start("a", "--allow-command")
    scene = tmp_path / "s.sh"
    scene.write_text('#!/bin/sh\necho x > "$PEERFARM_OUTPUT_DIR/f.txt"\n')
    work = tmp_path / "work"
    work.mkdir()
    job = a.cli_json("submit", str(scene), "1", "--renderer", "command", "--name", "../../escaped",
                 "--output", str(tmp_path / "out"))["job"]  # fmt: skip
    wait_until(lambda: a.status(job)["jobs"][0]["state"] == "done", 60, "the job done")
    monkeypatch.chdir(work)
    a.cli("fetch", job)
    assert not (tmp_path / "escaped").exists()
    assert [p.name for p in (work / "peerfarm-out").iterdir()] == ["escaped"]
