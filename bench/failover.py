"""Failover benchmark (issue 4): SIGKILL a rendering peer, time until its frame is claimed again.

    python bench/failover.py [--peers 4] [--preset lan] [--json OUT]

``peers`` real daemons on loopback render a job of ``peers - 1`` long frames (at least one peer
stays idle, so a slot is free for the takeover). As soon as a peer that did not submit renders a
frame, it is killed with SIGKILL (with its renders). Measured: seconds from the kill
until the submitter's ``status`` shows that frame rendering again on another peer, against the
preset's configured lease timeout. Target: within lease timeout + 1 s.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import BenchError, local_farm
from peerfarm.daemon import config_for
from peerfarm.testing.daemons import LocalFarm, wait_until


def run(peers: int = 4, preset: str = "lan", farm: LocalFarm | None = None) -> dict[str, Any]:
    if (farm is None and peers < 3) or (farm is not None and len(farm.daemons) < 3):
        raise BenchError("failover needs at least 3 peers")
    config = config_for(preset if farm is None else farm.preset)
    own = farm is None
    farm = farm or local_farm(peers, preset=preset)
    try:
        origin = farm.daemons[0]
        # One frame per other peer, so every survivor has a free slot for the victim's frame.
        # (Frames homed on a busy submitter are taken by idle peers: an unknown frame time
        # counts as long in the planner.)
        count = len(farm.daemons) - 1
        script = farm.script("long.sh", 'sleep 120\n: > "$PEERFARM_OUTPUT_DIR/out"')
        job = farm.submit(origin, script, f"1-{count}", name="failover")

        others = {d.name for d in farm.daemons[1:]}

        def victim_rendering() -> list[dict[str, Any]] | None:
            # Not "every frame rendering": the planner lets a frame wait for its busy home
            # peer rather than be stolen, so with long frames one may stay pending.
            frames = origin.status(job)["frames"]
            if any(f["state"] == "rendering" and f["peer"] in others for f in frames):
                return list(frames)
            return None

        frames = wait_until(victim_rendering, 60, "a non-submitting peer to render")
        frame, name = next(
            (f["frame"], f["peer"]) for f in frames
            if f["state"] == "rendering" and f["peer"] in others
        )
        victim = next(d for d in farm.daemons if d.name == name)
        killed_at = time.monotonic()
        victim.kill()

        def reclaimed() -> dict[str, Any] | None:
            for f in origin.status(job)["frames"]:
                if f["frame"] == frame and f["state"] == "rendering" and f["peer"] != victim.name:
                    return dict(f)
            return None

        taken = wait_until(reclaimed, config.lease_timeout * 4 + 30,
                           f"frame {frame} to be claimed again", interval=0.02)
        took = time.monotonic() - killed_at
        origin.client().act(job, "cancel")
        return {
            "peers": len(farm.daemons),
            "preset": farm.preset,
            "lease_timeout_s": config.lease_timeout,
            "reclaim_s": round(took, 3),
            "target_s": config.lease_timeout + 1.0,
            "frame": frame,
            "killed_peer": victim.name,
            "new_peer": taken["peer"],
            "attempt": taken["attempts"],
        }
    finally:
        if own:
            farm.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--peers", type=int, default=4)
    parser.add_argument("--preset", default="lan", choices=["lan", "wan", "fast"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = run(args.peers, args.preset)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
