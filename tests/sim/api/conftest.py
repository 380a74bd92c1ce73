"""Fixtures of the API tests: the real app over the real facade of one simulated peer.

``peer`` is a :class:`~peerfarm.testing.SimFarm` peer under virtual time with its control
facade, :class:`peerfarm.farm.Farm` (what ``peerfarm up`` serves); its renderer takes command
jobs (``.sh`` scenes: ``peer.script()``), ``RENDER_S`` virtual seconds per frame, writes a small
PNG per frame, and fails the frames in ``peer.failing``. A ``.pov`` job is accepted but no peer
can render it: its frames stay pending. ``make_client(host)`` reaches the app in-process
through httpx's ASGI transport and chooses the server address the app sees: 127.0.0.1 is a
loopback bind, anything else a bind beyond loopback (login rules apply).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing
from PIL import Image
from starlette.applications import Starlette

from peerfarm.api import create_app
from peerfarm.api.access import Sessions
from peerfarm.farm import Farm
from peerfarm.ledger.model import JobState
from peerfarm.renderers.base import Progress, RenderResult, RenderTask
from peerfarm.testing import FakeRenderer, SimFarm, SimPeer

TOKEN = "test-token-0123456789"
PASSWORD = "farm-password-abc"
#: Virtual seconds the fake renderer takes per frame.
RENDER_S = 1.0


class PngRenderer(FakeRenderer):
    """The fake renderer, writing a small PNG per frame (so thumbnails have an image)."""

    async def render(
        self, task: RenderTask, *, on_progress: Callable[[Progress], None]
    ) -> RenderResult:
        result = await super().render(task, on_progress=on_progress)
        outputs = {}
        for frame, (text,) in result.outputs.items():
            png = text.with_suffix(".png")
            Image.new("RGB", (8, 6), (frame % 256, 40, 90)).save(png)
            text.unlink()
            outputs[frame] = [png]
        return dataclasses.replace(result, outputs=outputs)


@dataclass
class Peer:
    """One simulated peer and the facade the API serves."""

    sim: SimFarm
    node: SimPeer
    farm: Farm
    root: Path
    failing: set[int] = field(default_factory=set)

    def script(self, name: str = "render") -> Path:
        """A command scene (the fake renderer does not run it)."""
        path = self.root / f"{name}.sh"
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
        return path

    async def settle(self, job: str, timeout: float = 120.0) -> None:
        """Until every frame of ``job`` is done or failed (virtual time)."""
        ledger = self.node.node.ledger

        def ended() -> bool:
            counts = ledger.counts(job)
            return counts.done + counts.failed == counts.total

        await self.sim.wait_until(ended, timeout=timeout, what=f"job {job[:8]} ended")

    def state(self, job: str) -> JobState:
        return self.node.node.ledger.job_state(job)


@pytest.fixture
async def peer(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Peer]:
    monkeypatch.chdir(tmp_path)  # a submit without cwd delivers under ./peerfarm-out
    failing: set[int] = set()
    sim = SimFarm(tmp_path / "sim", seed=3, invariants="converged")
    async with sim.running():
        (node,) = await sim.start(1)
        renderer = PngRenderer(
            node.node_id,
            sim.log,
            seconds=RENDER_S,
            fail=lambda _node, frame: frame in failing,
        )
        node.node.parts.renderers["command"] = renderer
        yield Peer(sim, node, Farm(node.node, farm_id="0123456789abcdef"), tmp_path, failing)


@pytest.fixture
def shutdown() -> trio.Event:
    return trio.Event()


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    """A POV-Ray scene: accepted, but no simulated peer renders it."""
    path = tmp_path / "spin.pov"
    path.write_text("camera { location <0, 0, -5> }\n")
    return path


def build_app(
    peer: Peer, tmp_path: Path, shutdown: trio.Event, *, public: bool = False, **kw: object
) -> Starlette:
    return create_app(
        peer.farm,
        token=TOKEN,
        login_password=kw.pop("login_password", PASSWORD),  # type: ignore[arg-type]
        public=public,
        upload_dir=tmp_path / "uploads",
        shutdown=shutdown,
        **kw,  # type: ignore[arg-type]
    )


ClientFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


async def log_in(browser: httpx.AsyncClient, sessions: Sessions) -> dict[str, str]:
    """Log ``browser`` in the way the dashboard does with a one-time link; returns the headers
    its actions carry (the marker and the session's action key)."""
    mark = {"X-Peerfarm": "1"}
    response = await browser.post("/api/login", json={"code": sessions.new_link()}, headers=mark)
    assert response.status_code == 200, response.text
    return {**mark, "X-Peerfarm-Key": response.json()["key"]}


@pytest.fixture
def make_client(peer: Peer, tmp_path: Path, shutdown: trio.Event) -> ClientFactory:
    @asynccontextmanager
    async def make(
        host: str = "127.0.0.1", *, public: bool = False, bearer: str | None = TOKEN, **kw: object
    ) -> AsyncIterator[httpx.AsyncClient]:
        app = build_app(peer, tmp_path, shutdown, public=public, **kw)
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url=f"http://{host}:7947", headers=headers
        ) as client:
            yield client

    return make
