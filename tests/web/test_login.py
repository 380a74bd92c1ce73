"""The dashboard's login box, in a real browser, against the real app and facade of a simulated
peer.

A dashboard bound beyond loopback asks for the farm's password before any action (and before
viewing unless ``--web-public``). Tests only talk to 127.0.0.1, so the app here is told it was
reached on a documentation address (192.0.2.10) instead: the access rules see a non-loopback
bind while the browser still connects over loopback.
"""

from __future__ import annotations

import functools
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
from starlette.types import ASGIApp, Receive, Scope, Send

from peerfarm.api import create_app
from peerfarm.api.server import serve_http
from peerfarm.control import SubmitRequest
from tests.support.sim import OnePeer, one_peer

PASSWORD = "farm-password-for-tests"


class BeyondLoopback:
    """Makes the app believe the connection arrived on a non-loopback address of this host."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and scope.get("server"):
            scope = {**scope, "server": ("192.0.2.10", scope["server"][1])}
        await self.app(scope, receive, send)


@dataclass
class Served:
    url: str
    job: str
    token: trio.lowlevel.TrioToken
    farm: OnePeer

    def state(self, job: str) -> str:
        """The job's state as the peer's ledger has it (read in the server's thread)."""
        ledger = self.farm.peer.node.ledger
        return trio.from_thread.run_sync(lambda: ledger.job_state(job).value, trio_token=self.token)


def _serve(tmp: Path, public: bool) -> Iterator[Served]:
    """One simulated peer (real time) behind the real app on 127.0.0.1, in a thread: a job of 6
    frames, 1 and 2 done, 3 rendering for an hour."""
    scene = tmp / "shot.sh"
    scene.write_text("#!/bin/sh\n")
    scene.chmod(0o755)
    ready = threading.Event()
    found: list[Served] = []
    shutdown: list[trio.Event] = []

    async def main() -> None:
        stop = trio.Event()
        shutdown.append(stop)
        seconds = lambda frame: 0.05 if frame <= 2 else 3600.0  # noqa: E731
        async with one_peer(tmp / "sim", renderer_seconds=seconds) as farm:
            request = SubmitRequest(scene=scene, frames="1-6", name="shot", cwd=tmp)
            job = (await farm.facade.submit(request))["job"]
            done = lambda: farm.peer.node.ledger.counts(job).done == 2  # noqa: E731
            await farm.sim.wait_until(done, timeout=10, what="frames 1 and 2 done")
            app = create_app(
                farm.facade,
                token=secrets.token_urlsafe(16),
                login_password=PASSWORD,
                public=public,
                upload_dir=tmp / "uploads",
                shutdown=stop,
            )
            async with trio.open_nursery() as nursery:
                urls = await nursery.start(
                    functools.partial(
                        serve_http, BeyondLoopback(app), ["127.0.0.1:0"], shutdown=stop
                    )
                )
                token = trio.lowlevel.current_trio_token()
                found.append(Served(urls[0], job, token, farm))
                ready.set()

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
    thread.start()
    assert ready.wait(30), "the test server did not start"
    served = found[0]
    try:
        yield served
    finally:
        trio.from_thread.run_sync(shutdown[0].set, trio_token=served.token)
        thread.join(10)
        assert not thread.is_alive(), "the test server did not stop"


@pytest.fixture
def public_dashboard(tmp_path: Path) -> Iterator[Served]:
    yield from _serve(tmp_path, public=True)


@pytest.fixture
def private_dashboard(tmp_path: Path) -> Iterator[Served]:
    yield from _serve(tmp_path, public=False)


def test_an_action_answered_401_opens_the_login_box_and_runs_after_login(
    public_dashboard: Served, page: Any
) -> None:
    served = public_dashboard
    page.goto(served.url + "/")
    row = page.locator(f'#jobs tbody tr[data-job="{served.job}"]')
    row.wait_for()  # public: viewing needs no login
    assert row.get_attribute("data-done") == "2"
    assert not page.locator("#login-dialog").is_visible()

    row.locator('button[data-action="pause"]').click()
    page.wait_for_selector("#login-dialog", state="visible")
    assert served.state(served.job) == "active", "the action ran without a login"

    page.fill("#login-password", "not-the-password")
    page.click("#login-submit")
    page.wait_for_selector("#login-error:not(.hidden)")
    assert page.locator("#login-error").inner_text() == "Wrong password."
    assert served.state(served.job) == "active"

    page.fill("#login-password", PASSWORD)
    page.click("#login-submit")
    page.wait_for_selector("#login-dialog", state="hidden")
    page.wait_for_selector(f'#jobs tbody tr[data-job="{served.job}"][data-state="paused"]')
    assert served.state(served.job) == "paused"  # the action ran once logged in


def test_a_private_dashboard_shows_nothing_until_logged_in(
    private_dashboard: Served, page: Any
) -> None:
    served = private_dashboard
    page.goto(served.url + "/")
    page.wait_for_selector("#login-dialog", state="visible")
    assert page.locator("#jobs tbody tr").count() == 0
    assert "log in" in page.locator("#banner").inner_text()

    page.fill("#login-password", PASSWORD)
    page.click("#login-submit")
    page.wait_for_selector("#login-dialog", state="hidden")
    page.wait_for_selector(f'#jobs tbody tr[data-job="{served.job}"]')
    page.wait_for_selector("#banner", state="hidden")
