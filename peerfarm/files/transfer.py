"""Blob transfer between peers over an authenticated message stream: both ends live here.

The wire protocol (messages are msgpack-able dicts with a "t" key; append-only, never renumber):

    client -> server  {"t": "get", "digest": hex, "offset": int}
    server -> client  {"t": "blob", "size": int}      total size of the blob, whatever the offset
                      {"t": "chunk", "data": bytes}   CHUNK_SIZE bytes each, from offset on
                      ...
                      {"t": "end"}
                  or  {"t": "missing"}

Rules: the server validates every request before it touches the store (a hostile digest never
becomes a path) and reads only blobs the store holds. The client trusts nothing it receives: it
checks every message's shape, never accepts more bytes than announced, and verifies the sha256
before the blob becomes visible. Memory is bounded by a few chunks at either end. An interrupted
transfer resumes from the bytes already received; a hash mismatch refetches from zero. Within
one process, concurrent fetches of one digest into one store share a single download.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import trio

from peerfarm.errors import (
    HashMismatch,
    PeerfarmError,
    RemoteProtocolError,
    StoreError,
    TransportError,
)
from peerfarm.files.store import (
    BlobMissing,
    BlobWriter,
    ContentStore,
    InvalidDigest,
    validate_digest,
)

__all__ = [
    "CHUNK_SIZE",
    "BadRequest",
    "FetchFailed",
    "MessageStream",
    "fetch_blob",
    "serve_blob",
]

log = logging.getLogger(__name__)

#: Payload bytes per "chunk" message: well under the transport's 4 MiB frame cap, large enough
#: that per-message overhead is negligible, small enough that memory per transfer stays tiny.
CHUNK_SIZE = 256 * 1024
#: Largest chunk the client accepts from a peer (a different peer build may pick another size).
MAX_CHUNK_SIZE = 4 * 1024 * 1024 - 4096

ProgressCallback = Callable[[int, int], None]
"""Called with (bytes received so far, total size) after every chunk."""


class MessageStream(Protocol):
    """The part of the transport's authenticated stream that transfers need."""

    @property
    def remote(self) -> Any:
        """Who is on the other end (for messages only)."""

    async def send(self, message: Any) -> None: ...

    async def receive(self, *, timeout: float | None = None) -> Any: ...

    async def aclose(self) -> None: ...


StreamFactory = Callable[[], Awaitable[MessageStream]]


class BadRequest(RemoteProtocolError):
    """A "get" request that is malformed or asks for something outside the store."""


class FetchFailed(StoreError):
    """A blob could not be fetched from a peer within the allowed attempts."""


# -- server -----------------------------------------------------------------------------------


def parse_get(request: object) -> tuple[str, int]:
    """The (digest, offset) of a "get" request, or BadRequest. Pure: no store access."""
    if not isinstance(request, Mapping) or request.get("t") != "get":
        raise BadRequest(f"not a get request: {_shorten(request)}")
    try:
        digest = validate_digest(request.get("digest"))
    except InvalidDigest as exc:
        raise BadRequest(str(exc)) from None
    offset = request.get("offset", 0)
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise BadRequest(f"invalid offset {_shorten(offset)} for blob {digest}")
    return digest, offset


async def serve_blob(
    stream: MessageStream,
    store: ContentStore,
    request: Mapping[str, Any],
    *,
    timeout: float = 30.0,
) -> None:
    """Answer one "get" request on ``stream`` from ``store``.

    Raises BadRequest (nothing sent, store untouched for a bad digest or offset) and
    TransportError if the client stops reading for ``timeout`` seconds. A blob read from offset
    0 is hashed on the way out; if our copy turns out corrupt it is removed so we stop serving it.
    """
    digest, offset = parse_get(request)
    try:  # one thread hop for a blob of one chunk (a scene, a frame): each is a wait in line
        blob, size, data = await trio.to_thread.run_sync(_open_at, store, digest, offset)
    except BlobMissing:
        await _send(stream, {"t": "missing"}, timeout)
        return
    with blob:
        if offset > size:
            raise BadRequest(f"offset {offset} beyond the end of blob {digest} ({size} bytes)")
        await _send(stream, {"t": "blob", "size": size}, timeout)
        hasher = hashlib.sha256() if offset == 0 else None
        position = offset
        while position < size:
            if not data:
                break  # truncated on disk: the client's size check catches it
            if hasher is not None:
                hasher.update(data)
            await _send(stream, {"t": "chunk", "data": data}, timeout)
            position += len(data)
            if position < size:
                data = await trio.to_thread.run_sync(_read_at, blob, position)
        await _send(stream, {"t": "end"}, timeout)
    if hasher is not None and hasher.hexdigest() != digest:
        log.warning("blob %s is corrupt in our store; removing it", digest)
        await trio.to_thread.run_sync(store.remove, digest)


def _open_at(store: ContentStore, digest: str, offset: int) -> tuple[BinaryIO, int, bytes]:
    """The open blob, its size and its first chunk from ``offset`` (empty past the end)."""
    blob = _open_blob(store, digest)
    try:
        size = _fstat_size(blob)
        return blob, size, _read_at(blob, offset) if offset < size else b""
    except BaseException:
        blob.close()
        raise


def _open_blob(store: ContentStore, digest: str) -> BinaryIO:
    try:
        return open(store.path(digest), "rb")  # the caller closes it
    except FileNotFoundError:  # evicted between path() and open()
        raise BlobMissing(f"no blob {digest} in {store.root}") from None
    except OSError as exc:
        raise StoreError(f"cannot open blob {digest}: {exc}") from exc


def _fstat_size(blob: BinaryIO) -> int:
    return os.fstat(blob.fileno()).st_size


def _read_at(blob: BinaryIO, position: int) -> bytes:
    try:
        blob.seek(position)
        return blob.read(CHUNK_SIZE)
    except OSError as exc:
        raise StoreError(f"cannot read blob: {exc}") from exc


async def _send(stream: MessageStream, message: Mapping[str, Any], timeout: float) -> None:
    with trio.move_on_after(timeout) as scope:
        await stream.send(message)
    if scope.cancelled_caught:
        raise TransportError(f"sending to {stream.remote} timed out after {timeout} s")


# -- client -----------------------------------------------------------------------------------

_locks: dict[tuple[Path, str], tuple[trio.Lock, int]] = {}


@contextlib.asynccontextmanager
async def _digest_lock(store: ContentStore, digest: str) -> AsyncIterator[None]:
    """Serialise fetches of one digest into one store, so the second finds the first's blob."""
    key = (store.root.resolve(), digest)
    lock, users = _locks.get(key, (trio.Lock(), 0))
    _locks[key] = (lock, users + 1)
    try:
        async with lock:
            yield
    finally:
        lock, users = _locks[key]
        if users == 1:
            del _locks[key]
        else:
            _locks[key] = (lock, users - 1)


async def fetch_blob(
    stream_factory: StreamFactory,
    digest: str,
    store: ContentStore,
    *,
    attempts: int = 3,
    timeout: float = 30.0,
    on_progress: ProgressCallback | None = None,
) -> Path:
    """Fetch blob ``digest`` from the peer behind ``stream_factory`` into ``store``; its path.

    ``stream_factory`` opens a fresh stream to that peer for every attempt. ``timeout`` (s) bounds
    opening a stream and each single wait for a message, not the whole transfer, so a large blob
    on a slow but live link still arrives. A broken stream resumes from the bytes received; a
    hash mismatch or a malformed reply refetches from zero. Raises BlobMissing if the peer does
    not hold the blob, FetchFailed after ``attempts`` failures, InvalidDigest for a bad digest.
    """
    digest = validate_digest(digest)
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    async with _digest_lock(store, digest):
        if store.has(digest):
            return store.path(digest)
        download = _Download(digest, store)
        failures: list[str] = []
        try:
            for _attempt in range(attempts):
                try:
                    writer, last = await _attempt_download(
                        download, stream_factory, timeout, on_progress
                    )
                    download.writer = None  # commit cleans up after itself, success or not
                    return await trio.to_thread.run_sync(_write_and_commit, writer, last)
                except HashMismatch as exc:
                    failures.append(f"hash mismatch ({exc})")
                except RemoteProtocolError as exc:
                    failures.append(f"bad reply ({exc})")
                    download.restart()
                except TransportError as exc:
                    failures.append(f"transfer interrupted ({exc})")
        finally:
            download.restart()
        raise FetchFailed(
            f"could not fetch blob {digest} in {attempts} attempts: " + "; ".join(failures)
        )


def _write_and_commit(writer: BlobWriter, last: bytes) -> Path:
    if last:
        writer.write(last)
    return writer.commit()


@dataclass(slots=True)
class _Download:
    """The state kept between attempts: the partial blob, if its bytes are worth resuming."""

    digest: str
    store: ContentStore
    writer: BlobWriter | None = None

    @property
    def offset(self) -> int:
        return 0 if self.writer is None or self.writer.closed else self.writer.written

    def restart(self) -> None:
        """Drop the partial blob: the next attempt starts from zero."""
        if self.writer is not None:
            self.writer.abort()
            self.writer = None


async def _attempt_download(
    download: _Download,
    stream_factory: StreamFactory,
    timeout: float,
    on_progress: ProgressCallback | None,
) -> tuple[BlobWriter, bytes]:
    """One attempt: request from ``download.offset`` on; once "end" arrives, the writer and the
    last chunk, which the caller writes with the commit (one thread hop, not two).

    Creates the writer on the first "blob" reply. On any error the writer stays in ``download``
    and the caller decides whether its bytes are kept for a resume.
    """
    digest = download.digest
    with trio.move_on_after(timeout) as scope:
        stream = await stream_factory()
    if scope.cancelled_caught:
        raise TransportError(f"opening a stream to fetch {digest} timed out after {timeout} s")
    try:
        offset = download.offset
        if offset == 0:
            download.restart()
        await _send(stream, {"t": "get", "digest": digest, "offset": offset}, timeout)
        header = _expect_mapping(await stream.receive(timeout=timeout), stream)
        kind = header.get("t")
        if kind == "missing":
            raise BlobMissing(f"peer {stream.remote} does not have blob {digest}")
        if kind != "blob":
            raise RemoteProtocolError(f"expected 'blob' from {stream.remote}, got {kind!r}")
        size = header.get("size")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise RemoteProtocolError(f"invalid blob size {size!r} from {stream.remote}")
        if download.writer is None:
            download.writer = download.store.open_writer(digest, size)
        elif download.writer.size != size:
            raise RemoteProtocolError(
                f"blob {digest} changed size from {download.writer.size} to {size} "
                f"at {stream.remote}"
            )
        return await _receive_chunks(stream, download.writer, timeout, on_progress)
    finally:
        with (
            trio.CancelScope(shield=True),
            trio.move_on_after(timeout),
            contextlib.suppress(PeerfarmError),
        ):
            await stream.aclose()


async def _receive_chunks(
    stream: MessageStream,
    writer: BlobWriter,
    timeout: float,
    on_progress: ProgressCallback | None,
) -> tuple[BlobWriter, bytes]:
    """The chunks until "end": each written when the next arrives, the last one returned
    unwritten (or written when the stream breaks, so a resume asks for what is missing)."""
    held = b""
    while True:
        try:
            received_message = await stream.receive(timeout=timeout)
        except TransportError:
            if held:  # a resume goes on after every byte that arrived
                await trio.to_thread.run_sync(writer.write, held)
            raise
        message = _expect_mapping(received_message, stream)
        kind = message.get("t")
        received = writer.written + len(held)
        if kind == "end":
            if received != writer.size:
                raise RemoteProtocolError(
                    f"blob {writer.digest} from {stream.remote} ended after {received} "
                    f"of {writer.size} bytes"
                )
            return writer, held
        if kind != "chunk":
            raise RemoteProtocolError(f"expected 'chunk' from {stream.remote}, got {kind!r}")
        data = message.get("data")
        if not isinstance(data, bytes) or not data or len(data) > MAX_CHUNK_SIZE:
            raise RemoteProtocolError(f"invalid chunk from {stream.remote}: {_shorten(data)}")
        if received + len(data) > writer.size:
            raise RemoteProtocolError(
                f"blob {writer.digest} from {stream.remote} overruns its size {writer.size}"
            )
        if held:
            await trio.to_thread.run_sync(writer.write, held)
        held = data
        if on_progress is not None:
            on_progress(writer.written + len(held), writer.size)


def _expect_mapping(message: object, stream: MessageStream) -> Mapping[str, Any]:
    if not isinstance(message, Mapping):
        raise RemoteProtocolError(f"expected a dict from {stream.remote}: {_shorten(message)}")
    return message


def _shorten(value: object, limit: int = 80) -> str:
    text = repr(value) if not isinstance(value, bytes | bytearray) else f"<{len(value)} bytes>"
    return text if len(text) <= limit else text[: limit - 3] + "..."
