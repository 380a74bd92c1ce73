"""serve_http over real loopback sockets: port 0, a live event stream, a prompt shutdown.

The app serves the real facade of one simulated peer (in real time here: the server is real).
"""

from __future__ import annotations

import contextlib
import functools
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import h11
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


@contextlib.asynccontextmanager
async def served(tmp_path: Path) -> AsyncIterator[trio.SocketStream]:
    """A real server over one simulated peer, and a raw connection to it."""
    shutdown = trio.Event()
    async with one_peer(tmp_path / "sim") as farm, trio.open_nursery() as nursery:
        app = app_of(farm.facade, tmp_path, shutdown)
        (url,) = await nursery.start(
            functools.partial(serve_http, shutdown=shutdown), app, ["127.0.0.1:0"]
        )
        address = urlsplit(url)
        stream = await trio.open_tcp_stream(address.hostname or "", address.port or 0)
        try:
            yield stream
        finally:
            await stream.aclose()
            shutdown.set()


def _request(method: str, target: str, headers: dict[str, str]) -> h11.Request:
    return h11.Request(
        method=method, target=target, headers=[("Host", "127.0.0.1"), *headers.items()]
    )


async def _post_headers(
    stream: trio.SocketStream, target: str, content_type: str, length: int
) -> h11.Connection:
    """A new client on ``stream`` that has sent the headers of a dashboard POST (no login)."""
    client = h11.Connection(h11.CLIENT)
    headers = {"X-Peerfarm": "1", "Content-Type": content_type, "Content-Length": str(length)}
    await stream.send_all(client.send(_request("POST", target, headers)))
    return client


async def _answer(stream: trio.SocketStream, client: h11.Connection) -> tuple[h11.Response, bytes]:
    """The next whole answer on the connection; fails if the server closes it instead."""
    response, body = None, b""
    while True:
        event = client.next_event()
        if event is h11.NEED_DATA:
            client.receive_data(await stream.receive_some(65536))
        elif isinstance(event, h11.Response):
            response = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            assert response is not None
            return response, body
        else:
            raise AssertionError(f"the server closed the connection instead of answering: {event}")


async def test_an_answer_before_the_body_keeps_the_connection_usable(tmp_path: Path) -> None:
    """The access check refuses a POST on its headers alone. Its body comes later, as from a slow
    client: the server reads it, answers, and serves the next request on the same connection
    (hypercorn alone closed it without a word, and httpx said "server disconnected")."""
    body = b'{"frames": "1"}'
    with trio.fail_after(30):
        async with served(tmp_path) as stream:
            client = await _post_headers(
                stream, "/api/jobs/nope/retry", "application/json", len(body)
            )
            await trio.sleep(0.3)  # the refusal is decided (and was sent) meanwhile
            await stream.send_all(
                client.send(h11.Data(data=body)) + client.send(h11.EndOfMessage())
            )
            refused, _ = await _answer(stream, client)
            assert refused.status_code == 401
            assert (b"connection", b"close") not in refused.headers
            client.start_next_cycle()
            bearer = {"Authorization": f"Bearer {TOKEN}"}
            await stream.send_all(client.send(_request("GET", "/api/peers", bearer)))
            await stream.send_all(client.send(h11.EndOfMessage()))
            listed, peers = await _answer(stream, client)
            assert listed.status_code == 200 and b'"peers"' in peers


async def test_an_answer_before_a_large_body_says_the_connection_closes(tmp_path: Path) -> None:
    """A refused upload of 10 MB is not read: the answer says ``Connection: close``."""
    with trio.fail_after(30):
        async with served(tmp_path) as stream:
            client = await _post_headers(stream, "/api/upload", "application/octet-stream", 10**7)
            await stream.send_all(client.send(h11.Data(data=b"x" * 4096)))
            refused, _ = await _answer(stream, client)
            assert refused.status_code == 401
            assert (b"connection", b"close") in refused.headers


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
