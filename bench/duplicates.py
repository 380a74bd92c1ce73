"""Duplicate-work benchmark (issue 4): frame-seconds rendered more than once, with and without
the rendezvous "home" preference.

    python bench/duplicates.py [--peers 8] [--frames 400] [--seconds 0.25] [--seed 1] [--json OUT]

Runs on the simulator: :class:`peerfarm.testing.SimFarm` (real nodes, ledger, gossip, leases and
scheduler on the in-memory network, fake renderer) under a virtual clock, so the result does not
depend on how busy the machine is. No faults are injected. For each setting of ``prefer_home``
one job of ``frames`` frames of ``seconds`` each is rendered by ``peers`` peers with one slot.

Duplicated frame-seconds = every render's (virtual) duration, minus one completed render per
frame; reported over the frame-seconds rendered in total. Target: under 1% with no faults.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import trio
import trio.testing

from peerfarm.testing import RenderRecord, SimFarm

TARGET_FRACTION = 0.01


def _clock() -> trio.abc.Clock:
    try:
        from peerfarm.testing import sim_clock
    except ImportError:
        return trio.testing.MockClock(autojump_threshold=0)
    return sim_clock()


def duplicated_seconds(records: list[RenderRecord]) -> tuple[float, float, int]:
    """(duplicated frame-seconds, total frame-seconds, frames rendered more than once)."""
    total = 0.0
    kept: dict[int, float] = {}
    starts: dict[int, int] = {}
    for r in records:
        duration = (r.ended if r.ended is not None else r.started) - r.started
        total += duration
        starts[r.frame] = starts.get(r.frame, 0) + 1
        if r.completed and r.frame not in kept:
            kept[r.frame] = duration
    twice = sum(1 for count in starts.values() if count > 1)
    return total - sum(kept.values()), total, twice


async def _one(
    root: Path, peers: int, frames: int, seconds: float, prefer_home: bool, seed: int
) -> dict[str, Any]:
    farm = SimFarm(root, seed=seed, renderer_seconds=seconds, prefer_home=prefer_home)
    with trio.fail_after(3600):  # virtual seconds
        async with farm.running():
            nodes = await farm.start(peers)
            job = await farm.submit(nodes[0], f"1-{frames}", name="dups")
            started = trio.current_time()
            await farm.wait_until(
                lambda: farm.job_finished(job, delivered=False),
                timeout=frames * seconds * 4 + 120,
                what="the job",
            )
            makespan = trio.current_time() - started
            records = farm.log.of_job(job)
    duplicated, total, twice = duplicated_seconds(records)
    return {
        "prefer_home": prefer_home,
        "duplicated_frame_s": round(duplicated, 3),
        "total_frame_s": round(total, 3),
        "fraction": round(duplicated / total, 5) if total else 0.0,
        "frames_started_twice": twice,
        "renders": len(records),
        "virtual_makespan_s": round(makespan, 2),
    }


def run(peers: int = 8, frames: int = 400, seconds: float = 0.25, seed: int = 1) -> dict[str, Any]:
    out: dict[str, Any] = {"peers": peers, "frames": frames, "seconds_per_frame": seconds,
                           "target_fraction": TARGET_FRACTION}
    for prefer_home in (True, False):
        with tempfile.TemporaryDirectory(prefix="peerfarm-bench-dups-") as tmp:
            result = trio.run(
                _one, Path(tmp), peers, frames, seconds, prefer_home, seed, clock=_clock()
            )
        out["with_home" if prefer_home else "without_home"] = result
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--peers", type=int, default=8)
    parser.add_argument("--frames", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = run(args.peers, args.frames, args.seconds, args.seed)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
