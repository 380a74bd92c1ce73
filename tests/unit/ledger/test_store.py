"""The ledger on disk: round trips, restarts, corrupt rows and archiving."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from peerfarm.errors import LedgerError
from peerfarm.ledger import store as store_module
from peerfarm.ledger.store import LedgerStore
from tests.support.ledger import NODES, make_job, output


def test_round_trip_through_sqlite(tmp_path: Path) -> None:
    store = LedgerStore(tmp_path / "ledger.db")
    a = store.load(NODES[0])
    spec = make_job(a, frames=50)
    a.submit(spec)
    for f in range(1, 21):
        claim = a.claim(spec.id, [f], 2_000 + f)[0][1]
        a.complete(spec.id, f, claim, [output(f)], 0.5)  # type: ignore[arg-type]
    a.pause(spec.id, 5_000)
    store.flush(a)
    digest, marks, version = a.state_digest(), a.watermarks(), a.version
    store.close()

    store = LedgerStore(tmp_path / "ledger.db")
    b = store.load(NODES[0])
    assert b.state_digest() == digest
    assert b.watermarks()[NODES[0]] >= marks[NODES[0]]
    # Exactly what was saved: the peer saves its writes before they leave it, so nobody holds
    # a write of ours above this version, and a restarted peer must not skip past it either
    # (peers would take our next writes for ones they already have).
    assert b.version == version
    assert b.watermarks()[NODES[0]] == version
    assert b.paused(spec.id)


def test_a_peer_restarted_after_a_crash_gets_its_writes_back_from_the_farm(
    tmp_path: Path,
) -> None:
    """A write that reached another peer but not this one's disk (only possible when the
    database was lost or restored from a backup) comes back: its version is not skipped."""
    store = LedgerStore(tmp_path / "ledger.db")
    a = store.load(NODES[0])
    spec = make_job(a, frames=5)
    a.submit(spec)
    store.flush(a)
    other = store.load(NODES[1])  # another replica (same file is fine: it only reads here)
    other.merge(list(a.all_deltas()), 1_500)
    late = a.pause(spec.id, 2_000)  # sent, then the peer died before saving it
    other.merge(late, 2_000)
    store.close()
    restarted = LedgerStore(tmp_path / "ledger.db").load(NODES[0])
    assert not restarted.paused(spec.id)
    restarted.merge(other.deltas_since(restarted.watermarks()), 3_000)
    assert restarted.paused(spec.id)
    assert restarted.state_digest() == other.state_digest()
    fresh = restarted.resume(spec.id, 4_000)
    assert fresh[0][3] > late[0][3]  # a new write never reuses a version the farm has seen


def test_archive_removes_rows(tmp_path: Path) -> None:
    store = LedgerStore(tmp_path / "ledger.db")
    a = store.load(NODES[0])
    spec = make_job(a, frames=5)
    a.submit(spec)
    a.claim(spec.id, [1, 2], 2_000)
    store.flush(a)
    a.archive(spec.id, 3_000)
    store.flush(a)
    rows = sqlite3.connect(tmp_path / "ledger.db").execute("SELECT count(*) FROM entries")
    assert rows.fetchone()[0] == 1  # only the tombstone
    assert store.load(NODES[0]).archived()[spec.id]["frames"] == 5


def test_corrupt_rows_are_skipped_not_fatal(tmp_path: Path) -> None:
    store = LedgerStore(tmp_path / "ledger.db")
    a = store.load(NODES[0])
    a.submit(make_job(a))
    store.flush(a)
    store.close()
    db = sqlite3.connect(tmp_path / "ledger.db")
    db.execute("INSERT INTO entries VALUES (?, ?)", (b"junk", b"\xc1\xff"))
    db.commit()
    store = LedgerStore(tmp_path / "ledger.db")
    b = store.load(NODES[0])
    assert store.skipped == 1
    assert len(b.jobs()) == 1


def test_a_data_dir_where_wal_cannot_work_is_refused_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite keeps its old journal where WAL cannot work (a network share): here the
    dot-file VFS, which has no shared memory, answers ``delete`` as such a share does."""
    real_connect = sqlite3.connect

    def connect(path: str, **kwargs: Any) -> sqlite3.Connection:
        return real_connect(f"file:{path}?vfs=unix-dotfile", uri=True, **kwargs)

    monkeypatch.setattr(store_module.sqlite3, "connect", connect)
    with pytest.raises(LedgerError, match=r"write-ahead log.*'delete'.*local disk"):
        LedgerStore(tmp_path / "ledger.db")
