"""Long responses of the control API: server-sent events, zip archives, Prometheus metrics.

This module owns every response that is produced piece by piece. Rules: an event stream ends
as soon as the server's ``shutdown`` event is set (so hypercorn can stop without waiting out its
graceful timeout); an archive is written while it is sent, never held whole in memory.
"""

from __future__ import annotations

import functools
import json
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TypeVar

import trio

from peerfarm.control import FarmControl, StatusView
from peerfarm.files.names import UnsafeName, safe_name
from peerfarm.metrics import render

#: Seconds an SSE stream waits for a change before sending a keep-alive comment.
SSE_KEEPALIVE_S = 15.0
_CHUNK = 256 * 1024

T = TypeVar("T")


async def until_shutdown(shutdown: trio.Event, fn: Callable[[], Awaitable[T]]) -> T | None:
    """``await fn()``, or ``None`` as soon as ``shutdown`` is set."""
    result: list[T] = []
    async with trio.open_nursery() as nursery:

        async def run() -> None:
            result.append(await fn())
            nursery.cancel_scope.cancel()

        async def watch() -> None:
            await shutdown.wait()
            nursery.cancel_scope.cancel()

        nursery.start_soon(run)
        nursery.start_soon(watch)
    return result[0] if result else None


async def event_stream(
    control: FarmControl, shutdown: trio.Event, keepalive: float = SSE_KEEPALIVE_S
) -> AsyncIterator[str]:
    """Server-sent events: ``change`` each time the farm's view changes, comments otherwise."""
    since = 0
    yield "retry: 2000\n\n"
    while not shutdown.is_set():
        generation = await until_shutdown(
            shutdown, functools.partial(control.wait_for_change, since, keepalive)
        )
        if generation is None:
            return
        if generation != since:
            since = generation
            yield f"event: change\ndata: {json.dumps({'generation': generation})}\n\n"
        else:
            yield ": keep-alive\n\n"


class _ZipSink:
    """A write-only, tell-able stream for ``zipfile`` whose bytes are taken as they come."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._position = 0

    def write(self, data: bytes) -> int:
        self._buffer += data
        self._position += len(data)
        return len(data)

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def take(self) -> bytes:
        data = bytes(self._buffer)
        self._buffer.clear()
        return data


def done_outputs(status: StatusView) -> Iterator[tuple[int, int, str | None]]:
    """(frame, output index, delivered name or None when it is not a safe file name) of every
    output of every done frame in a ``status(job)``."""
    for frame in status.get("frames", []):
        if frame["state"] != "done":
            continue
        for index, output in enumerate(frame["outputs"]):
            try:
                name: str | None = safe_name(output["name"])
            except UnsafeName:
                name = None
            yield frame["frame"], index, name


async def zip_stream(
    control: FarmControl, job: str, outputs: list[tuple[int, int, str | None]]
) -> AsyncIterator[bytes]:
    """A zip of the given outputs (stored, not recompressed), yielded as it is written.

    Entries are named as the frames are delivered (``frame_0001.png``), not as the store
    keeps them (by hash); a name that repeats gets the frame and index in front.
    """
    sink = _ZipSink()
    names: set[str] = set()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for frame, index, delivered in outputs:
            path = await control.output_file(job, frame, index)
            if path is None:
                continue
            name = delivered or path.name
            if name in names:
                name = f"{frame:06d}_{index}_{name}"
            names.add(name)
            info = zipfile.ZipInfo.from_file(path, name)
            with archive.open(info, "w") as dest:
                async with await trio.open_file(path, "rb") as src:
                    while chunk := await src.read(_CHUNK):
                        dest.write(chunk)
                        yield sink.take()
            yield sink.take()
    yield sink.take()


def render_metrics(control: FarmControl) -> bytes:
    """``control.metrics()`` in the Prometheus text format (see :mod:`peerfarm.metrics`)."""
    return render(control.metrics)
