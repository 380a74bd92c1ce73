"""The ledger on disk when its writer process is killed (SIGKILL) mid-write: a real subprocess."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from peerfarm.ledger.store import LedgerStore
from tests.support import ROOT
from tests.support.ledger import NODES

WRITER = textwrap.dedent(
    """
    import sys, pathlib
    sys.path.insert(0, sys.argv[2])
    from peerfarm.ledger.store import LedgerStore
    from tests.support.ledger import make_job, output, NODES
    store = LedgerStore(pathlib.Path(sys.argv[1]))
    a = store.load(NODES[0])
    spec = make_job(a, frames=100_000)
    a.submit(spec)
    store.flush(a)
    print("ready", flush=True)
    f = 0
    while True:
        for _ in range(500):
            f += 1
            claim = a.claim(spec.id, [f], 2_000 + f)[0][1]
            a.complete(spec.id, f, claim, [output(f)], 0.5)
        store.flush(a)
    """
)


def test_writer_killed_mid_write_leaves_a_readable_database(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    for delay in (0.3, 0.45, 0.6):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(db), str(ROOT)], stdout=subprocess.PIPE, text=True
        )
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            time.sleep(delay)
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        check = sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone()
        assert check == ("ok",)
        ledger = LedgerStore(db).load(NODES[0])
        spec = ledger.jobs()[0]
        done = ledger.counts(spec.id).done
        # What survived is a prefix of what was written: frames 1..done, all done.
        assert done > 0
        assert all(ledger.frame(spec.id, f).status == 5 for f in range(1, done + 1))
        db.unlink()
        for extra in ("-wal", "-shm"):
            Path(str(db) + extra).unlink(missing_ok=True)
