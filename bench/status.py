"""Status of a big job (issue 19): the daemon's work for one ``status JOB`` answer, by job size.

    python bench/status.py [--frames 100000,1000000] [--done 0.5] [--json OUT]

For each size, one ledger holds one job of that many frames, a share ``--done`` of them done and
one in a thousand failed (merged as a remote peer's records, as gossip delivers them). Timed,
the median of five, in-process (what the daemon computes and encodes; no HTTP, no CLI start-up):

  summary        the job's summary alone (``status JOB --json --limit 0``, ``?limit=0``)
  default page   the summary and the first 1,000 frames (``status JOB --json``)
  failed         the summary and every failed frame (``--state failed``)
  range          the summary and frames 1-10 (``--frames 1-10``)
  map            every frame's state as one string (``GET /api/jobs/{ref}/frame-states``)
  every frame    the whole frame list, as ``status JOB --json`` sent it before paging
                 (at up to 100,000 frames: it takes seconds beyond)

Target: the summary under 0.2 s at any size.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from peerfarm.control import SUMMARY_ONLY, FrameQuery
from peerfarm.framepage import DEFAULT_LIMIT, page_view, select_frames, state_map
from peerfarm.ledger import Ledger, Output
from peerfarm.ledger.keys import Delta, Kind
from peerfarm.ledger.model import FrameRecord, JobSpec, SceneRef, Status
from peerfarm.status import frames_view, job_view

NODE, REMOTE = "a" * 16, "b" * 16
TARGET_S = 0.2
EVERY_FRAME_UP_TO = 100_000


def big_ledger(frames: int, done_share: float) -> tuple[Ledger, JobSpec]:
    ledger = Ledger(NODE)
    spec = ledger.new_job(
        name="big",
        submitter_name="bench",
        renderer="command",
        options={},
        scene=SceneRef(hashlib.sha256(b"scene").digest(), "scene.sh", 1),
        frames=range(1, frames + 1),
        wall_ms=1_000,
    )
    ledger.submit(spec)
    out = Output("frame.png", hashlib.sha256(b"frame").digest(), 48_000)
    deltas: list[Delta] = []
    for frame in range(1, int(frames * done_share) + 1):
        if frame % 1000 == 500:
            record = FrameRecord(0, Status.FAILED, 1, 5, REMOTE, error="exit 3")
        else:
            record = FrameRecord(0, Status.DONE, 1, 5, REMOTE, seconds=1.0, outputs=(out,))
        deltas.append(((Kind.FRAME, spec.id, frame), record, REMOTE, frame))
    ledger.merge(deltas, 10**9)
    return ledger, spec


def answer(ledger: Ledger, spec: JobSpec, query: FrameQuery) -> str:
    """What ``Farm.status(job, query)`` computes for the job, JSON-encoded as the API sends it."""
    page = select_frames(ledger, spec, query)
    view = {
        "jobs": [job_view(ledger, spec, peer_slots=4)],
        "frames": frames_view(ledger, spec, {}, page.frames),
        "frames_page": page_view(query, page),
    }
    return json.dumps(view, separators=(",", ":"))


def timed(fn: Callable[[], str], runs: int = 5) -> dict[str, float]:
    times, size = [], 0
    for _ in range(runs):
        start = time.perf_counter()
        size = len(fn())
        times.append(time.perf_counter() - start)
    return {"seconds": round(statistics.median(times), 4), "bytes": size}


def run(frames: int, done_share: float) -> dict[str, Any]:
    start = time.perf_counter()
    ledger, spec = big_ledger(frames, done_share)
    built = time.perf_counter() - start
    cases: dict[str, Callable[[], str]] = {
        "summary": lambda: answer(ledger, spec, SUMMARY_ONLY),
        "default page": lambda: answer(ledger, spec, FrameQuery(limit=DEFAULT_LIMIT)),
        "failed": lambda: answer(ledger, spec, FrameQuery(states=("failed",))),
        "range": lambda: answer(ledger, spec, FrameQuery(frames="1-10")),
        "map": lambda: json.dumps(state_map(ledger, spec)),
    }
    if frames <= EVERY_FRAME_UP_TO:
        cases["every frame"] = lambda: answer(ledger, spec, FrameQuery())
    results = {name: timed(fn, 1 if name == "every frame" else 5) for name, fn in cases.items()}
    counts = ledger.counts(spec.id)
    return {
        "frames": frames,
        "done": counts.done,
        "failed": counts.failed,
        "build_seconds": round(built, 1),
        "results": results,
        "summary_met": results["summary"]["seconds"] < TARGET_S,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", default="100000,1000000")
    parser.add_argument("--done", type=float, default=0.5, help="share of frames done")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    report = []
    for size in (int(part) for part in args.frames.split(",")):
        row = run(size, args.done)
        report.append(row)
        print(f"{size:,} frames ({row['done']:,} done, {row['failed']:,} failed):")
        for name, result in row["results"].items():
            print(f"  {name:13} {result['seconds'] * 1000:9.1f} ms  {result['bytes']:>11,} B")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    sys.exit(0 if all(row["summary_met"] for row in report) else 1)


if __name__ == "__main__":
    main()
