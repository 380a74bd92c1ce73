"""A 100,000-frame job on the dashboard of a real daemon, in a real Chromium.

The job is real: a command scene that fails frames 5 and 13 (two: a peer stops taking a job
after three failures), rendered for a moment and paused, so the map has done, failed and pending
frames from the daemon's own ledger. The page must draw one cell per frame from the compact
frame-states answer, open a frame's details by click and by keyboard, and follow the job live by
repainting only the cells that changed. The time to the map's first paint is printed (the
issue asks for it under one second); the assert is loose, so a loaded machine does not fail it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from peerfarm.control import FrameQuery
from peerfarm.testing.daemons import Daemon, LocalFarm, wait_until
from tests.web.test_dashboard import click_frame, map_count

FRAMES = 100_000
_SCRIPT = """#!/bin/sh
case "$PEERFARM_FRAME" in 5|13) echo "frame $PEERFARM_FRAME is broken" >&2; exit 3;; esac
"""


@pytest.fixture(scope="module")
def solo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One real peer that renders command scenes."""
    root = tmp_path_factory.mktemp("bigfarm")
    with LocalFarm(root) as farm:
        (peer,) = farm.start_all(["solo"], web=True, allow_command=True)
        yield peer


def big_job(solo: Daemon, tmp_path: Path) -> str:
    script = tmp_path / "quick.sh"
    script.write_text(_SCRIPT)
    script.chmod(0o755)
    done = solo.cli(
        "submit", str(script), f"1-{FRAMES}", "--retries", "0", "--name", "big", "--no-output"
    )
    job = done.stdout.strip()
    wait_until(lambda: solo.job(job)["frames_done"] >= 30, 60.0, "some frames of the job done")
    solo.cli("pause", job)
    wait_until(lambda: solo.job(job)["frames_rendering"] == 0, 30.0, "the renders to stop")
    return job


def test_a_100k_frame_job_draws_as_a_map_and_follows_live(
    solo: Daemon, page: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = big_job(solo, tmp_path)
    summary = solo.job(job)
    assert summary["frames_total"] == FRAMES and summary["frames_failed"] > 0

    page.goto(f"{solo.url}/#job={job}")
    page.wait_for_function(
        "(n) => document.querySelector('#frames').dataset.count === String(n)",
        arg=FRAMES,
        timeout=30_000,
    )
    timing = page.evaluate(
        """() => {
          const paint = window.peerfarm.map.paints[0];
          const fetched = performance.getEntriesByType('resource')
            .find((e) => e.name.includes('/frame-states'));
          return { paint_at: paint.at, paint_ms: paint.ms,
                   states_bytes: fetched ? fetched.encodedBodySize : null,
                   states_ms: fetched ? fetched.responseEnd - fetched.startTime : null };
        }"""
    )
    with capsys.disabled():
        print(
            f"\n100,000-frame job: map painted {timing['paint_at']:.0f} ms after navigation "
            f"(the paint itself {timing['paint_ms']:.0f} ms; frame-states "
            f"{timing['states_bytes']} bytes in {timing['states_ms']:.0f} ms)"
        )
    assert timing["paint_at"] < 10_000  # loose: the figure above is what the issue measures

    # The map says what the ledger says, cell for cell in count.
    status = solo.job(job)
    assert map_count(page, "done") == status["frames_done"]
    assert map_count(page, "failed") == status["frames_failed"]
    assert map_count(page, "pending") == status["frames_pending"]
    failed = solo.status(job, FrameQuery(states=("failed",), limit=1))["frames"][0]["frame"]
    assert page.evaluate("(f) => window.peerfarm.map.stateOf(f)", failed) == "failed"

    # Hovering a cell names the frame and its state, then says more (fetched for it alone).
    point = page.evaluate("(f) => window.peerfarm.map.cellCenter(f)", failed)
    page.mouse.move(point["x"], point["y"])
    tip = page.locator("#frames .map-tip")
    tip.wait_for(state="visible")
    assert tip.inner_text().startswith(f"frame {failed} · failed")
    page.wait_for_function(
        "document.querySelector('#frames .map-tip').textContent.includes('status 3')"
    )

    # A click on a cell opens that frame's details, fetched for that frame alone.
    click_frame(page, failed)
    page.wait_for_selector(f'#frame-panel[data-frame="{failed}"]:not(.hidden)')
    page.wait_for_function("document.querySelector('#fp-state').innerText.trim() === 'failed'")
    assert page.locator("#fp-title").inner_text() == f"Frame {failed}"
    page.wait_for_function("document.querySelector('#fp-log').innerText.includes('is broken')")

    # The keyboard reaches every frame: the map takes focus, arrows move, Enter opens.
    page.focus("#frames canvas")
    page.keyboard.press("Home")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Enter")
    page.wait_for_selector('#frame-panel[data-frame="2"]:not(.hidden)')
    page.fill("#frame-goto", str(FRAMES))
    page.press("#frame-goto", "Enter")
    page.wait_for_selector(f'#frame-panel[data-frame="{FRAMES}"]:not(.hidden)')
    page.wait_for_function("document.querySelector('#fp-state').innerText.trim() === 'pending'")

    # Live: a resumed job's frames turn done on the map without a reload or a whole redraw,
    # and the page fetches only the frames that changed (never the whole map again).
    time.sleep(0.5)  # the layout settles (the panel opened beside the map)
    paints = page.evaluate("window.peerfarm.map.paints.length")
    fetched = page.evaluate("window.peerfarm.statesBytes")
    before = map_count(page, "done")
    solo.cli("resume", job)
    page.wait_for_function(
        "(n) => Number(document.querySelector('#frames').dataset.done) > n + 20",
        arg=before,
        timeout=60_000,
    )
    assert page.evaluate("window.peerfarm.map.paints.length") == paints, "the map was redrawn"
    changed = page.evaluate("window.peerfarm.map.lastUpdate.changed")
    assert 0 < changed < FRAMES
    more = page.evaluate("window.peerfarm.statesBytes") - fetched
    assert 20 < more < FRAMES, f"{more} state characters fetched for the live updates"
    assert page.evaluate("window.peerfarm.events") > 0
    solo.cli("cancel", job)
    page.wait_for_function("document.querySelector('#frames').dataset.rendering === '0'")
    done = solo.job(job)["frames_done"]
    assert map_count(page, "done") == done
