"""The nemesis (issue 16): seeded random fault histories, checked farm-wide.

Each history is a small simulated farm (5-8 peers, a few jobs) that a nemesis crashes and
restarts, freezes longer than a lease, splits and heals, drops datagrams on, skews clocks of by up
to a day, and plays a user who retries, pauses, resumes and cancels; renderers fail some frames.
After the faults stop and gossip quiesces, every frame of every job not cancelled is done or
failed, every replica's digest is equal and every delivered file holds the bytes the ledger
names (``peerfarm.testing.nemesis``). The default run (CI) checks 200 histories on both cores
(about a minute here), ``--hypothesis-profile=long`` 1,000, and the long mode thousands:
``python -m peerfarm.testing.nemesis --histories 5000``; a failure prints its
seed, replayed with ``--seed N``. ``PEERFARM_NEMESIS_HISTORIES`` overrides the count.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor

import pytest

from peerfarm.testing.nemesis import run_seed
from tests.support.depth import depth

HISTORIES = int(os.environ.get("PEERFARM_NEMESIS_HISTORIES", str(depth(200, long=1000))))
FIRST_SEED = int(os.environ.get("PEERFARM_NEMESIS_FIRST", "0"))


def _one(seed: int) -> tuple[int, str | None, tuple[int, int, int]]:
    try:
        history = run_seed(seed, min_peers=5, max_peers=8, fault_seconds=3.0)
    except AssertionError as exc:
        return seed, str(exc)[:4000], (0, 0, 0)
    inv = history.invariants
    assert inv is not None
    return seed, None, (inv.frames, inv.renders, inv.duplicates)


@pytest.mark.timeout(900)
def test_nemesis_histories_keep_every_invariant() -> None:
    seeds = range(FIRST_SEED, FIRST_SEED + HISTORIES)
    with ProcessPoolExecutor(max_workers=max(1, min(2, os.cpu_count() or 1))) as pool:
        results = list(pool.map(_one, seeds))
    failures = [(seed, message) for seed, message, _ in results if message is not None]
    frames = sum(r[2][0] for r in results)
    renders = sum(r[2][1] for r in results)
    print(f"{len(results)} histories, {frames} frames, {renders} renders, failures: {failures}")
    assert not failures, "\n\n".join(message or "" for _, message in failures[:3])
