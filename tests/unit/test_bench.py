"""The benchmarks' pure parts: the duplicate count and the results table."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from bench import run
from bench.duplicates import duplicated_seconds
from peerfarm.testing import RenderRecord


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


def test_the_rq_job_module_imports_no_test_tooling() -> None:
    """RQ's fork worker imports the job's module in each job's fresh process: the package it
    lives in must not pull in the daemons' test tooling (it once cost 0.4 s a job, and the
    fork baseline's 1,000 frames ran for minutes)."""
    probe = "import json, sys; import bench.rq_tasks; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = set(json.loads(done.stdout))
    heavy = {m for m in loaded if m.split(".")[0] in {"trio", "pytest", "_pytest", "rich"}}
    heavy |= {m for m in loaded if m.startswith("peerfarm.testing")}
    assert not heavy, sorted(heavy)[:8]
