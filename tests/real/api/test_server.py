"""serve_http over real loopback sockets: port 0, a live event stream, a prompt shutdown."""

from __future__ import annotations

import functools
import socket
from pathlib import Path

import httpx
import pytest
import trio

from peerfarm.api import BindError, serve_http
from tests.api.conftest import TOKEN, build_app
from tests.api.fakes import FakeFarm


async def test_serves_on_port_zero_and_stops_with_open_streams(
    fake: FakeFarm, tmp_path: Path
) -> None:
    shutdown = trio.Event()
    app = build_app(fake, tmp_path, shutdown)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            serve = functools.partial(serve_http, shutdown=shutdown)
            urls = await nursery.start(serve, app, ["127.0.0.1:0"])
            assert len(urls) == 1 and urls[0].startswith("http://127.0.0.1:")
            assert not urls[0].endswith(":0")
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with httpx.AsyncClient(base_url=urls[0], headers=headers) as client:
                assert (await client.get("/api/peers")).json()["peers"][0]["name"] == "fake"
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


async def test_bind_conflict_is_one_clear_error(fake: FakeFarm, tmp_path: Path) -> None:
    shutdown = trio.Event()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with trio.fail_after(10), pytest.raises(BindError, match="in use"):
            await serve_http(
                build_app(fake, tmp_path, shutdown), [f"127.0.0.1:{port}"], shutdown=shutdown
            )
