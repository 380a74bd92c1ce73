"""The benchmarks run once at a tiny size, so they cannot rot (issue 9); plus their pure parts.

The smoke run starts real daemons on 127.0.0.1 only (``--no-mdns``), Redis + RQ only when they
are already installed (``--no-install``), and stops every process it started.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from bench import gossip, run
from bench.daemons import descendants
from bench.duplicates import duplicated_seconds
from bench.install import have_module
from peerfarm.testing import RenderRecord


def test_gossip_sim_reaches_everyone_deterministically() -> None:
    first = gossip.simulate(60, seed=7)
    again = gossip.simulate(60, seed=7)
    assert first.reached == 60
    assert 0 < first.t99_s <= first.t100_s < gossip.TARGET_FULL_S
    assert 0 < first.max_bytes_per_peer_s <= gossip.BUDGET_BYTES_PER_S
    assert (first.t100_s, first.datagrams) == (again.t100_s, again.datagrams)


def test_duplicated_seconds_counts_all_but_one_completed_render_per_frame() -> None:
    records = [
        RenderRecord("a", "j", 1, 0.0, 1.0, completed=True),
        RenderRecord("b", "j", 1, 0.0, 0.4),  # lost the claim, stopped
        RenderRecord("b", "j", 2, 1.0, 2.0, completed=True),
        RenderRecord("c", "j", 2, 1.0, 2.0, completed=True),  # rendered twice to the end
        RenderRecord("c", "j", 3, 2.0, 3.0, completed=True),
    ]
    duplicated, total, twice = duplicated_seconds(records)
    assert total == pytest.approx(4.4)
    assert duplicated == pytest.approx(1.4)
    assert twice == 2


def test_table_marks_missed_targets() -> None:
    results: dict[str, Any] = {
        "failover": {"reclaim_s": 12.5, "lease_timeout_s": 10.0, "target_s": 11.0},
        "duplicates": {
            "peers": 8,
            "with_home": {"fraction": 0.001},
            "without_home": {"fraction": 0.05},
        },
        "blender": {"error": "BenchError: boom"},
    }
    rows = {r[0]: r for r in run.table_rows(results)}
    assert rows["failover (SIGKILL)"][4] == "MISSED"
    assert rows["duplicates 8 peers"][4] == "ok"
    assert rows["blender"][4] == "FAILED"


@pytest.mark.timeout(150)
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
    dispatch = results["schedule"]["dispatch"]
    assert dispatch["peerfarm_fps"] > 0 and dispatch["spawn_ceiling_fps"] > 0

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
