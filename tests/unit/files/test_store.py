"""ContentStore: hashing, layout, atomic verified writes, digest validation and LRU eviction."""

from __future__ import annotations

import errno
import hashlib
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from peerfarm.errors import HashMismatch, StoreError
from peerfarm.files import store as store_module
from peerfarm.files.store import (
    BlobMissing,
    ContentStore,
    InvalidDigest,
    StoreFull,
    validate_digest,
)

HOSTILE_DIGESTS: list[object] = [
    "",
    "../" * 21 + "x",
    "../../etc/passwd",
    "A" * 64,
    "0" * 63,
    "0" * 65,
    "g" * 64,
    "/" + "0" * 63,
    "00/" + "0" * 61,
    "0" * 63 + "\n",
    "0" * 64 + "\x00",
    "ab" + "\\" * 62,
    b"0" * 64,
    None,
    64,
]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def blob_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.parent.name != "tmp")


def temp_files(store: ContentStore) -> list[Path]:
    return sorted(store.tmp_dir.iterdir())


@pytest.fixture
def store(tmp_path: Path) -> ContentStore:
    return ContentStore(tmp_path / "store")


def test_put_bytes_uses_sha256_and_two_level_fanout(store: ContentStore) -> None:
    data = b"hello render farm"
    digest = store.put_bytes(data)
    assert digest == sha(data)
    expected = store.root / digest[:2] / digest[2:]
    assert store.path(digest) == expected
    assert expected.read_bytes() == data
    assert store.has(digest)
    assert store.size(digest) == len(data)
    assert store.verify(digest)
    assert temp_files(store) == []


def test_put_is_idempotent_and_blobs_are_read_only(store: ContentStore) -> None:
    first = store.put_bytes(b"same")
    second = store.put_bytes(b"same")
    assert first == second
    assert blob_files(store.root) == [store.path(first)]
    assert store.path(first).stat().st_mode & 0o222 == 0
    assert store.usage() == 4


def test_put_file_streams_a_multi_chunk_file(store: ContentStore, tmp_path: Path) -> None:
    rng = random.Random(1)
    data = rng.randbytes(store_module.IO_CHUNK * 2 + 123)
    source = tmp_path / "scene.blend"
    source.write_bytes(data)
    digest = store.put_file(source)
    assert digest == sha(data)
    assert store.path(digest).read_bytes() == data
    assert store.put_file(source) == digest
    assert temp_files(store) == []


def test_put_file_of_a_missing_file_is_a_store_error(store: ContentStore, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot read"):
        store.put_file(tmp_path / "nope.blend")


def test_empty_blob(store: ContentStore) -> None:
    digest = store.put_bytes(b"")
    assert digest == sha(b"")
    assert store.size(digest) == 0
    assert store.verify(digest)


def test_missing_blob(store: ContentStore) -> None:
    digest = sha(b"absent")
    assert not store.has(digest)
    with pytest.raises(BlobMissing, match=digest):
        store.path(digest)
    with pytest.raises(BlobMissing):
        store.size(digest)
    assert not store.verify(digest)
    store.remove(digest)  # idempotent


def test_remove(store: ContentStore) -> None:
    digest = store.put_bytes(b"bye")
    store.remove(digest)
    assert not store.has(digest)
    assert store.usage() == 0


@pytest.mark.parametrize("digest", HOSTILE_DIGESTS)
def test_hostile_digests_are_refused_before_touching_disk(
    store: ContentStore, digest: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_disk(*args: object, **kwargs: object) -> None:
        raise AssertionError("filesystem touched")

    monkeypatch.setattr(Path, "stat", no_disk)
    monkeypatch.setattr(Path, "is_file", no_disk)
    monkeypatch.setattr(Path, "unlink", no_disk)
    monkeypatch.setattr(os, "utime", no_disk)
    calls: list[Callable[[Any], object]] = [
        store.has,
        store.path,
        store.size,
        store.verify,
        store.remove,
        lambda d: store.open_writer(d, 1),
    ]
    for call in calls:
        with pytest.raises(InvalidDigest):
            call(digest)
    with pytest.raises(InvalidDigest):
        validate_digest(digest)


def test_writer_commits_a_verified_blob(store: ContentStore) -> None:
    data = bytes(range(256)) * 100
    digest = sha(data)
    with store.open_writer(digest, len(data)) as writer:
        for i in range(0, len(data), 1000):
            writer.write(data[i : i + 1000])
        assert not store.has(digest)  # invisible until committed
        path = writer.commit()
    assert path == store.path(digest)
    assert path.read_bytes() == data
    assert temp_files(store) == []


def test_writer_hash_mismatch_removes_the_temp_file(store: ContentStore) -> None:
    data = b"x" * 1000
    writer = store.open_writer(sha(data), len(data))
    writer.write(b"y" * 1000)
    assert temp_files(store) == [writer.temp_path]
    with pytest.raises(HashMismatch):
        writer.commit()
    assert not store.has(sha(data))
    assert temp_files(store) == []


def test_writer_refuses_more_than_the_announced_size(store: ContentStore) -> None:
    writer = store.open_writer(sha(b"abc"), 3)
    with pytest.raises(StoreError, match="exceed"):
        writer.write(b"abcd")
    assert temp_files(store) == []


def test_writer_refuses_to_commit_a_short_blob(store: ContentStore) -> None:
    writer = store.open_writer(sha(b"abc"), 3)
    writer.write(b"ab")
    with pytest.raises(StoreError, match="incomplete"):
        writer.commit()
    assert temp_files(store) == []


def test_abandoned_writer_leaves_nothing(store: ContentStore) -> None:
    with pytest.raises(RuntimeError), store.open_writer(sha(b"abc"), 3) as writer:
        writer.write(b"ab")
        raise RuntimeError("download cancelled")
    assert temp_files(store) == []
    assert blob_files(store.root) == []


def _fail_after(limit: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make os.write fail with ENOSPC once ``limit`` bytes have been written."""
    real_write = os.write
    written = 0

    def full_disk(fd: int, data: bytes) -> int:
        nonlocal written
        if written + len(data) > limit:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written += len(data)
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full_disk)


def test_disk_full_during_put_is_a_clear_store_error(
    store: ContentStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fail_after(store_module.IO_CHUNK, monkeypatch)
    with pytest.raises(StoreError, match="No space left on device"):
        store.put_bytes(b"z" * (store_module.IO_CHUNK * 3))
    monkeypatch.undo()
    assert temp_files(store) == []
    assert blob_files(store.root) == []


def test_disk_full_during_download_is_a_clear_store_error(
    store: ContentStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = b"q" * 3000
    writer = store.open_writer(sha(data), len(data))
    _fail_after(1000, monkeypatch)
    writer.write(data[:1000])
    with pytest.raises(StoreError, match="No space left on device"):
        writer.write(data[1000:2000])
    monkeypatch.undo()
    assert writer.closed
    assert temp_files(store) == []
    assert not store.has(sha(data))


def test_verify_detects_corruption_on_disk(store: ContentStore) -> None:
    digest = store.put_bytes(b"pristine")
    path = store.path(digest)
    path.chmod(0o644)
    path.write_bytes(b"tampered")
    assert not store.verify(digest)


def test_stale_temp_files_are_swept_on_open(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    stale = store.tmp_dir / "old.part"
    fresh = store.tmp_dir / "new.part"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"y")
    os.utime(stale, (0, 0))
    ContentStore(tmp_path)
    assert temp_files(store) == [fresh]


def _age(store: ContentStore, digest: str, seconds: int) -> None:
    os.utime(store.root / digest[:2] / digest[2:], ns=(seconds * 10**9, seconds * 10**9))


def test_evict_removes_least_recently_used_unpinned_blobs(tmp_path: Path) -> None:
    store = ContentStore(tmp_path, limit_bytes=400)
    a, b, c, d = (store.put_bytes(bytes([i]) * 100) for i in range(4))
    for age, digest in enumerate([a, b, c, d]):
        _age(store, digest, 1000 + age)
    assert store.usage() == 400
    store.path(a)  # a is now the most recently used
    assert store.evict(needed=150, pinned=lambda digest: digest == b) == [c, d]
    assert {store.has(x) for x in (a, b)} == {True}
    assert store.usage() == 200
    assert store.evict(needed=200, pinned=lambda _: False) == []


def test_evict_without_limit_or_when_it_fits_removes_nothing(tmp_path: Path) -> None:
    unlimited = ContentStore(tmp_path / "u")
    unlimited.put_bytes(b"x" * 100)
    assert unlimited.evict(needed=10**12, pinned=lambda _: False) == []
    limited = ContentStore(tmp_path / "l", limit_bytes=1000)
    limited.put_bytes(b"x" * 100)
    assert limited.evict(needed=900, pinned=lambda _: False) == []


def test_evict_raises_store_full_and_removes_nothing(tmp_path: Path) -> None:
    store = ContentStore(tmp_path, limit_bytes=300)
    digests = [store.put_bytes(bytes([i]) * 100) for i in range(3)]
    with pytest.raises(StoreFull, match="300"):
        store.evict(needed=250, pinned=lambda digest: digest == digests[0])
    assert all(store.has(x) for x in digests)
    with pytest.raises(StoreFull):
        store.evict(needed=301, pinned=lambda _: False)
    assert store.usage() == 300


def test_usage_ignores_temp_and_foreign_files(store: ContentStore) -> None:
    store.put_bytes(b"12345")
    (store.tmp_dir / "x.part").write_bytes(b"0" * 50)
    (store.root / "README").write_bytes(b"0" * 50)
    (store.root / "zz").mkdir()
    (store.root / "zz" / ("0" * 62)).write_bytes(b"0" * 50)
    assert store.usage() == 5
