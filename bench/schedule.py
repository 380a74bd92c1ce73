"""Scheduling benchmarks (issue 4): makespan and dispatch rate, beside Redis + RQ, same run.

    python bench/schedule.py [--frames 240] [--seconds 0.25] [--noop 1000] [--peers 4] [--json OUT]

- makespan: ``frames`` x ``sleep seconds`` (a command-renderer script) on ``peers`` real daemons
  with 1 slot each, from the submit call to every frame done as the submitter sees it, against
  the ideal ``frames * seconds / peers`` and against RQ (4 warm workers, one job per frame running
  ``sleep`` in a subprocess), both its forking ``Worker`` and its ``SimpleWorker``.
- dispatch: ``noop`` frames whose script only creates its (empty) output file, frames per second,
  against both RQ workers (job: ``true`` in a subprocess) and the machine's process-spawn
  ceiling (``trio.run_process(["true"])``, 4 at a time).

Targets: >= 97% of ideal and faster than both RQ workers; >= 1.5x SimpleWorker and >= 250
frames/s. ``rq=False`` (or redis/rq missing) measures peerfarm alone.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import trio

from bench import local_farm
from peerfarm.testing.daemons import LocalFarm

TARGET_EFFICIENCY = 0.97
TARGET_RATE = 250.0
TARGET_VS_SIMPLE = 1.5
NOOP_BODY = ":"  # a frame that does nothing (the same script runs under RQ)


def spawn_ceiling(count: int = 1000, concurrency: int = 4) -> float:
    """Processes per second: ``trio.run_process(["true"])`` with ``concurrency`` at a time."""

    async def main() -> float:
        todo = iter(range(count))

        async def worker() -> None:
            for _ in todo:
                await trio.run_process(["true"])

        started = trio.current_time()
        with trio.fail_after(300):
            async with trio.open_nursery() as nursery:
                for _ in range(concurrency):
                    nursery.start_soon(worker)
        return count / (trio.current_time() - started)

    return trio.run(main)


def peerfarm_frames(farm: LocalFarm, body: str, frames: int, name: str) -> float:
    """Seconds from submit to all ``frames`` done on the submitting daemon."""
    script = farm.script(f"{name}.sh", body)
    origin = farm.daemons[0]
    started = time.monotonic()
    job = farm.submit(origin, script, f"1-{frames}", name=name, no_output=True)
    # poll every 50 ms: each status call costs the daemon CPU, and the machine has 2 cores
    done = farm.wait_job(origin, job, max(120.0, frames * 2.0), interval=0.05)
    return done - started


def rq_both(
    worker_class: str, sleeper: Path, noop_script: Path, frames: int, noop: int, workers: int
) -> tuple[float, float]:
    """(seconds for ``frames`` x the sleeping script, for ``noop`` x the no-op script) on RQ:
    the very scripts peerfarm's command renderer ran, one RQ job per frame."""
    from bench.rq_engine import RQFarm

    with RQFarm(workers, worker_class) as rq:
        return (
            rq.run_frames([str(sleeper)], frames),
            rq.run_frames([str(noop_script)], noop),
        )


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return path


def rq_ready() -> bool:
    from bench.install import have_module, redis_server_path

    return redis_server_path() is not None and have_module("rq")


def run(
    frames: int = 240,
    seconds: float = 0.25,
    noop: int = 1000,
    peers: int = 4,
    rq: bool = True,
    farm: LocalFarm | None = None,
) -> dict[str, Any]:
    rq = rq and rq_ready()
    scripts = Path(tempfile.mkdtemp(prefix="pf-bench-rq-"))
    sleeper = _script(scripts / "makespan.sh", f"sleep {seconds}")
    noop_script = _script(scripts / "dispatch.sh", NOOP_BODY)
    own = farm is None
    farm = farm or local_farm(peers)
    try:
        peers = len(farm.daemons)
        ideal = frames * seconds / peers
        # makespan
        ours = peerfarm_frames(farm, f"sleep {seconds}", frames, "makespan")
        makespan: dict[str, Any] = {
            "frames": frames,
            "seconds_per_frame": seconds,
            "peers": peers,
            "ideal_s": round(ideal, 3),
            "peerfarm_s": round(ours, 3),
            "peerfarm_efficiency": round(ideal / ours, 4),
            "target_efficiency": TARGET_EFFICIENCY,
        }
        # dispatch
        ceiling = spawn_ceiling(noop)
        ours_noop = peerfarm_frames(farm, NOOP_BODY, noop, "dispatch")
        dispatch: dict[str, Any] = {
            "frames": noop,
            "peers": peers,
            "spawn_ceiling_fps": round(ceiling, 1),
            "peerfarm_fps": round(noop / ours_noop, 1),
            "peerfarm_of_ceiling": round(noop / ours_noop / ceiling, 3),
            "target_fps": TARGET_RATE,
            "target_vs_simple": TARGET_VS_SIMPLE,
        }
    finally:
        if own:
            farm.close()
    if rq:
        for cls in ("fork", "simple"):
            took, took_noop = rq_both(cls, sleeper, noop_script, frames, noop, peers)
            makespan[f"rq_{cls}_s"] = round(took, 3)
            makespan[f"rq_{cls}_efficiency"] = round(ideal / took, 4)
            dispatch[f"rq_{cls}_fps"] = round(noop / took_noop, 1)
        fps = dispatch["peerfarm_fps"]
        dispatch["peerfarm_vs_simple"] = round(fps / dispatch["rq_simple_fps"], 2)
        dispatch["peerfarm_vs_fork"] = round(fps / dispatch["rq_fork_fps"], 2)
    else:
        makespan["rq"] = dispatch["rq"] = "skipped: redis-server or rq missing"
    shutil.rmtree(scripts, ignore_errors=True)
    return {"makespan": makespan, "dispatch": dispatch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--seconds", type=float, default=0.25)
    parser.add_argument("--noop", type=int, default=1000)
    parser.add_argument("--peers", type=int, default=4)
    parser.add_argument("--no-rq", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = run(args.frames, args.seconds, args.noop, args.peers, rq=not args.no_rq)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
