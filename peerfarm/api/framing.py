"""Keeping a keep-alive connection usable when an answer comes before the request's body.

hypercorn reuses an HTTP/1.1 connection only once both sides have finished their message. An
answer given before the request's body has arrived (the access check's 401, a 413, a 404 for an
unknown job) made hypercorn close the connection without saying so, and a client that sent its
next request on it (httpx, urllib3, a browser's fetch) got "server disconnected".
:func:`finish_request_body` reads the rest of a small body before the answer starts. A body too
large or too slow to read is left unread, and the answer says ``Connection: close`` so the client
opens a new connection for its next request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import trio

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]

#: Bytes of an unread body read (and dropped) so that the connection can serve the next request.
DRAIN_LIMIT = 64 * 1024
#: Seconds the client gets to send the rest of a small body before the answer goes out anyway.
DRAIN_TIMEOUT_S = 2.0


def finish_request_body(app: App, *, timeout: float = DRAIN_TIMEOUT_S) -> App:
    """``app``, answering only once the request's body is read, or with ``Connection: close``."""

    async def guarded(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        length = _body_length(scope)
        if scope["type"] != "http" or length == 0:
            await app(scope, receive, send)
            return
        ended = False

        async def tracked() -> Message:
            nonlocal ended
            message = await receive()
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                ended = True
            return message

        async def drained() -> bool:
            if length is not None and length > DRAIN_LIMIT:
                return False
            read = 0
            with trio.move_on_after(timeout):
                while not ended and read <= DRAIN_LIMIT:
                    read += len((await tracked()).get("body", b""))
            return ended

        async def answer(message: Message) -> None:
            if message["type"] == "http.response.start" and not ended and not await drained():
                headers = [*message.get("headers", ()), (b"connection", b"close")]
                message = {**message, "headers": headers}
            await send(message)

        await app(scope, tracked, answer)

    return guarded


def _body_length(scope: MutableMapping[str, Any]) -> int | None:
    """The request body's declared length: 0 for none, None when chunked (unknown)."""
    length = 0
    for name, value in scope.get("headers", ()):
        if name == b"transfer-encoding":
            return None
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return None
    return length
