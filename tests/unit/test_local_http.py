"""The CLI's stdlib HTTP client against a real HTTP server on loopback: through the tests'
httpx transport, what httpx's own would answer (bodies, headers, gzip, keep-alive) and httpx's
errors for a refused connection, a silent server and one that closes a kept-alive connection;
through :class:`FarmClient`, one kept connection and the CLI's error messages, without httpx."""

from __future__ import annotations

import gzip
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from peerfarm.client import FarmClient
from peerfarm.errors import ControlError, UsageError
from peerfarm.testing.http import StdlibTransport


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    connections: list[int] = []  # one entry per TCP connection served (keep-alive check)

    def setup(self) -> None:
        super().setup()
        type(self).connections.append(1)

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.startswith("/slow"):
            time.sleep(1.0)
        if self.path.startswith("/gzip"):
            body = gzip.compress(b'{"packed": true}')
            self._send(200, body, {"Content-Encoding": "gzip", "Content-Type": "application/json"})
            return
        if self.path.startswith("/close"):
            self._send(200, b"bye", {"Connection": "close"})
            self.close_connection = True
            return
        echo = {"path": self.path, "auth": self.headers.get("Authorization")}
        self._send(200, json.dumps(echo).encode(), {"Content-Type": "application/json"})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._send(404 if self.path == "/missing" else 201, body, {"X-Seen": str(len(body))})


@pytest.fixture
def server() -> Iterator[str]:
    _Handler.connections = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_answers_match_what_httpx_gives_and_one_connection_is_kept(server: str) -> None:
    with httpx.Client(base_url=server, transport=StdlibTransport()) as client:
        got = client.get("/a path", params={"q": "x y"}, headers={"Authorization": "Bearer t"})
        assert got.status_code == 200
        assert got.json() == {"path": "/a%20path?q=x+y", "auth": "Bearer t"}
        posted = client.post("/jobs", json={"frames": "1-240"})
        assert posted.status_code == 201
        assert json.loads(posted.content) == {"frames": "1-240"}
        assert posted.headers["X-Seen"] == str(len(posted.content))
        assert client.get("/gzip").json() == {"packed": True}  # decoded as httpx would
        assert client.post("/missing", content=b"").status_code == 404
    assert len(_Handler.connections) == 1  # every request rode one kept-alive connection


def test_a_connection_the_server_closed_is_replaced(server: str) -> None:
    with httpx.Client(base_url=server, transport=StdlibTransport()) as client:
        assert client.get("/close").content == b"bye"
        assert client.get("/after").status_code == 200
    assert len(_Handler.connections) == 2


def test_a_kept_connection_dropped_while_idle_is_sent_again(server: str) -> None:
    transport = StdlibTransport()
    with httpx.Client(base_url=server, transport=transport) as client:
        assert client.get("/one").status_code == 200
        (idle,) = transport.connections._idle.values()
        assert idle.sock is not None
        idle.sock.shutdown(socket.SHUT_RDWR)  # as a daemon restart would leave it
        assert client.get("/two").json()["path"] == "/two"


def test_refused_and_silent_servers_raise_httpx_errors(server: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    with httpx.Client(transport=StdlibTransport()) as client:
        with pytest.raises(httpx.ConnectError):
            client.get(f"http://127.0.0.1:{closed_port}/")
        with pytest.raises(httpx.ReadTimeout):
            client.get(f"{server}/slow", timeout=0.2)
        with pytest.raises(httpx.UnsupportedProtocol):
            client.get("https://127.0.0.1:1/")


def test_the_farm_client_keeps_one_connection_and_its_error_messages(server: str) -> None:
    client = FarmClient(server, "token")
    try:
        assert client.json("GET", "/x", params={"job": "a b"}) == {
            "path": "/x?job=a+b",
            "auth": "Bearer token",
        }
        assert client.json("POST", "/jobs", json_body={"frames": "1-240"}) == {"frames": "1-240"}
        with pytest.raises(UsageError, match="frames"):  # a 404's body is its message
            client.json("POST", "/missing", json_body={"frames": "x"})
        with pytest.raises(ControlError, match="is not answering"):
            client.json("GET", "/slow", timeout=0.2)
        assert client.json("GET", "/after")["path"] == "/after"
    finally:
        client.close()
    assert len(_Handler.connections) == 2  # one kept-alive connection, a new one after /slow
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    gone = FarmClient(f"http://127.0.0.1:{closed_port}", "t")
    with gone, pytest.raises(ControlError, match="no peerfarm daemon answering"):
        gone.json("GET", "/api/status")
    with pytest.raises(ControlError, match="cannot talk"):
        FarmClient("ftp://127.0.0.1:1", "t").json("GET", "/")


def test_a_cli_command_does_not_import_httpx(tmp_path: Path) -> None:
    """httpx is 75 ms of a command's start: the CLI talks to its daemon without it."""
    code = (
        "import sys\n"
        "from peerfarm.cli import main\n"
        "try:\n"
        f"    main(['status', '--data-dir', {str(tmp_path)!r}])\n"
        "except SystemExit as exc:\n"
        "    print('exit', exc.code)\n"
        "print('httpx' in sys.modules, 'trio' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert "no peerfarm daemon" in done.stderr.lower() or "peerfarm up" in done.stderr
    assert done.stdout.split()[-2:] == ["False", "False"], done.stdout
