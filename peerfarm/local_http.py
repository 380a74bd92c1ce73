"""The CLI's HTTP transport: httpx requests carried by the standard library's ``http.client``.

A ``peerfarm`` command talks plain HTTP to its own daemon on loopback. httpx's default
transport (httpcore) imports trio and anyio and loads the system's CA bundle when a client is
made: about 0.2 s of a command's 0.35 s start on a 2-core machine, paid by every ``status``
and ``submit``. :class:`StdlibTransport` gives the same ``httpx.Client`` API over
``http.client`` (keep-alive, the client's connect and read timeouts, httpx's own errors), for
``http://`` only; :class:`peerfarm.client.FarmClient` uses it unless given another transport.
"""

from __future__ import annotations

import http.client
import socket

import httpx

__all__ = ["StdlibTransport"]

#: Errors of a kept-alive connection that the server closed meanwhile (sent again once).
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class StdlibTransport(httpx.BaseTransport):
    """One kept-alive ``http.client`` connection per host and port (a client is used by one
    thread at a time, as the CLI does). Response bodies are read whole."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], http.client.HTTPConnection] = {}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "http":
            raise httpx.UnsupportedProtocol(f"{url.scheme}:// needs httpx's own transport")
        timeouts = request.extensions.get("timeout", {})
        key = (url.host, url.port or 80)
        body = request.read()
        target = url.raw_path.decode("ascii")
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
        for attempt in (1, 2):
            conn = self._idle.pop(key, None)
            reused = conn is not None
            if conn is None:
                conn = self._connect(request, key, timeouts.get("connect"))
            try:
                assert conn.sock is not None
                conn.sock.settimeout(timeouts.get("read"))
                conn.putrequest(request.method, target, skip_host=True, skip_accept_encoding=True)
                for name, value in headers:
                    conn.putheader(name, value)
                conn.endheaders(body or None)
                response = conn.getresponse()
                content = response.read()
            except TimeoutError as exc:
                conn.close()
                raise httpx.ReadTimeout(f"no answer: {exc}", request=request) from exc
            except _STALE as exc:
                conn.close()
                if reused and attempt == 1:
                    continue  # the server closed an idle connection: send on a new one
                raise httpx.RemoteProtocolError(str(exc), request=request) from exc
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise httpx.RemoteProtocolError(str(exc), request=request) from exc
            if response.will_close:
                conn.close()
            else:
                self._idle[key] = conn
            return httpx.Response(
                response.status,
                headers=[
                    (k, v) for k, v in response.getheaders() if k.lower() != "transfer-encoding"
                ],
                content=content,
                request=request,
                extensions={"http_version": b"HTTP/1.1"},
            )
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _connect(
        request: httpx.Request, key: tuple[str, int], timeout: float | None
    ) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection(key[0], key[1], timeout=timeout)
        try:
            conn.connect()
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(str(exc), request=request) from exc
        except OSError as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        assert conn.sock is not None
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def close(self) -> None:
        for conn in self._idle.values():
            conn.close()
        self._idle.clear()
