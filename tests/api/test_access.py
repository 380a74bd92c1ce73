"""Who may call the API: bearer token, loopback CSRF rules, logins beyond loopback."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import trio

from peerfarm.api.access import SESSION_COOKIE, RequestFacts, access_decision
from tests.api.conftest import PASSWORD, ClientFactory

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
REMOTE = replace(BROWSER, loopback=False, host="farm.example:7947")


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
        (replace(POST, marked=True), None),
        (replace(POST, origin="http://127.0.0.1:7947"), None),
        (replace(POST, sec_fetch_site="same-origin"), None),
        (replace(POST, marked=True, origin="http://evil.example"), 403),
        (replace(POST, marked=True, sec_fetch_site="cross-site"), 403),
        (replace(POST, marked=True, sec_fetch_site="same-site"), 403),
        (REMOTE, 401),
        (replace(REMOTE, public=True), None),
        (replace(REMOTE, logged_in=True), None),
        (replace(REMOTE, path="/"), None),
        (replace(REMOTE, path="/static/app.js"), None),
        (replace(REMOTE, method="POST", marked=True, public=True), 401),
        (replace(REMOTE, method="POST", marked=True, logged_in=True), None),
        (replace(REMOTE, method="POST", path="/api/login", marked=True), None),
        (replace(REMOTE, method="POST", path="/api/login", origin="http://evil.example"), 403),
        (replace(REMOTE, bearer=True, method="POST"), None),
    ],
)
def test_access_rules(facts: RequestFacts, status: int | None) -> None:
    denied = access_decision(facts)
    assert (denied.status if denied else None) == status


async def test_loopback_browser_rules_over_http(make_client: ClientFactory) -> None:
    with trio.fail_after(10):
        async with make_client(bearer=None) as browser:
            assert (await browser.get("/api/status")).status_code == 200
            refused = await browser.post("/api/jobs/x/cancel")
            assert refused.status_code == 403 and "X-Peerfarm" in refused.json()["error"]
            marked = await browser.post("/api/jobs/x/cancel", headers={"X-Peerfarm": "1"})
            assert marked.status_code == 404  # let through; the job does not exist
            evil = await browser.post(
                "/api/jobs/x/cancel", headers={"X-Peerfarm": "1", "Origin": "http://evil.example"}
            )
            assert evil.status_code == 403
            rebound = await browser.get("/api/status", headers={"Host": "evil.example:7947"})
            assert rebound.status_code == 403
        async with make_client(bearer="wrong") as wrong:
            response = await wrong.get("/api/status")
            assert response.status_code == 401 and response.json()["error"] == "wrong control token"


async def test_login_beyond_loopback(make_client: ClientFactory, scene: Path) -> None:
    with trio.fail_after(10):
        async with make_client("10.1.2.3", bearer=None) as browser:
            assert (await browser.get("/api/status")).status_code == 401
            assert (await browser.get("/")).status_code == 200
            session = (await browser.get("/api/session")).json()
            assert session == {"loopback": False, "logged_in": False, "login": True}
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
            assert (await browser.post("/api/jobs", json=submit, headers=mark)).status_code == 201
            browser.cookies.set(SESSION_COOKIE, "forged.cookie.value")
            assert (await browser.get("/api/status")).status_code == 401
            await browser.post("/api/logout", headers=mark)


async def test_public_view_and_disabled_login(make_client: ClientFactory) -> None:
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
