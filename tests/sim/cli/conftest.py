"""Fixtures of the CLI tests: the real CLI against the real app and facade of a simulated peer.

``farm`` is one :class:`~peerfarm.testing.SimFarm` peer under virtual time, its control facade
(:class:`peerfarm.farm.Farm`) behind the real app, and a data dir whose ``control.json`` names
it, as a daemon writes it. ``await farm.run(*args)`` runs ``peerfarm ARGS`` (click's runner) in a
worker thread; its HTTP requests reach the app in the test's trio loop, in-process (the client's
transport hands each request to httpx's ASGI transport there; no socket).

Virtual time stands still while the CLI thread works (``sim_clock`` never jumps while a token of
trio's default thread limiter is out, and the harness holds one), so every command sees the
farm as it was when the command started. Time flows while the app answers one of its requests
(a submit waits for its write to be saved) and while ``submit --wait`` sleeps between polls
(the poll sleep becomes a virtual one), so a waited-for job really renders.
"""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import trio
import trio.testing
from click.testing import Result

from peerfarm import follow
from peerfarm.api import create_app
from peerfarm.client import FarmClient, read_control_file, write_control_file
from peerfarm.farm import Farm
from peerfarm.local_http import Answer
from peerfarm.testing import SimFarm, SimPeer
from tests.support.cli import invoke, one_error_line

__all__ = ["CliFarm", "one_error_line"]

TOKEN = "cli-test-token"
URL = "http://127.0.0.1:7947"
#: Virtual seconds the fake renderer takes per frame.
RENDER_S = 1.0
T = TypeVar("T")


class _Bridge:
    """The CLI client's transport in the CLI's thread: each request is answered by the app in
    trio (through httpx's ASGI transport)."""

    def __init__(self, farm: CliFarm) -> None:
        self.farm = farm

    def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | list[tuple[str, str]] | None = None,
        body: bytes | None = None,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
    ) -> Answer:
        request = httpx.Request(method, url, headers=headers, content=body or b"")
        status, answer_headers, content = trio.from_thread.run(self.farm.answer, request)
        return Answer(status, list(answer_headers.items()), content)

    def close(self) -> None:
        pass


class CliFarm:
    """One simulated peer behind the real app, and the CLI pointed at it (``--data-dir``)."""

    def __init__(self, sim: SimFarm, peer: SimPeer, root: Path) -> None:
        self.sim = sim
        self.peer = peer
        self.facade = Farm(peer.node, farm_id="0123456789abcdef")
        self.root = root
        self.data_dir = root / "data"
        self.failing: set[int] = set()  # frames the fake renderer fails
        self.shutdown = trio.Event()
        self.app = create_app(
            self.facade,
            token=TOKEN,
            login_password="pw",
            public=False,
            upload_dir=root / "uploads",
            shutdown=self.shutdown,
        )
        self._asgi = httpx.ASGITransport(app=self.app)
        self._limiter = trio.to_thread.current_default_thread_limiter()
        self._frozen = object()
        write_control_file(self.data_dir, URL, TOKEN, pid=os.getpid())

    def client(self, data_dir: Path, timeout: float) -> FarmClient:
        """What ``FarmClient.connect`` gives the CLI: the real control file, the bridge."""
        info = read_control_file(data_dir)
        return FarmClient(
            info.url, info.token, data_dir=data_dir, timeout=timeout, transport=_Bridge(self)
        )

    async def run(self, *args: str | Path, env: dict[str, str] | None = None) -> Result:
        """``peerfarm ARGS`` in a worker thread, time standing still but for its requests."""
        return await self.in_thread(functools.partial(invoke, *args, env=env))

    async def in_thread(self, fn: Callable[[], T]) -> T:
        await self._limiter.acquire_on_behalf_of(self._frozen)
        try:
            return await trio.to_thread.run_sync(fn, limiter=trio.CapacityLimiter(1))
        finally:
            self._limiter.release_on_behalf_of(self._frozen)

    async def _thawed(self, fn: Callable[[], Awaitable[T]]) -> T:
        self._limiter.release_on_behalf_of(self._frozen)
        try:
            return await fn()
        finally:
            await self._limiter.acquire_on_behalf_of(self._frozen)

    async def answer(self, request: httpx.Request) -> tuple[int, httpx.Headers, bytes]:
        async def call() -> tuple[int, httpx.Headers, bytes]:
            response = await self._asgi.handle_async_request(request)
            return response.status_code, response.headers, await response.aread()

        return await self._thawed(call)

    def sleep(self, seconds: float) -> None:
        """The CLI's poll sleep, in the CLI's thread: virtual seconds, time flowing."""
        trio.from_thread.run(self._thawed, functools.partial(trio.sleep, seconds))

    def script(self, name: str = "render") -> Path:
        """A command scene (the fake renderer does not run it)."""
        path = self.root / f"{name}.sh"
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
        return path

    async def settle(self, job: str, timeout: float = 120.0) -> None:
        """Until every frame of ``job`` is done or failed, and delivered (virtual time)."""
        await self.sim.wait_until(
            lambda: self.sim.job_finished(job), timeout=timeout, what=f"job {job[:8]} finished"
        )

    def job_state(self, job: str) -> str:
        return self.peer.node.ledger.job_state(job).value


@pytest.fixture
async def farm(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[CliFarm]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PEERFARM_DATA_DIR", raising=False)
    monkeypatch.delenv("PEERFARM_KEY", raising=False)
    failing: set[int] = set()
    sim = SimFarm(
        tmp_path / "sim",
        seed=5,
        renderer_seconds=RENDER_S,
        fail=lambda _node, frame: frame in failing,
        invariants="converged",
    )
    async with sim.running():
        (peer,) = await sim.start(1)
        handle = CliFarm(sim, peer, tmp_path)
        handle.failing = failing

        def connect(cls: type[FarmClient], data_dir: Path, *, timeout: float = 30.0) -> Any:
            return handle.client(data_dir, timeout)

        monkeypatch.setattr(FarmClient, "connect", classmethod(connect))
        monkeypatch.setattr(follow, "sleep", handle.sleep)
        yield handle
