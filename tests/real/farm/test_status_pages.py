"""Issue 19: a job's frames page by range and state, through the real CLI and the real API of a
real daemon; the job's counts stay whole whatever the page."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from peerfarm.client import read_control_file
from peerfarm.control import FramePage
from peerfarm.testing.daemons import LocalFarm, wait_until

# Frames 3 and 8 fail (two: a peer stops taking a job after three failures); the rest succeed.
SCRIPT = """#!/bin/sh
case "$PEERFARM_FRAME" in 3|8) echo "frame $PEERFARM_FRAME is broken" >&2; exit 3;; esac
"""


def test_status_job_frames_and_state_pages(farm: LocalFarm, tmp_path: Path) -> None:
    peer = farm.start("pages", "--allow-command")
    scene = tmp_path / "pages.sh"
    scene.write_text(SCRIPT)
    scene.chmod(0o755)
    job = peer.cli_json(
        "submit", str(scene), "1-30", "--retries", "0", "--name", "pages", "--no-output"
    )["job"]

    def ended() -> bool:
        summary = peer.job(job)
        return summary["frames_done"] + summary["frames_failed"] == 30

    wait_until(ended, 60, "every frame done or failed")

    # The CLI: --frames 1-10 lists exactly those, titled so; the summary stays whole.
    shown = peer.cli("status", job, "--frames", "1-10").stdout
    assert "Frames in 1-10 (10 of 10 shown)" in shown
    rows = [line.split("│")[1].strip() for line in shown.splitlines() if line.startswith("│ ")]
    frame_rows = [int(r) for r in rows if r.isdigit() and int(r) <= 30]
    assert frame_rows == list(range(1, 11))
    assert "28/30" in shown
    paged = peer.cli_json("status", job, "--frames", "1-10")
    assert [f["frame"] for f in paged["frames"]] == list(range(1, 11))
    assert paged["frames_page"]["matched"] == 10 and paged["frames_page"]["next"] is None
    assert paged["jobs"][0]["frames_total"] == 30 and paged["jobs"][0]["frames_done"] == 28
    failed_text = peer.cli("status", job, "--state", "failed").stdout
    assert "Frames failed (2 of 2 shown)" in failed_text and "status 3" in failed_text

    # The API: ?state=failed gives the failed frames alone, with the page's shape.
    info = read_control_file(peer.data_dir)
    response = httpx.get(
        f"{info.url}/api/status",
        params={"job": job, "state": "failed"},
        headers={"Authorization": f"Bearer {info.token}"},
        timeout=10.0,
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert [(f["frame"], f["state"]) for f in answer["frames"]] == [(3, "failed"), (8, "failed")]
    assert all("status 3" in (f["error"] or "") for f in answer["frames"])
    page = answer["frames_page"]
    assert set(page) == set(FramePage.__required_keys__)
    assert (page["states"], page["matched"], page["returned"], page["next"]) == (
        ["failed"],
        2,
        2,
        None,
    )
    assert answer["jobs"][0]["frames_failed"] == 2 and answer["jobs"][0]["frames_total"] == 30

    # Mistakes: one line, exit 2, nothing else.
    bad = peer.cli("status", job, "--state", "broken", check=False)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("peerfarm: bad frame state")
    no_job = peer.cli("status", "--frames", "1-3", check=False)
    assert no_job.returncode == 2 and "need a JOB" in no_job.stderr
    assert json.loads(peer.cli("status", job, "--json", "--limit", "0").stdout)["frames"] == []
