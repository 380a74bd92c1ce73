"""An httpx transport over :class:`peerfarm.local_http.Connections`, for the tests' clients.

The tests and the cluster harness ask daemons with ``httpx.Client`` (its API and its
``Response`` are what their assertions read); httpx's own transport costs about 40 ms of CPU
per client, which loaded the machines the scale series measures. :class:`StdlibTransport`
carries those requests over the same connections the CLI uses, and maps their failures onto
httpx's errors.
"""

from __future__ import annotations

import httpx

from peerfarm.local_http import Connections, HttpFailure, NoAnswer, Refused, Unsupported

__all__ = ["StdlibTransport"]


class StdlibTransport(httpx.BaseTransport):
    """httpx requests sent with :class:`~peerfarm.local_http.Connections` (``http://`` only)."""

    def __init__(self) -> None:
        self.connections = Connections()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme != "http":
            raise httpx.UnsupportedProtocol(f"{request.url.scheme}:// needs httpx's own transport")
        timeouts = request.extensions.get("timeout", {})
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
        try:
            answer = self.connections.send(
                request.method,
                str(request.url),
                headers=headers,
                body=request.read(),
                connect_timeout=timeouts.get("connect"),
                read_timeout=timeouts.get("read"),
            )
        except Refused as exc:
            kind = httpx.ConnectTimeout if exc.timed_out else httpx.ConnectError
            raise kind(str(exc), request=request) from exc
        except NoAnswer as exc:
            raise httpx.ReadTimeout(str(exc), request=request) from exc
        except Unsupported as exc:
            raise httpx.UnsupportedProtocol(str(exc), request=request) from exc
        except HttpFailure as exc:  # the connection broke
            raise httpx.RemoteProtocolError(str(exc), request=request) from exc
        return httpx.Response(
            answer.status,
            headers=[(k, v) for k, v in answer.headers if k.lower() != "transfer-encoding"],
            content=answer.body,
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )

    def close(self) -> None:
        self.connections.close()
