"""The benchmarks run once at a tiny size, so they cannot rot (issue 9).

The smoke run starts real daemons on 127.0.0.1 only (``--no-mdns``), Redis + RQ only when they
are already installed (``--no-install``), and stops every process it started.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bench import run
from bench.install import have_module
from peerfarm.testing.daemons import descendants


@pytest.mark.timeout(240)
def test_every_benchmark_runs_at_a_tiny_size(tmp_path: Path) -> None:
    status = run.main(["--quick", "--no-install", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "results.json").read_text())
    results = report["results"]
    errors = {k: v["error"] for k, v in results.items() if isinstance(v, dict) and "error" in v}
    assert errors == {}
    assert status == 0
    assert set(results) == set(run.ALL)

    sim = results["gossip"]["simulated"][0]
    assert sim["reached"] == sim["peers"] == 10
    assert 0 < results["gossip"]["real"]["visible_all_s"] < 10

    makespan = results["schedule"]["makespan"]
    assert makespan["peerfarm_s"] >= makespan["ideal_s"]  # nothing beats the ideal
    assert "submit --wait" in makespan["measured"] and len(makespan["peerfarm_runs_s"]) == 1
    dispatch = results["schedule"]["dispatch"]
    assert dispatch["peerfarm_fps"] > 0 and dispatch["spawn_ceiling_fps"] > 0
    steps = results["series"]["sizes"]
    assert [s["frames"] for s in steps] == [20, 60] and all(s["fps"] > 0 for s in steps)
    assert steps[0]["of_smallest"] == 1.0

    joined = results["joiner"]
    assert joined["frames"] == 300
    assert 0 < joined["joiner_ready_s"] <= joined["converged_s"] < 60

    fail = results["failover"]
    assert fail["new_peer"] not in (None, fail["killed_peer"])
    assert 0 < fail["reclaim_s"] < fail["lease_timeout_s"] + 10

    dup = results["duplicates"]
    assert dup["with_home"]["total_frame_s"] >= dup["frames"] * dup["seconds_per_frame"] - 1e-6

    idle = results["footprint"]["idle"]
    assert idle["peers"] == 3 and all(0 < mb < 1000 for mb in idle["rss_mb"])
    assert 0 < results["footprint"]["ledger"]["bytes_per_frame"] < 10_000

    blend = results["blender"]
    assert "skipped" in blend or blend["peer_s"] > 0
    assert report["table"] and "benchmark" in report["table"][0]
    if have_module("matplotlib"):
        assert (tmp_path / "results.png").stat().st_size > 10_000
    # every daemon, renderer and RQ process is gone
    assert descendants(os.getpid()) == []
