"""serve_http over real loopback sockets: port 0, a live event stream, a prompt shutdown.

The app serves the real facade of one simulated peer (in real time here: the server is real).
"""

from __future__ import annotations

import functools
import socket
from pathlib import Path

import httpx
import pytest
import trio
from starlette.applications import Starlette

from peerfarm.api import BindError, create_app, serve_http
from peerfarm.control import SubmitRequest
from peerfarm.farm import Farm
from tests.support.sim import one_peer

TOKEN = "test-token-0123456789"


def app_of(facade: Farm, tmp_path: Path, shutdown: trio.Event) -> Starlette:
    return create_app(
        facade,
        token=TOKEN,
        login_password=None,
        public=False,
        upload_dir=tmp_path / "uploads",
        shutdown=shutdown,
    )


async def test_serves_on_port_zero_and_stops_with_open_streams(tmp_path: Path) -> None:
    shutdown = trio.Event()
    scene = tmp_path / "spin.pov"
    scene.write_text("camera {}\n")
    with trio.fail_after(30):
        async with one_peer(tmp_path / "sim") as farm, trio.open_nursery() as nursery:
            await farm.facade.submit(SubmitRequest(scene=scene, frames="1", cwd=tmp_path))
            serve = functools.partial(serve_http, shutdown=shutdown)
            app = app_of(farm.facade, tmp_path, shutdown)
            urls = await nursery.start(serve, app, ["127.0.0.1:0"])
            assert len(urls) == 1 and urls[0].startswith("http://127.0.0.1:")
            assert not urls[0].endswith(":0")
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with httpx.AsyncClient(base_url=urls[0], headers=headers) as client:
                (peer,) = (await client.get("/api/peers")).json()["peers"]
                assert peer["name"] == farm.peer.name
                async with client.stream("GET", "/api/events") as stream:
                    lines = stream.aiter_lines()
                    assert await anext(lines) == "retry: 2000"
                    assert await anext(lines) == ""
                    assert await anext(lines) == "event: change"
                    with trio.move_on_after(0.5):  # a real server shutting down mid-stream
                        started = trio.current_time()
                        shutdown.set()
                        async for _ in lines:
                            pass
            assert trio.current_time() - started < 2.0  # well under hypercorn's graceful timeout


async def test_bind_conflict_is_one_clear_error(tmp_path: Path) -> None:
    shutdown = trio.Event()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with one_peer(tmp_path / "sim") as farm:
            app = app_of(farm.facade, tmp_path, shutdown)
            with trio.fail_after(10), pytest.raises(BindError, match="in use"):
                await serve_http(app, [f"127.0.0.1:{port}"], shutdown=shutdown)
