"""Late joiner benchmark (issue 19): a new peer's time to converge on a big ledger, on loopback.

    python bench/joiner.py [--frames 100000] [--preset lan] [--json OUT]

A "seed" daemon starts from a data dir whose ledger already holds one finished job of
``frames`` frames (written with :class:`peerfarm.ledger.store.LedgerStore`, as a peer that
rendered it would have left it; its records were written by a peer that is gone). A fresh
daemon then starts joined to it; measured: seconds from starting the joiner's process until
its ledger digest equals the seed's (polled every 0.1 s through its control API), and the
seconds the joiner took to be ready at all (process start, no ledger). Target: within 10 s.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import START_TIMEOUT_S
from peerfarm.errors import PeerfarmError
from peerfarm.ledger import Ledger, Output
from peerfarm.ledger.model import SceneRef
from peerfarm.ledger.store import LedgerStore
from peerfarm.testing.daemons import LocalFarm, wait_until

TARGET_S = 10.0
GONE_PEER = "f" * 16  # the peer that rendered the job and left


def write_ledger(data_dir: Path, frames: int) -> str:
    """A ledger of one done job of ``frames`` frames in ``data_dir``; returns its digest."""
    ledger = Ledger(GONE_PEER)
    spec = ledger.new_job(
        name="big", submitter_name="gone", renderer="command", options={},
        scene=SceneRef(hashlib.sha256(b"big").digest(), "big.sh", 1),
        frames=range(1, frames + 1), wall_ms=1_000,
    )  # fmt: skip
    ledger.submit(spec)
    for frame in range(1, frames + 1):
        claim = ledger.claim(spec.id, [frame], 2_000 + frame)[0][1]
        digest = hashlib.sha256(str(frame).encode()).digest()
        out = Output(f"frame_{frame:06d}.png", digest, 48_000)
        ledger.complete(spec.id, frame, claim, [out], 0.5)  # type: ignore[arg-type]
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    store = LedgerStore(data_dir / "ledger.db")
    try:
        store.flush(ledger)
    finally:
        store.close()
    return ledger.state_digest()


def run(frames: int = 100_000, preset: str = "lan") -> dict[str, Any]:
    with LocalFarm(preset=preset, ready_timeout=START_TIMEOUT_S) as farm:
        built = time.monotonic()
        digest = write_ledger(farm.root / "seed", frames)
        build_s = time.monotonic() - built
        seed = farm.start("seed", data_dir=farm.root / "seed")
        wait_until(lambda: seed.status()["node"]["digest"] == digest, START_TIMEOUT_S,
                   "the seed to load its ledger")
        started = time.monotonic()
        joiner = farm.start("joiner", join=seed, wait=False)
        farm.wait_ready(joiner)
        ready = time.monotonic()

        def converged() -> float | None:
            try:
                same = joiner.status()["node"]["digest"] == digest
            except PeerfarmError:  # busy merging, or gone: check_running says which
                farm.check_running()
                return None
            return time.monotonic() if same else None

        done = wait_until(converged, 300, "the joiner to hold the seed's ledger", interval=0.1)
    return {
        "frames": frames,
        "preset": preset,
        "ledger_build_s": round(build_s, 1),
        "joiner_ready_s": round(ready - started, 2),
        "converged_s": round(done - started, 2),
        "converged_after_ready_s": round(done - ready, 2),
        "target_s": TARGET_S,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--preset", default="lan")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = run(args.frames, args.preset)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
