"""Ledger micro-benchmarks (issue 2): update cost vs job size, encoded sizes, memory per record.

    python bench/ledger.py [--jobs 100] [--frames 10000] [--json OUT]

Targets: one frame update O(1) and under 50 us; under 300 bytes of memory per frame record;
a one-frame delta under 200 bytes.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from peerfarm.ledger import Ledger, Output, codec
from peerfarm.ledger.model import SceneRef

NODE = "a" * 16


def new_job(ledger: Ledger, frames: int, n: int = 0) -> str:
    spec = ledger.new_job(
        name=f"job{n}",
        submitter_name="bench",
        renderer="command",
        options={},
        scene=SceneRef(hashlib.sha256(str(n).encode()).digest(), "scene.blend", 1),
        frames=range(1, frames + 1),
        wall_ms=1_000 + n,
    )
    ledger.submit(spec)
    return spec.id


def out(frame: int) -> Output:
    return Output(f"frame_{frame:04d}.png", hashlib.sha256(str(frame).encode()).digest(), 48_000)


def update_cost(frames: int, samples: int = 2_000) -> float:
    """Mean microseconds for one claim+complete pair's update, measured on the last frames."""
    ledger = Ledger(NODE)
    job = new_job(ledger, frames)
    for f in range(1, frames - samples + 1):
        claim = ledger.claim(job, [f], 2_000 + f)[0][1]
        ledger.complete(job, f, claim, [out(f)], 1.0)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    for f in range(frames - samples + 1, frames + 1):
        claim = ledger.claim(job, [f], 2_000 + f)[0][1]
        ledger.complete(job, f, claim, [out(f)], 1.0)  # type: ignore[arg-type]
    return (time.perf_counter() - t0) / (2 * samples) * 1e6


def merge_cost(frames: int) -> float:
    """Mean microseconds to merge one remote frame delta into a replica of a big job."""
    a, b = Ledger(NODE), Ledger("b" * 16)
    job = new_job(a, frames)
    deltas = list(a.all_deltas())
    for f in range(1, frames + 1):
        claim = a.claim(job, [f], 2_000 + f)
        deltas += claim
        deltas += a.complete(job, f, claim[0][1], [out(f)], 1.0)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    b.merge(deltas, 10**9)
    return (time.perf_counter() - t0) / len(deltas) * 1e6


def memory_per_record(jobs: int, frames: int) -> float:
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    ledger = Ledger(NODE)
    for n in range(jobs):
        job = new_job(ledger, frames, n)
        for f in range(1, frames + 1):
            claim = ledger.claim(job, [f], 2_000 + f)[0][1]
            ledger.complete(job, f, claim, [out(f)], 1.0)  # type: ignore[arg-type]
        ledger.take_dirty()
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return used / (jobs * frames)


def sizes(frames: int) -> dict[str, int]:
    ledger = Ledger(NODE)
    job = new_job(ledger, frames)
    spec_bytes = len(codec.packb(codec.encode_deltas(ledger.all_deltas())))
    for f in range(1, frames + 1):
        claim = ledger.claim(job, [f], 2_000 + f)[0][1]
        ledger.complete(job, f, claim, [out(f)], 1.0)  # type: ignore[arg-type]
    whole = len(codec.packb(codec.encode_deltas(ledger.all_deltas())))
    return {"spec_bytes": spec_bytes, "job_done_bytes": whole}


def one_frame_delta(frames: int) -> int:
    a, b = Ledger(NODE), Ledger("b" * 16)
    job = new_job(a, frames)
    b.merge(list(a.all_deltas()), 2_000)
    for f in range(1, frames + 1):
        claim = a.claim(job, [f], 2_000 + f)
        b.merge(claim, 3_000)
        done = a.complete(job, f, claim[0][1], [out(f)], 1.0)  # type: ignore[arg-type]
        b.merge(done, 3_000)
    b.absorb_watermarks(a.watermarks())
    a.retry(job, [frames // 2], 5_000)
    missing = list(a.deltas_since(b.watermarks()))
    return len(codec.packb(codec.encode_deltas(missing)))


def run(jobs: int, frames: int) -> dict[str, Any]:
    small = update_cost(max(2_000, frames // 10))
    large = update_cost(frames)
    return {
        "update_us_small_job": round(small, 2),
        "update_us": round(large, 2),
        "update_growth": round(large / small, 2),
        "merge_us": round(merge_cost(frames), 2),
        **{f"encoded_{k}": v for k, v in sizes(frames).items()},
        "one_frame_delta_bytes": one_frame_delta(frames),
        "memory_bytes_per_record": round(memory_per_record(jobs, frames)),
        "jobs": jobs,
        "frames": frames,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = run(args.jobs, args.frames)
    for key, value in result.items():
        print(f"{key:28} {value}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
