"""Who may call the API: bearer token, sessions for every browser action, logins, proxies."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import trio
import trio.testing

from peerfarm.api.access import (
    SESSION_COOKIE,
    LoginLimiter,
    RequestFacts,
    Sessions,
    access_decision,
)
from tests.sim.api.conftest import PASSWORD, ClientFactory, log_in

BROWSER = RequestFacts(
    method="GET",
    path="/api/status",
    loopback=True,
    host="127.0.0.1:7947",
    origin=None,
    sec_fetch_site=None,
    marked=False,
    bearer=None,
    logged_in=False,
    public=False,
)
POST = replace(BROWSER, method="POST", path="/api/jobs/x/cancel")
ACTING = replace(POST, acting=True)
REMOTE = replace(BROWSER, loopback=False, host="farm.example:7947")
PROXIED = replace(BROWSER, forwarded=True)  # loopback, but a reverse proxy's header is on it


@pytest.mark.parametrize(
    ("facts", "status"),
    [
        (BROWSER, None),
        (replace(BROWSER, bearer=True, host="evil.example"), None),
        (replace(BROWSER, bearer=False), 401),
        (replace(BROWSER, host="evil.example:7947"), 403),  # DNS rebinding
        (replace(BROWSER, host="localhost:7947"), None),
        (replace(BROWSER, host="[::1]:7947"), None),
        (POST, 403),  # no proof of same origin
        (replace(POST, marked=True), 401),  # same origin, but no session: loopback is no proof
        (replace(POST, origin="http://127.0.0.1:7947"), 401),
        (replace(POST, marked=True, logged_in=True), 401),  # a cookie alone never acts
        (replace(ACTING, marked=True), None),
        (replace(ACTING, origin="http://127.0.0.1:7947"), None),
        (replace(ACTING, sec_fetch_site="same-origin"), None),
        (ACTING, 403),  # a key, but no proof of same origin
        (replace(ACTING, marked=True, origin="http://evil.example"), 403),
        (replace(ACTING, marked=True, sec_fetch_site="cross-site"), 403),
        (replace(ACTING, marked=True, sec_fetch_site="same-site"), 403),
        (replace(POST, path="/api/login", marked=True), None),
        (replace(POST, path="/api/logout", marked=True), None),
        (replace(POST, path="/api/login", origin="http://evil.example"), 403),
        (replace(POST, path="/api/login-link", marked=True), 401),  # the CLI's alone
        (replace(POST, path="/api/login-link", bearer=True), None),
        (replace(POST, path="/api/login-link", acting=True, marked=True), 401),
        (REMOTE, 401),
        (replace(REMOTE, public=True), None),
        (replace(REMOTE, logged_in=True), None),
        (replace(REMOTE, acting=True), None),
        (replace(REMOTE, path="/"), None),
        (replace(REMOTE, path="/static/app.js"), None),
        (replace(REMOTE, method="POST", marked=True, public=True), 401),
        (replace(REMOTE, method="POST", marked=True, logged_in=True), 401),
        (replace(REMOTE, method="POST", marked=True, acting=True), None),
        (replace(REMOTE, method="POST", path="/api/login", marked=True), None),
        (replace(REMOTE, method="POST", path="/api/login", origin="http://evil.example"), 403),
        (replace(REMOTE, bearer=True, method="POST"), None),
        # Forwarding headers never grant loopback trust: a proxied request is remote.
        (PROXIED, 401),
        (replace(PROXIED, public=True), None),
        (replace(PROXIED, logged_in=True), None),
        (replace(PROXIED, path="/"), None),
        (replace(PROXIED, method="POST", path="/api/jobs", marked=True), 401),
        (replace(PROXIED, method="POST", path="/api/jobs", marked=True, acting=True), None),
        (
            replace(
                PROXIED,
                method="POST",
                path="/api/login",
                origin="https://farm.example",
                forwarded_host="farm.example",
            ),
            None,
        ),
        (replace(PROXIED, host="farm.example"), 403),  # Host passed through on a loopback bind
    ],
)
def test_access_rules(facts: RequestFacts, status: int | None) -> None:
    denied = access_decision(facts)
    assert (denied.status if denied else None) == status


async def test_loopback_browser_needs_a_session_to_act(
    make_client: ClientFactory, autojump_clock: trio.testing.MockClock
) -> None:
    sessions = Sessions()
    with trio.fail_after(10):
        async with make_client(bearer=None, sessions=sessions) as browser:
            assert (await browser.get("/api/status")).status_code == 200  # viewing stays open
            refused = await browser.post("/api/jobs/x/cancel")
            assert refused.status_code == 403 and "X-Peerfarm" in refused.json()["error"]
            marked = await browser.post("/api/jobs/x/cancel", headers={"X-Peerfarm": "1"})
            assert marked.status_code == 401 and "peerfarm dashboard" in marked.json()["error"]
            headers = await log_in(browser, sessions)
            acting = await browser.post("/api/jobs/x/cancel", headers=headers)
            assert acting.status_code == 404  # let through; the job does not exist
            evil = await browser.post(
                "/api/jobs/x/cancel", headers={**headers, "Origin": "http://evil.example"}
            )
            assert evil.status_code == 403
            rebound = await browser.get("/api/status", headers={"Host": "evil.example:7947"})
            assert rebound.status_code == 403
            link = await browser.post("/api/login-link", headers=headers)
            assert link.status_code == 401  # only the CLI's token may mint login links
        async with make_client(bearer="wrong") as wrong:
            response = await wrong.get("/api/status")
            assert response.status_code == 401 and response.json()["error"] == "wrong control token"


async def test_a_one_time_link_works_once(
    make_client: ClientFactory, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(10):
        async with make_client() as cli:  # bearer: the CLI asks for a link
            minted = await cli.post("/api/login-link")
            assert minted.status_code == 201
            code = minted.json()["code"]
            assert minted.json()["path"] == f"/?login={code}"
            assert minted.json()["expires_in"] == 900
        sessions = Sessions()
        code = sessions.new_link()
        async with make_client(bearer=None, sessions=sessions) as browser:
            mark = {"X-Peerfarm": "1"}
            first = await browser.post("/api/login", json={"code": code}, headers=mark)
            assert first.status_code == 200 and first.json()["logged_in"] is True
            key = first.json()["key"]
            cookie = first.headers["set-cookie"].lower()
            assert "httponly" in cookie and "samesite=strict" in cookie
            assert key not in first.headers["set-cookie"]  # the action key is not the cookie
            again = await browser.post("/api/login", json={"code": code}, headers=mark)
            assert again.status_code == 401 and "already used" in again.json()["error"]
            session = await browser.get("/api/session", headers={"X-Peerfarm-Key": key})
            assert session.json() == {
                "loopback": True, "logged_in": True, "login": True, "actions": True
            }  # fmt: skip
            page = await browser.get(f"/?login={code}")
            assert page.headers["referrer-policy"] == "no-referrer"


def test_a_link_code_expires() -> None:
    now = [100.0]
    sessions = Sessions(clock=lambda: now[0])
    code = sessions.new_link()
    now[0] += sessions.link_max_age + 1
    assert not sessions.redeem(code)
    fresh = sessions.new_link()
    assert sessions.redeem(fresh) and not sessions.redeem(fresh)
    cookie, key = sessions.issue()
    assert sessions.valid(cookie) and sessions.acting(key)
    assert not sessions.acting(cookie) and not sessions.valid(key)  # two different secrets
    now[0] += sessions.max_age + 1
    assert not sessions.valid(cookie) and not sessions.acting(key)


async def test_logout_revokes_the_session_on_the_server(
    make_client: ClientFactory, autojump_clock: trio.testing.MockClock
) -> None:
    sessions = Sessions()
    with trio.fail_after(10):
        async with make_client("10.1.2.3", bearer=None, sessions=sessions) as browser:
            headers = await log_in(browser, sessions)
            stolen_cookie = browser.cookies.get(SESSION_COOKIE)
            assert (await browser.get("/api/status")).status_code == 200
            assert (await browser.post("/api/jobs/x/pause", headers=headers)).status_code == 404
            out = await browser.post("/api/logout", headers=headers)
            assert out.status_code == 200
            # A copy of the cookie or of the key taken before the logout is dead too.
            browser.cookies.set(SESSION_COOKIE, stolen_cookie)
            assert (await browser.get("/api/status")).status_code == 401
            assert (await browser.post("/api/jobs/x/pause", headers=headers)).status_code == 401


async def test_login_beyond_loopback(
    make_client: ClientFactory, scene: Path, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(10):
        async with make_client("10.1.2.3", bearer=None) as browser:
            assert (await browser.get("/api/status")).status_code == 401
            assert (await browser.get("/")).status_code == 200
            session = (await browser.get("/api/session")).json()
            assert session == {
                "loopback": False, "logged_in": False, "login": True, "actions": False
            }  # fmt: skip
            mark = {"X-Peerfarm": "1"}
            wrong = await browser.post("/api/login", json={"password": "nope"}, headers=mark)
            assert wrong.status_code == 401
            submit = {"scene": str(scene), "frames": "1"}
            assert (await browser.post("/api/jobs", json=submit, headers=mark)).status_code == 401
            ok = await browser.post("/api/login", json={"password": PASSWORD}, headers=mark)
            assert ok.status_code == 200
            cookie = ok.headers["set-cookie"].lower()
            assert "httponly" in cookie and "samesite=strict" in cookie
            assert (await browser.get("/api/status")).status_code == 200
            # The cookie lets the browser view; acting takes the key the login returned.
            assert (await browser.post("/api/jobs", json=submit, headers=mark)).status_code == 401
            acting = {**mark, "X-Peerfarm-Key": ok.json()["key"]}
            assert (await browser.post("/api/jobs", json=submit, headers=acting)).status_code == 201
            browser.cookies.set(SESSION_COOKIE, "forged.cookie.value")
            assert (await browser.get("/api/status")).status_code == 401
            await browser.post("/api/logout", headers=mark)


async def test_logins_are_rate_limited_per_source(
    make_client: ClientFactory, autojump_clock: trio.testing.MockClock
) -> None:
    now = [0.0]
    limiter = LoginLimiter(burst=3, interval=10.0, clock=lambda: now[0])
    with trio.fail_after(10):
        async with make_client("10.1.2.3", bearer=None, limiter=limiter) as browser:
            mark = {"X-Peerfarm": "1"}
            for _ in range(3):
                wrong = await browser.post("/api/login", json={"password": "x"}, headers=mark)
                assert wrong.status_code == 401
            limited = await browser.post("/api/login", json={"password": PASSWORD}, headers=mark)
            assert limited.status_code == 429 and limited.headers["retry-after"] == "10"
            assert "too many login attempts" in limited.json()["error"]
            now[0] += 10.0  # one attempt back
            ok = await browser.post("/api/login", json={"password": PASSWORD}, headers=mark)
            assert ok.status_code == 200
            again = await browser.post("/api/login", json={"password": PASSWORD}, headers=mark)
            assert again.status_code == 200  # a login that works costs nothing
    assert limiter.wait("10.9.9.9") == 0.0  # another source has its own bucket


async def test_public_view_and_disabled_login(
    make_client: ClientFactory, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(10):
        async with make_client(
            "10.1.2.3", bearer=None, public=True, login_password=None
        ) as browser:
            assert (await browser.get("/api/status")).status_code == 200
            action = await browser.post("/api/jobs/x/pause", headers={"X-Peerfarm": "1"})
            assert action.status_code == 401
            login = await browser.post(
                "/api/login", json={"password": "x"}, headers={"X-Peerfarm": "1"}
            )
            assert login.status_code == 403
        async with make_client("10.1.2.3") as cli:
            assert (await cli.post("/api/jobs/x/pause")).status_code == 404  # bearer passes


@pytest.mark.parametrize(
    "header",
    [
        ("X-Forwarded-For", "203.0.113.9"),
        ("Forwarded", "for=203.0.113.9;host=farm.example"),
        ("X-Forwarded-Host", "farm.example"),
        ("X-Real-IP", "203.0.113.9"),
    ],
)
async def test_forwarded_headers_never_grant_loopback_trust(
    make_client: ClientFactory, header: tuple[str, str], autojump_clock: trio.testing.MockClock
) -> None:
    """A reverse proxy on the same host reaches the daemon over loopback: its requests carry
    a forwarding header, and are then treated as remote (login needed to view and to act)."""
    with trio.fail_after(10):
        async with make_client(bearer=None) as browser:
            headers = dict([header])
            assert (await browser.get("/api/status", headers=headers)).status_code == 401
            assert (await browser.get("/api/events", headers=headers)).status_code == 401
            action = await browser.post("/api/jobs/x/pause", headers={**headers, "X-Peerfarm": "1"})
            assert action.status_code == 401
            session = (await browser.get("/api/session", headers=headers)).json()
            assert session["loopback"] is False
            assert (await browser.get("/", headers=headers)).status_code == 200
