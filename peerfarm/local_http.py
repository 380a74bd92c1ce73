"""The CLI's HTTP client: requests to its own daemon over the standard library's http.client.

A ``peerfarm`` command talks HTTP to its own daemon on loopback, a request or a few per
command. httpx costs more than such a command does: importing it is about 75 ms of a command's
0.2 s start on a 2-core machine, and its default transport (httpcore) imports trio and anyio
and loads the system's CA bundle, 0.2 s more. :class:`Connections` keeps one connection per
host and port alive, applies a connect and a read timeout, sends a request again once on a new
connection when the server closed the kept one meanwhile, and raises its own three errors.
:class:`peerfarm.client.FarmClient` uses it; the tests' httpx clients use it through
``peerfarm.testing.http``.
"""

from __future__ import annotations

import http.client
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["Answer", "Connections", "HttpFailure", "NoAnswer", "Refused", "Unsupported"]

#: Errors of a kept-alive connection that the server closed meanwhile (sent again once).
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class HttpFailure(Exception):
    """The request got no usable answer: the connection broke or the answer was not HTTP."""


class Refused(HttpFailure):
    """Nothing accepted the connection (``timed_out``: nothing answered the connect in time)."""

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


class NoAnswer(HttpFailure):
    """Connected, but no answer came within the read timeout."""


class Unsupported(HttpFailure):
    """A URL that is not ``http://`` or ``https://``."""


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer, read whole. ``headers`` as sent (names in their own case)."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((v for k, v in self.headers if k.lower() == wanted), None)


class Connections:
    """Kept-alive ``http.client`` connections, one per scheme, host and port; used by one
    thread at a time (as the CLI does)."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, str, int], http.client.HTTPConnection] = {}

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
        """Send one request to the absolute ``url``; the answer, or an :class:`HttpFailure`."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise Unsupported(f"cannot send a request to {url!r}: not an http:// URL")
        key = (parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers or ())
        if not any(name.lower() == "host" for name, _ in pairs):
            pairs.insert(0, ("Host", parts.netloc))
        for attempt in (1, 2):
            conn = self._idle.pop(key, None)
            reused = conn is not None
            if conn is None:
                conn = self._connect(key, connect_timeout)
            try:
                assert conn.sock is not None
                conn.sock.settimeout(read_timeout)
                conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
                for name, value in pairs:
                    conn.putheader(name, value)
                if body is not None and not any(n.lower() == "content-length" for n, _ in pairs):
                    conn.putheader("Content-Length", str(len(body)))
                conn.endheaders(body or None)
                response = conn.getresponse()
                content = response.read()
            except TimeoutError as exc:
                conn.close()
                raise NoAnswer(f"no answer from {parts.netloc}: {exc}") from exc
            except _STALE as exc:
                conn.close()
                if reused and attempt == 1:
                    continue  # the server closed an idle connection: send on a new one
                raise HttpFailure(f"{parts.netloc} closed the connection: {exc}") from exc
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise HttpFailure(f"{parts.netloc}: {exc}") from exc
            if response.will_close:
                conn.close()
            else:
                self._idle[key] = conn
            return Answer(response.status, response.getheaders(), content)
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _connect(key: tuple[str, str, int], timeout: float | None) -> http.client.HTTPConnection:
        scheme, host, port = key
        conn: http.client.HTTPConnection
        if scheme == "https":
            conn = http.client.HTTPSConnection(host, port, timeout=timeout)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.connect()
        except TimeoutError as exc:
            raise Refused(f"{host}:{port} did not answer: {exc}", timed_out=True) from exc
        except OSError as exc:
            raise Refused(f"{host}:{port}: {exc}") from exc
        assert conn.sock is not None
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def close(self) -> None:
        for conn in self._idle.values():
            conn.close()
        self._idle.clear()
