"""The ledger on disk: one SQLite database (WAL) per peer, in its data dir.

Owns the schema and the crash rules. Each :meth:`LedgerStore.flush` writes every entry changed
since the last flush, the removed keys, the watermarks and the version counter in one
transaction, so a process killed mid-write loses at most that flush and never corrupts the file.
The peer saves its own writes before they leave it (``peerfarm.peer.gossip``), so a restarted
peer's version is exactly what it saved: no write of its that any other peer holds is missing
here, and no version it reuses was ever seen elsewhere.

Those rules need WAL. SQLite answers ``PRAGMA journal_mode=WAL`` with the mode it really uses,
and keeps the old one where WAL cannot work (a network share, a file system without shared
memory): the answer is checked and such a data dir refused with a clear ``LedgerError``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from ..errors import DecodeError, LedgerError
from . import codec
from .ledger import Ledger

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (k BLOB PRIMARY KEY, delta BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
"""


def wal_refused(path: Path, mode: object) -> str:
    """The one line for a data dir where SQLite cannot keep a write-ahead log (pure)."""
    return (
        f"the ledger database {path} cannot use SQLite's write-ahead log (journal mode "
        f"{mode!r}): its folder is probably on a network share or a file system without shared "
        "memory; put the data dir (--data-dir) on a local disk"
    )


class LedgerStore:
    """Persists one :class:`Ledger`; not thread-safe (use it from one thread or task)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(str(path), isolation_level=None)
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()
            if mode is None or str(mode[0]).lower() != "wal":
                self._db.close()
                raise LedgerError(wal_refused(path, mode[0] if mode else None))
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot open the ledger database {path}: {exc}") from None
        self.skipped = 0  # rows that failed to decode on load (counted, never fatal)

    def close(self) -> None:
        self._db.close()

    def _meta(self, name: str) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else codec.unpackb(row[0])

    def load(self, node_id: str) -> Ledger:
        """Rebuild the replica. Rows that fail validation are skipped and counted."""
        schema = self._meta("schema")
        if schema is not None and schema != SCHEMA_VERSION:
            raise LedgerError(f"{self.path} has ledger schema {schema}, expected {SCHEMA_VERSION}")
        version = int(self._meta("version") or 0)
        clock = int(self._meta("clock") or 0)
        raw_marks = self._meta("watermarks") or {}
        deltas = []
        for (blob,) in self._db.execute("SELECT delta FROM entries"):
            try:
                deltas.append(codec.decode_delta(codec.unpackb(blob)))
            except DecodeError:
                self.skipped += 1
        try:
            marks = codec.decode_watermarks(raw_marks)
        except DecodeError:
            marks = {}
        own = max((d[3] for d in deltas if d[2] == node_id), default=0)
        ledger = Ledger(node_id, version=max(version, own), clock_last=clock)
        ledger.load(deltas, marks)
        self.flush(ledger)
        return ledger

    def flush(self, ledger: Ledger) -> int:
        """Write what changed since the last flush in one transaction; returns rows written."""
        upserts, removed = ledger.take_dirty()
        rows = [(codec.packb(list(d[0])), codec.packb(codec.encode_delta(d))) for d in upserts]
        gone = [(codec.packb(list(k)),) for k in removed]
        try:
            with self._db:
                self._db.execute("BEGIN")
                if rows:
                    self._db.executemany(
                        "INSERT OR REPLACE INTO entries (k, delta) VALUES (?, ?)", rows
                    )
                if gone:
                    self._db.executemany("DELETE FROM entries WHERE k = ?", gone)
                meta = [
                    ("schema", codec.packb(SCHEMA_VERSION)),
                    ("version", codec.packb(ledger.version)),
                    ("clock", codec.packb(ledger.clock.last)),
                    ("watermarks", codec.packb(ledger.watermarks())),
                ]
                self._db.executemany(
                    "INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", meta
                )
        except sqlite3.Error as exc:
            # Put the work back so a later flush retries it (e.g. after a full disk is freed).
            ledger.restore_dirty(upserts, removed)
            raise LedgerError(f"cannot write the ledger database {self.path}: {exc}") from None
        return len(rows) + len(gone)
