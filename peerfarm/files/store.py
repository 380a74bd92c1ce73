"""The content-addressed blob store in a peer's data dir: every stored byte lives here.

A blob is named by the lowercase hex sha256 of its bytes and kept at ``root/ab/cdef...`` (a
two-level fan-out, so no folder grows huge). Rules this module enforces:

- A digest is validated (exactly 64 lowercase hex characters) before any path is built from it,
  so a hostile digest can never name a file outside the store.
- A blob appears atomically and only once its hash is verified: bytes are written to a temp file
  in ``root/tmp`` while being hashed, then renamed into place. A failed write (ENOSPC or any
  ``OSError``) or a hash mismatch removes the temp file; no partial blob is ever visible.
- Blobs are read-only once stored (mode 0o444; the read-only attribute on Windows, which
  ``platform.remove`` clears to evict one); writing the same content twice is harmless. Every
  rename and delete goes through ``peerfarm.platform``, which closes first and retries while
  another process (a scanner, the indexer) holds the file on Windows.
- Least-recently-used order is the file's mtime, set on every access through ``path()``; no
  sidecar metadata. ``limit_bytes`` is enforced by ``evict()``, which the caller runs before a
  large write because only the caller knows which blobs a live job still needs (``pinned``).

The store is synchronous file I/O; trio code calls the slow methods (``put_file``, ``verify``,
``BlobWriter.commit``) through ``trio.to_thread.run_sync``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from peerfarm import platform
from peerfarm.errors import HashMismatch, StoreError

__all__ = [
    "BlobMissing",
    "BlobWriter",
    "ContentStore",
    "InvalidDigest",
    "StoreFull",
    "validate_digest",
]

#: Bytes read or written per system call when streaming a file through the hasher.
IO_CHUNK = 1024 * 1024
#: Temp files in ``root/tmp`` older than this (seconds) are leftovers of a crash, removed on open.
STALE_TMP_AGE = 24 * 3600.0
#: Permission bits of a stored blob: read-only so nothing edits content behind its hash.
BLOB_MODE = 0o444

_DIGEST = re.compile(r"[0-9a-f]{64}")
_FANOUT = re.compile(r"[0-9a-f]{2}")
_REST = re.compile(r"[0-9a-f]{62}")
_TMP_DIR = "tmp"


class InvalidDigest(StoreError, ValueError):
    """A digest that is not 64 lowercase hex characters; refused before touching the disk."""


class BlobMissing(StoreError):
    """The store (ours or a peer's) holds no blob with this digest."""


class StoreFull(StoreError):
    """Room for the requested bytes cannot be made, even by evicting every unpinned blob."""


def validate_digest(digest: object) -> str:
    """Return ``digest`` if it is 64 lowercase hex characters, else raise ``InvalidDigest``."""
    if not isinstance(digest, str) or _DIGEST.fullmatch(digest) is None:
        shown = digest[:80] if isinstance(digest, str | bytes) else type(digest).__name__
        raise InvalidDigest(f"not a sha256 digest (64 lowercase hex characters): {shown!r}")
    return digest


@dataclass(frozen=True, slots=True)
class _BlobInfo:
    digest: str
    size: int
    last_used_ns: int


class _Clock:
    """Wall clock in ns that never repeats a value, so LRU order is strict within a process."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def now_ns(self) -> int:
        with self._lock:
            self._last = max(time.time_ns(), self._last + 1)
            return self._last


_CLOCK = _Clock()


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _remove_quietly(path: Path) -> None:
    platform.remove(path)


class BlobWriter:
    """One blob being written (a download): ``write`` chunks in order, then ``commit``.

    The hash is computed while writing, so ``commit`` never re-reads the data. ``written`` is the
    resume offset after an interrupted transfer. Use as a context manager or call ``abort``: a
    writer that is not committed removes its temp file. Not safe for concurrent use.
    """

    def __init__(self, store: ContentStore, digest: str, size: int) -> None:
        self.digest = validate_digest(digest)
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise StoreError(f"invalid blob size {size!r} for {digest}")
        self.size = size
        self._store = store
        self._hasher = hashlib.sha256()
        self._written = 0
        self._done = False
        try:
            fd, name = tempfile.mkstemp(dir=store.tmp_dir, prefix=digest[:16] + ".", suffix=".part")
        except OSError as exc:
            raise StoreError(f"cannot create a temp file in {store.tmp_dir}: {exc}") from exc
        self._fd = fd
        self.temp_path = Path(name)

    @property
    def written(self) -> int:
        """Bytes accepted so far: where a resumed transfer continues."""
        return self._written

    @property
    def closed(self) -> bool:
        """True once committed or aborted."""
        return self._done

    def write(self, data: bytes | memoryview) -> None:
        """Append ``data``. StoreError (writer aborted) on a disk error or more than ``size``."""
        if self._done:
            raise StoreError(f"write to a closed blob writer for {self.digest}")
        if self._written + len(data) > self.size:
            self.abort()
            raise StoreError(
                f"blob {self.digest}: {self._written + len(data)} bytes exceed the announced "
                f"size {self.size}"
            )
        try:
            _write_all(self._fd, data)
        except OSError as exc:
            self.abort()
            raise StoreError(
                f"cannot write blob {self.digest} in {self._store.root}: {exc}"
            ) from exc
        self._hasher.update(data)
        self._written += len(data)

    def commit(self) -> Path:
        """Verify size and hash, then move the blob into place atomically; returns its path.

        HashMismatch (temp file removed) if the bytes do not hash to ``digest``; StoreError if the
        size is short or the disk fails. Committing a blob that already exists keeps the old one.
        """
        if self._done:
            raise StoreError(f"commit of a closed blob writer for {self.digest}")
        if self._written != self.size:
            self.abort()
            raise StoreError(
                f"blob {self.digest} is incomplete: {self._written} of {self.size} bytes"
            )
        actual = self._hasher.hexdigest()
        if actual != self.digest:
            self.abort()
            raise HashMismatch(f"received bytes hash to {actual}, expected {self.digest}")
        final = self._store._blob_path(self.digest)
        try:
            os.fsync(self._fd)
            platform.set_mode(self.temp_path, BLOB_MODE, self._fd)
            os.close(self._fd)
            self._done = True
            final.parent.mkdir(exist_ok=True)
            platform.replace(self.temp_path, final)
            self._store._touch(final)
        except OSError as exc:
            self.abort()
            raise StoreError(
                f"cannot store blob {self.digest} in {self._store.root}: {exc}"
            ) from exc
        return final

    def abort(self) -> None:
        """Discard the temp file. Idempotent; a no-op after ``commit``."""
        if not self._done:
            self._done = True
            with contextlib.suppress(OSError):
                os.close(self._fd)
        _remove_quietly(self.temp_path)

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.abort()


class ContentStore:
    """Blobs named by sha256 under ``root``, with LRU eviction down to ``limit_bytes``."""

    def __init__(self, root: Path, *, limit_bytes: int | None = None) -> None:
        if limit_bytes is not None and limit_bytes < 0:
            raise StoreError(f"limit_bytes must be >= 0, got {limit_bytes}")
        self.root = Path(root)
        self.limit_bytes = limit_bytes
        self.tmp_dir = self.root / _TMP_DIR
        try:
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the store at {self.root}: {exc}") from exc
        self._sweep_tmp(time.time() - STALE_TMP_AGE)

    # -- adding blobs -------------------------------------------------------------------------

    def put_file(self, path: Path) -> str:
        """Copy the file at ``path`` into the store, streaming; return its hex sha256.

        Memory stays at one ``IO_CHUNK``. Idempotent: an existing blob is kept and touched.
        """
        try:
            source = open(path, "rb")  # noqa: SIM115 - closed below, after the copy
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc}") from exc
        with source:
            return self._put_stream(iter(lambda: source.read(IO_CHUNK), b""), str(path))

    def adopt_file(self, path: Path) -> str:
        """Move a file the caller owns into the store: hash it, then rename it into place.

        No copy and no fsync (render outputs can be rendered again; a blob damaged by a crash
        is caught by its hash when served). Falls back to :meth:`put_file` across devices.
        """
        hasher = hashlib.sha256()
        try:
            with open(path, "rb") as source:
                for chunk in iter(lambda: source.read(IO_CHUNK), b""):
                    hasher.update(chunk)
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc}") from exc
        digest = hasher.hexdigest()
        final = self._blob_path(digest)
        try:
            if final.exists():
                self._touch(final)
                platform.remove(path)
                return digest
            platform.set_mode(path, BLOB_MODE)
            final.parent.mkdir(exist_ok=True)
            platform.replace(path, final)
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                return self.put_file(path)
            raise StoreError(f"cannot store {path}: {exc}") from exc
        self._touch(final)
        return digest

    def put_bytes(self, data: bytes) -> str:
        """Store ``data``; return its hex sha256. Idempotent."""
        view = memoryview(data)
        chunks = (view[i : i + IO_CHUNK] for i in range(0, len(view), IO_CHUNK))
        return self._put_stream(chunks, "bytes")

    def _put_stream(self, chunks: Iterator[bytes | memoryview], source: str) -> str:
        hasher = hashlib.sha256()
        try:
            fd, name = tempfile.mkstemp(dir=self.tmp_dir, prefix="put.", suffix=".part")
        except OSError as exc:
            raise StoreError(f"cannot create a temp file in {self.tmp_dir}: {exc}") from exc
        temp = Path(name)
        try:
            try:
                for chunk in chunks:
                    hasher.update(chunk)
                    _write_all(fd, chunk)
                digest = hasher.hexdigest()
                final = self._blob_path(digest)
                if final.exists():
                    self._touch(final)
                    return digest
                os.fsync(fd)
                platform.set_mode(temp, BLOB_MODE, fd)
                final.parent.mkdir(exist_ok=True)
                os.close(fd)  # Windows cannot rename a file that is still open
                fd = -1
                platform.replace(temp, final)
                self._touch(final)
                return digest
            except OSError as exc:
                raise StoreError(f"cannot store {source} in {self.root}: {exc}") from exc
        finally:
            if fd >= 0:
                os.close(fd)
            _remove_quietly(temp)

    def open_writer(self, digest: str, size: int) -> BlobWriter:
        """Start writing the blob ``digest`` of ``size`` bytes (a download); see BlobWriter."""
        return BlobWriter(self, digest, size)

    # -- reading ------------------------------------------------------------------------------

    def has(self, digest: str) -> bool:
        """True if the blob is stored. Does not count as a use for LRU."""
        return self._blob_path(digest).is_file()

    def path(self, digest: str) -> Path:
        """The blob's path (read-only file). BlobMissing if absent. Marks the blob used."""
        path = self._blob_path(digest)
        try:
            self._touch(path)
        except FileNotFoundError:
            raise BlobMissing(f"no blob {digest} in {self.root}") from None
        except OSError as exc:
            raise StoreError(f"cannot access blob {digest}: {exc}") from exc
        return path

    def size(self, digest: str) -> int:
        """The blob's size in bytes. BlobMissing if absent."""
        try:
            return self._blob_path(digest).stat().st_size
        except FileNotFoundError:
            raise BlobMissing(f"no blob {digest} in {self.root}") from None
        except OSError as exc:
            raise StoreError(f"cannot access blob {digest}: {exc}") from exc

    def verify(self, digest: str) -> bool:
        """Re-hash the stored blob: True if intact, False if corrupt or absent."""
        hasher = hashlib.sha256()
        try:
            with open(self._blob_path(digest), "rb") as blob:
                while chunk := blob.read(IO_CHUNK):
                    hasher.update(chunk)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StoreError(f"cannot read blob {digest}: {exc}") from exc
        return hasher.hexdigest() == digest

    # -- removing -----------------------------------------------------------------------------

    def remove(self, digest: str) -> None:
        """Delete the blob if present (idempotent)."""
        try:
            _remove_quietly(self._blob_path(digest))
        except OSError as exc:
            raise StoreError(f"cannot remove blob {digest}: {exc}") from exc

    def usage(self) -> int:
        """Total bytes of stored blobs (temp files of writes in progress are not counted)."""
        return sum(info.size for info in self._scan())

    def evict(self, *, needed: int, pinned: Callable[[str], bool]) -> list[str]:
        """Remove least-recently-used unpinned blobs until ``needed`` more bytes fit the limit.

        Returns the evicted digests, oldest first ([] when they already fit or there is no limit).
        StoreFull, with nothing removed, if even evicting every unpinned blob is not enough.
        """
        if needed < 0:
            raise StoreError(f"needed must be >= 0, got {needed}")
        if self.limit_bytes is None:
            return []
        blobs = self._scan()
        excess = sum(info.size for info in blobs) + needed - self.limit_bytes
        if excess <= 0:
            return []
        victims: list[str] = []
        for info in sorted(blobs, key=lambda info: (info.last_used_ns, info.digest)):
            if excess <= 0:
                break
            if pinned(info.digest):
                continue
            victims.append(info.digest)
            excess -= info.size
        if excess > 0:
            raise StoreFull(
                f"cannot fit {needed} bytes under the store limit of {self.limit_bytes} bytes: "
                f"{excess} bytes short even after evicting every unpinned blob"
            )
        for digest in victims:
            self.remove(digest)
        return victims

    # -- internals ----------------------------------------------------------------------------

    def _blob_path(self, digest: str) -> Path:
        digest = validate_digest(digest)
        return self.root / digest[:2] / digest[2:]

    @staticmethod
    def _touch(path: Path) -> None:
        now = _CLOCK.now_ns()
        os.utime(path, ns=(now, now))

    def _scan(self) -> list[_BlobInfo]:
        blobs: list[_BlobInfo] = []
        try:
            with os.scandir(self.root) as top:
                fanouts = [e for e in top if _FANOUT.fullmatch(e.name) and e.is_dir()]
            for fanout in fanouts:
                with os.scandir(fanout.path) as entries:
                    for entry in entries:
                        if _REST.fullmatch(entry.name) is None:
                            continue
                        with contextlib.suppress(FileNotFoundError):
                            info = entry.stat(follow_symlinks=False)
                            if stat.S_ISREG(info.st_mode):
                                digest = fanout.name + entry.name
                                blobs.append(_BlobInfo(digest, info.st_size, info.st_mtime_ns))
        except OSError as exc:
            raise StoreError(f"cannot list the store at {self.root}: {exc}") from exc
        return blobs

    def _sweep_tmp(self, older_than: float) -> None:
        with contextlib.suppress(OSError), os.scandir(self.tmp_dir) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):
                    if entry.stat().st_mtime < older_than:
                        platform.remove(entry.path)
