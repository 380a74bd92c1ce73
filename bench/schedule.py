"""Scheduling benchmarks (issues 4 and 19): what the user waits for, beside Redis + RQ, same run.

    python bench/schedule.py [--frames 240] [--seconds 0.25] [--noop 1000] [--peers 4]
                             [--repeats 3] [--series 2000,20000,100000] [--json OUT]

- makespan: ``frames`` x ``sleep seconds`` (a command-renderer script) on ``peers`` real daemons
  with 1 slot each, as the user waits for it: from starting ``peerfarm submit SCRIPT 1-N --wait``
  (a fresh CLI process) to that process returning; against the ideal ``frames * seconds /
  peers`` and against RQ (``peers`` warm workers, one job per frame running the very same
  script in a subprocess, as Buildcat does), both its forking ``Worker`` and its
  ``SimpleWorker``, timed from the first enqueue to the last job finished. The three are run
  in turn, ``repeats`` times, and each reports its median (a loaded machine drifts).
- dispatch: ``noop`` frames of a script that does nothing, frames per second (submit through
  the API to the submitter's summary status showing every frame done), median of ``repeats``,
  against both RQ workers on the same script and the process-spawn ceiling
  (``trio.run_process(["true"])``, 4 at a time).
- series: the dispatch rate of one job of each size in ``series`` (2,000 / 20,000 / 100,000):
  the per-frame cost must not grow with the job.

Targets: >= 97% of ideal and faster than both RQ workers; >= 1.5x SimpleWorker and >= 250
frames/s; the rate at every size of the series >= 90% of the rate at its smallest.
``rq=False`` (or redis/rq missing) measures peerfarm alone.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import trio

from bench import BenchError, local_farm, proc_cpu_seconds
from peerfarm.testing.daemons import PEERFARM, Daemon, LocalFarm, daemon_env, wait_until

TARGET_EFFICIENCY = 0.97
TARGET_RATE = 250.0
TARGET_VS_SIMPLE = 1.5
TARGET_FLAT = 0.9  # the rate at every size of the series, of the rate at its smallest
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


def cli_wait(farm: LocalFarm, script: Path, frames: int, name: str) -> float:
    """Seconds from starting ``peerfarm submit SCRIPT 1-FRAMES --wait`` to it returning."""
    origin = farm.daemons[0]
    argv = [*PEERFARM, "submit", str(script), f"1-{frames}", "--name", name, "--wait",
            "--no-output", "--json", "--data-dir", str(origin.data_dir)]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(argv, cwd=farm.root, env=daemon_env(), capture_output=True, text=True,
                          timeout=max(300.0, frames * 2.0), check=False)  # fmt: skip
    took = time.monotonic() - started
    if done.returncode != 0:
        raise BenchError(f"peerfarm submit --wait exited {done.returncode}: {done.stderr[-400:]}")
    return took


def summary_done(on: Daemon, job: str) -> bool:
    """Whether ``on`` sees every frame of ``job`` done, from its summary status (no frame list:
    polling must not cost the daemon work that grows with the job)."""
    for view in on.status()["jobs"]:
        if view["id"] == job:
            if view["state"] in ("failed", "cancelled"):
                raise BenchError(f"job {job[:8]} ended {view['state']}")
            return view["frames_done"] == view["frames_total"]
    return False


def dispatch_rate(farm: LocalFarm, frames: int, name: str, interval: float = 0.05) -> float:
    """No-op frames per second: submit through the API to every frame done on the submitter
    (polled every ``interval`` seconds from its summary status)."""
    script = farm.script("dispatch.sh", NOOP_BODY)
    origin = farm.daemons[0]
    started = time.monotonic()
    job = farm.submit(origin, script, f"1-{frames}", name=name, no_output=True)
    done = wait_until(lambda: time.monotonic() if summary_done(origin, job) else None,
                      max(120.0, frames * 0.05), f"{frames} no-op frames", interval=interval)
    return frames / (done - started)


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
    repeats: int = 3,
    rq_classes: Sequence[str] = ("simple", "fork"),
) -> dict[str, Any]:
    """Makespan and dispatch: peerfarm and both RQ workers in turn, ``repeats`` times each."""
    rq = rq and rq_ready()
    scripts = Path(tempfile.mkdtemp(prefix="pf-bench-rq-"))
    sleeper = _script(scripts / "makespan.sh", f"sleep {seconds}")
    noop_script = _script(scripts / "dispatch.sh", NOOP_BODY)
    own = farm is None
    farm = farm or local_farm(peers)
    times: dict[str, list[float]] = {}
    rates: dict[str, list[float]] = {}
    try:
        peers = len(farm.daemons)
        ideal = frames * seconds / peers
        ceiling = spawn_ceiling(noop)
        ours_script = farm.script("makespan.sh", f"sleep {seconds}")
        with contextlib.ExitStack() as stack:
            baselines = {}
            if rq:
                from bench.rq_engine import RQFarm

                for cls in rq_classes:
                    baselines[cls] = stack.enter_context(RQFarm(peers, cls))
            for n in range(repeats):
                took = cli_wait(farm, ours_script, frames, f"makespan{n}")
                times.setdefault("peerfarm", []).append(took)
                rates.setdefault("peerfarm", []).append(dispatch_rate(farm, noop, f"dispatch{n}"))
                for cls, baseline in baselines.items():
                    times.setdefault(cls, []).append(baseline.run_frames([str(sleeper)], frames))
                    took = baseline.run_frames([str(noop_script)], noop)
                    rates.setdefault(cls, []).append(noop / took)
    finally:
        if own:
            farm.close()
        shutil.rmtree(scripts, ignore_errors=True)
    ours = statistics.median(times["peerfarm"])
    makespan: dict[str, Any] = {
        "frames": frames, "seconds_per_frame": seconds, "peers": peers, "repeats": repeats,
        "measured": "peerfarm submit --wait, start to return (CLI included)",
        "ideal_s": round(ideal, 3),
        "peerfarm_s": round(ours, 3),
        "peerfarm_runs_s": [round(t, 3) for t in times["peerfarm"]],
        "peerfarm_efficiency": round(ideal / ours, 4),
        "target_efficiency": TARGET_EFFICIENCY,
    }  # fmt: skip
    fps = statistics.median(rates["peerfarm"])
    dispatch: dict[str, Any] = {
        "frames": noop, "peers": peers, "repeats": repeats,
        "spawn_ceiling_fps": round(ceiling, 1),
        "peerfarm_fps": round(fps, 1),
        "peerfarm_runs_fps": [round(r, 1) for r in rates["peerfarm"]],
        "peerfarm_of_ceiling": round(fps / ceiling, 3),
        "target_fps": TARGET_RATE,
        "target_vs_simple": TARGET_VS_SIMPLE,
    }  # fmt: skip
    if rq:
        for cls in baselines:
            took = statistics.median(times[cls])
            makespan[f"rq_{cls}_s"] = round(took, 3)
            makespan[f"rq_{cls}_runs_s"] = [round(t, 3) for t in times[cls]]
            makespan[f"rq_{cls}_efficiency"] = round(ideal / took, 4)
            dispatch[f"rq_{cls}_fps"] = round(statistics.median(rates[cls]), 1)
            dispatch[f"rq_{cls}_runs_fps"] = [round(r, 1) for r in rates[cls]]
        if "rq_simple_s" in makespan:
            makespan["peerfarm_vs_simple"] = round(makespan["rq_simple_s"] / ours, 3)
            dispatch["peerfarm_vs_simple"] = round(fps / dispatch["rq_simple_fps"], 2)
        if "rq_fork_fps" in dispatch:
            dispatch["peerfarm_vs_fork"] = round(fps / dispatch["rq_fork_fps"], 2)
    else:
        makespan["rq"] = dispatch["rq"] = "skipped: redis-server or rq missing"
    return {"makespan": makespan, "dispatch": dispatch}


def series(sizes: Sequence[int], farm: LocalFarm | None = None, peers: int = 4) -> dict[str, Any]:
    """The no-op dispatch rate of one job of each size, in the order given (smallest first),
    with the daemons' mean CPU per frame."""
    own = farm is None
    farm = farm or local_farm(peers)
    try:
        rows: list[dict[str, Any]] = []
        for size in sizes:
            pids = [d.pid for d in farm.daemons]
            before = [proc_cpu_seconds(pid) for pid in pids]
            fps = dispatch_rate(farm, size, f"series{size}")
            used = [proc_cpu_seconds(pid) - b for pid, b in zip(pids, before, strict=True)]
            rows.append({
                "frames": size,
                "fps": round(fps, 1),
                "daemon_cpu_ms_per_frame": round(sum(used) / len(used) / size * 1000, 3),
            })  # fmt: skip
        count = len(farm.daemons)
    finally:
        if own:
            farm.close()
    for row in rows:
        row["of_smallest"] = round(row["fps"] / rows[0]["fps"], 3)
    return {"peers": count, "sizes": rows, "target_of_smallest": TARGET_FLAT}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--seconds", type=float, default=0.25)
    parser.add_argument("--noop", type=int, default=1000)
    parser.add_argument("--peers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--series", default="2000,20000,100000", help="'' for none")
    parser.add_argument("--no-rq", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with local_farm(args.peers) as farm:
        result = run(args.frames, args.seconds, args.noop, rq=not args.no_rq, farm=farm,
                     repeats=args.repeats)  # fmt: skip
        sizes = [int(x) for x in args.series.split(",") if x.strip()]
        if sizes:
            result["series"] = series(sizes, farm)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
