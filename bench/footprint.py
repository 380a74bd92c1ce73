"""Footprint benchmark (issue 9): what an idle daemon costs, and the ledger's memory per frame.

    python bench/footprint.py [--peers 4] [--window 20] [--ledger-frames 1000000] [--json OUT]

- idle: ``peers`` daemons on loopback (LAN preset, control API on, no jobs) after they converged;
  CPU time each used over ``window`` seconds (user + system, from /proc) as a percentage of one
  core, and each one's resident memory (VmRSS) at the end. Targets: < 1% CPU, < 80 MB.
- ledger: bytes of Python memory per frame record (claimed and done, with an output) in a
  replica holding ``ledger_frames`` records as 100 jobs, built with ``bench/ledger.py``'s
  helpers in a child process and measured as the growth of its resident memory.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import ROOT, local_farm, proc_cpu_seconds, proc_rss_bytes
from peerfarm.testing.daemons import LocalFarm

TARGET_CPU_PERCENT = 1.0
TARGET_RSS_MB = 80.0
TARGET_BYTES_PER_FRAME = 300  # a done frame's record in a replica (issue 19)
LEDGER_JOBS = 100


def idle(peers: int = 4, window: float = 20.0, farm: LocalFarm | None = None) -> dict[str, Any]:
    own = farm is None
    farm = farm or local_farm(peers)
    try:
        pids = [d.pid for d in farm.daemons]
        before = [proc_cpu_seconds(pid) for pid in pids]
        started = time.monotonic()
        time.sleep(window)
        took = time.monotonic() - started
        used = [proc_cpu_seconds(pid) - b for pid, b in zip(pids, before, strict=True)]
        cpu = [u / took * 100 for u in used]
        rss = [proc_rss_bytes(pid) / 2**20 for pid in pids]
    finally:
        if own:
            farm.close()
    return {
        "peers": len(pids),
        "window_s": round(took, 2),
        "cpu_percent": [round(c, 2) for c in cpu],
        "cpu_percent_max": round(max(cpu), 2),
        "rss_mb": [round(r, 1) for r in rss],
        "rss_mb_max": round(max(rss), 1),
        "target_cpu_percent": TARGET_CPU_PERCENT,
        "target_rss_mb": TARGET_RSS_MB,
    }


_LEDGER_CHILD = """
import gc, json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from bench import proc_rss_bytes
from bench.ledger import NODE, new_job, out
from peerfarm.ledger import Ledger
jobs, frames = int(sys.argv[1]), int(sys.argv[2])
gc.collect()
base = proc_rss_bytes(0)
ledger = Ledger(NODE)
for n in range(jobs):
    job = new_job(ledger, frames, n)
    for f in range(1, frames + 1):
        claim = ledger.claim(job, [f], 2_000 + f)[0][1]
        ledger.complete(job, f, claim, [out(f)], 1.0)
    ledger.take_dirty()
gc.collect()
print(json.dumps({"rss_bytes": proc_rss_bytes(0) - base}))
"""


def ledger_memory(frames: int = 1_000_000) -> dict[str, Any]:
    """Resident bytes per frame record of a replica of ``frames`` claimed-and-done frames.

    Built in a fresh child process with ``bench/ledger.py``'s helpers (same records as its
    ``memory_per_record``), measured as the growth of the child's RSS: what the records really
    cost, allocator overhead included, and without tracemalloc's slowdown at 1,000,000 frames.
    """
    jobs = LEDGER_JOBS if frames >= LEDGER_JOBS else 1
    per_job = frames // jobs
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", _LEDGER_CHILD, str(jobs), str(per_job), str(ROOT)],
        capture_output=True, text=True, check=True,
    )
    grown = json.loads(result.stdout.strip().splitlines()[-1])["rss_bytes"]
    return {
        "frames": jobs * per_job,
        "jobs": jobs,
        "bytes_per_frame": round(grown / (jobs * per_job)),
        "wall_s": round(time.monotonic() - started, 1),
    }


def run(peers: int = 4, window: float = 20.0, ledger_frames: int = 1_000_000) -> dict[str, Any]:
    return {"idle": idle(peers, window), "ledger": ledger_memory(ledger_frames)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--peers", type=int, default=4)
    parser.add_argument("--window", type=float, default=20.0)
    parser.add_argument("--ledger-frames", type=int, default=1_000_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = run(args.peers, args.window, args.ledger_frames)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
