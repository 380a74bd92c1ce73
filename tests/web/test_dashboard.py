"""The dashboard in a real browser against real daemons (three ``peerfarm up`` on loopback).

What a user sees and does: a job submitted by the CLI on one peer shows up and advances live on
another peer's page (no reload: server-sent events drive it); a cancel clicked on a page stops
the job on every peer; a scene uploaded through the page renders to completion. The upload test
also takes the screenshot in docs/dashboard.png while the render runs (written there only with
``PEERFARM_UPDATE_SCREENSHOT=1``, so a test run does not dirty the work tree).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from peerfarm.frames import parse_frames
from peerfarm.testing.daemons import Daemon, LocalFarm, wait_until
from tests.support import ROOT
from tests.support.blends import future_example

SCREENSHOT = ROOT / "docs" / "dashboard.png"
POVRAY_EXAMPLE = ROOT / "examples" / "povray"

# A command-renderer scene: logs when each frame starts and ends, takes SLEEP seconds, and
# leaves a small image whose colour depends on the frame.
_SCRIPT = """#!/bin/sh
set -eu
frame=$PEERFARM_FRAME
echo "start $frame" >> "{marks}"
echo "rendering frame $frame"
sleep {sleep}
red=$(( (frame * 37) % 256 )); green=$(( (frame * 91) % 256 )); blue=$(( 255 - red ))
pixel=$(printf '\\\\%03o\\\\%03o\\\\%03o' "$red" "$green" "$blue")
file="$PEERFARM_OUTPUT_DIR/frame.ppm"
printf 'P6\\n16 12\\n255\\n' > "$file"
i=0
while [ "$i" -lt 192 ]; do printf "$pixel"; i=$((i + 1)); done >> "$file"
echo "end $frame" >> "{marks}"
echo "PROGRESS 100%"
"""


def make_script(path: Path, *, sleep: float, marks: Path) -> Path:
    path.write_text(_SCRIPT.format(sleep=sleep, marks=marks))
    path.chmod(0o755)
    marks.touch()
    return path


def marks_of(marks: Path, kind: str) -> list[int]:
    return [
        int(w[1]) for w in (line.split() for line in marks.read_text().splitlines()) if w[0] == kind
    ]


def row_selector(job: str) -> str:
    return f'#jobs tbody tr[data-job="{job}"]'


def wait_done_above(page: Any, job: str, count: int, timeout_ms: int = 40_000) -> None:
    page.wait_for_function(
        """([sel, n]) => { const r = document.querySelector(sel);
                           return r !== null && Number(r.dataset.done) > n; }""",
        arg=[row_selector(job), count],
        timeout=timeout_ms,
    )


def click_frame(page: Any, frame: int) -> None:
    """Click a frame's cell on the frame map, as a user does (scrolled into view first)."""
    point = page.evaluate("(f) => window.peerfarm.map.cellCenter(f)", frame)
    assert point is not None, f"frame {frame} is not on the map"
    page.mouse.click(point["x"], point["y"])


def map_count(page: Any, state: str) -> int:
    """How many cells of the frame map show ``state`` (or every cell: ``count``)."""
    return int(page.get_attribute("#frames", f"data-{state}") or "0")


def open_dashboard(page: Any, peer: Daemon, fragment: str = "") -> None:
    page.goto(f"{peer.url}/{fragment}")
    page.wait_for_selector("#live[data-state=live]")
    page.wait_for_selector("#peers tbody tr")
    page.evaluate("window.__sameDocument = true")


def log_in_with_a_link(page: Any, farm: LocalFarm, peer: Daemon, fragment: str = "") -> None:
    """What a user does: run `peerfarm dashboard` on the peer and open the link it prints."""
    done = peer.cli("dashboard", check=False)
    assert done.returncode == 0, done.stderr
    link = done.stdout.strip()
    assert link.startswith(f"{peer.url}/?login=")
    page.goto(link + fragment)
    page.wait_for_selector("#logout:not(.hidden)")  # the code became a session...
    assert "login=" not in page.url  # ...and left the address bar
    page.wait_for_selector("#live[data-state=live]")
    page.wait_for_selector("#peers tbody tr")
    page.evaluate("window.__sameDocument = true")


def test_cli_job_appears_and_advances_live_on_another_peer(
    farm: LocalFarm, page: Any, tmp_path: Path
) -> None:
    atlas, birch, _ = farm.daemons
    open_dashboard(page, birch)
    peer_rows = page.locator("#peers tbody tr")
    assert sorted(peer_rows.evaluate_all("rows => rows.map(r => r.dataset.peer)")) == [
        "atlas", "birch", "cedar",
    ]  # fmt: skip
    assert page.locator('#peers tr[data-peer="atlas"] .chip').inner_text() == "alive"
    assert "command" in page.locator('#peers tr[data-peer="cedar"]').inner_text()

    marks = tmp_path / "marks"
    script = make_script(tmp_path / "comp_pass.sh", sleep=0.6, marks=marks)
    job = farm.submit(atlas, script, "1-20")

    row = page.locator(row_selector(job))
    row.wait_for(timeout=15_000)  # it appears on birch's page without a reload
    first = int(row.get_attribute("data-done") or "0")
    assert first < 20, "the job finished before the page saw it: make frames slower"
    assert "comp_pass" in row.inner_text()
    row.locator(".job-name").click()
    page.wait_for_selector(f'#detail[data-job="{job}"]')

    wait_done_above(page, job, first)  # the count advances live...
    page.wait_for_function(  # ...to the end, and the frame map follows
        """([sel]) => { const r = document.querySelector(sel);
             return r && r.dataset.state === 'done' && r.dataset.done === '20'
               && document.querySelector('#frames').dataset.done === '20'; }""",
        arg=[row_selector(job)],
        timeout=40_000,
    )
    assert page.evaluate("window.__sameDocument") is True, "the page was reloaded"
    assert page.evaluate("window.peerfarm.events") > 0, "no server-sent event arrived"
    assert row.locator(".job-eta").inner_text() == "done"
    assert map_count(page, "count") == 20

    click_frame(page, 7)
    page.wait_for_function(
        """() => { const i = document.querySelector('#fp-thumb img');
                   return i !== null && i.complete && i.naturalWidth === 16; }"""
    )
    expected_peer = birch.status(job)["frames"][6]["peer"]
    assert expected_peer in {"atlas", "birch", "cedar"}
    assert page.locator("#fp-peer").inner_text() == expected_peer
    assert page.locator("#fp-title").inner_text() == "Frame 7"
    assert page.locator("#fp-state").inner_text() == "done"
    assert set(marks_of(marks, "end")) == set(range(1, 21))


def test_cancel_clicked_on_the_page_stops_the_job_on_every_peer(
    farm: LocalFarm, page: Any, tmp_path: Path
) -> None:
    atlas, _, cedar = farm.daemons
    marks = tmp_path / "marks"
    script = make_script(tmp_path / "long_sim.sh", sleep=1.5, marks=marks)
    job = farm.submit(atlas, script, "1-60")
    open_dashboard(page, cedar, f"#job={job}")
    row = page.locator(row_selector(job))
    row.wait_for(timeout=15_000)
    wait_done_above(page, job, 0)  # renders are under way on the farm

    # Not logged in: the click asks for a login and cancels nothing (loopback is no proof).
    page.once("dialog", lambda dialog: dialog.accept())
    row.locator('button[data-action="cancel"]').click()
    page.wait_for_selector("#login-dialog", state="visible")
    assert "peerfarm dashboard" in page.locator("#login-dialog").inner_text()
    assert cedar.job(job)["state"] == "active"

    log_in_with_a_link(page, farm, cedar, f"#job={job}")
    row.wait_for(timeout=15_000)
    page.once("dialog", lambda dialog: dialog.accept())
    row.locator('button[data-action="cancel"]').click()

    def cancelled_everywhere() -> bool:
        return all(peer.job(job)["state"] == "cancelled" for peer in farm.daemons)

    try:
        wait_until(cancelled_everywhere, 15.0, "every peer to show the job cancelled")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{farm.logs()}") from None
    started = marks_of(marks, "start")
    ended = marks_of(marks, "end")
    done = {peer.name: peer.job(job)["frames_done"] for peer in farm.daemons}
    assert len(started) < 60 and done["atlas"] < 60
    # Renders take 1.5 s: one that was not stopped would end within this, and a frame claimed
    # after the cancel would start.
    time.sleep(3.5)
    assert marks_of(marks, "start") == started, "a frame started after the cancel"
    assert marks_of(marks, "end") == ended, "a render went on after the cancel"
    for peer in farm.daemons:
        after = peer.job(job)
        assert after["state"] == "cancelled", peer.name
        assert after["frames_done"] == done[peer.name], peer.name

    page.wait_for_selector(f'{row_selector(job)}[data-state="cancelled"]')
    assert row.locator('button[data-action="cancel"]').is_disabled()
    page.wait_for_function("document.querySelector('#frames').dataset.rendering === '0'")
    assert "long_sim" not in page.locator("#peers tbody").inner_text()  # no peer renders it
    assert page.evaluate("window.__sameDocument") is True


def _upload_scene(tmp_path: Path) -> tuple[Path, str, str, str]:
    """(scene file, renderer, frames, options): POV-Ray's example if povray is here."""
    if shutil.which("povray") and POVRAY_EXAMPLE.is_dir():
        # One self-contained .pov: the example with its include inlined.
        include = '#include "spin_colors.inc"'
        text = (POVRAY_EXAMPLE / "spin.pov").read_text()
        assert include in text
        colours = (POVRAY_EXAMPLE / "spin_colors.inc").read_text()
        scene = tmp_path / "spin.pov"
        scene.write_text(text.replace(include, colours))
        return scene, "povray", "1-24", "width=480\nheight=360"
    marks = tmp_path / "marks"
    return make_script(tmp_path / "spin.sh", sleep=0.5, marks=marks), "command", "1-18", ""


def test_scene_uploaded_through_the_page_renders_to_completion(
    farm: LocalFarm, page: Any, tmp_path: Path
) -> None:
    atlas = farm.daemons[0]
    scene, renderer, frames, options = _upload_scene(tmp_path)
    total = len(parse_frames(frames))
    log_in_with_a_link(page, farm, atlas)
    page.click("#open-upload")
    page.set_input_files("#up-scene", str(scene))
    page.fill("#up-frames", frames)
    page.select_option("#up-renderer", renderer)
    page.fill("#up-name", "spin")
    page.fill("#up-options", options)
    assert page.evaluate("location.hash") == ""
    page.click("#upload-submit")
    page.wait_for_selector("#upload-dialog", state="hidden")
    page.wait_for_function("location.hash.startsWith('#job=')")  # the page selects the new job
    job = page.evaluate("decodeURIComponent(location.hash.slice(5))")
    page.wait_for_selector(f'#detail[data-job="{job}"]:not(.hidden)')
    assert atlas.job(job)["renderer"] == renderer
    assert atlas.job(job)["frames_total"] == total

    # A screenshot while it renders: a few frames done, the panel open on one of them.
    wait_done_above(page, job, total // 3)
    click_frame(page, page.evaluate("window.peerfarm.map.framesIn('done').pop()"))
    page.wait_for_function(
        """() => { const i = document.querySelector('#fp-thumb img');
                   return i !== null && i.complete && i.naturalWidth > 0; }"""
    )
    page.mouse.move(0, 0)  # no hover effects in the picture
    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    state = page.locator(row_selector(job)).get_attribute("data-state")
    assert state == "active", "the render finished before the screenshot"
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 20_000
    if os.environ.get("PEERFARM_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)

    page.wait_for_function(
        """([sel, n]) => { const r = document.querySelector(sel);
             return r && r.dataset.state === 'done' && r.dataset.done === String(n); }""",
        arg=[row_selector(job), total],
        timeout=90_000,
    )
    page.wait_for_function(f"document.querySelector('#frames').dataset.done === '{total}'")
    status = atlas.status(job)
    assert all(f["state"] == "done" for f in status["frames"])
    assert page.locator(f'{row_selector(job)} a[data-link="archive"]').count() == 1
    assert page.locator(f'{row_selector(job)} a[data-link="video"]').count() == 1


def test_a_job_no_peer_can_render_says_why_on_its_row_and_in_the_frame_panel(
    farm: LocalFarm, page: Any, tmp_path: Path
) -> None:
    """A .blend claiming Blender 9.0 saved it: every peer's Blender is older (or it has none)."""
    atlas, _, cedar = farm.daemons
    scene = future_example(tmp_path / "future")
    done = atlas.cli("submit", str(scene), "1-3", "--json", check=False)
    assert done.returncode == 0, done.stderr
    assert "no peer can render it" in done.stderr  # submit warns on stderr
    job = str(json.loads(done.stdout)["job"])
    try:
        open_dashboard(page, cedar, f"#job={job}")
        row = page.locator(f'{row_selector(job)}[data-blocked="yes"]')
        row.wait_for(timeout=15_000)
        text = row.locator(".job-wait").inner_text()
        assert text.startswith("waits: no peer can render it: ")
        assert "older than the file (9.0)" in text or "no blender" in text
        page.wait_for_selector(f'#detail[data-job="{job}"]:not(.hidden)')
        page.wait_for_selector("#frames[data-paints]")
        click_frame(page, 2)
        panel = page.locator("#fp-waiting:not(.hidden)")
        panel.wait_for(timeout=10_000)
        assert "no peer can render it" in panel.locator(".blocked").inner_text()
        peers = panel.locator("li").evaluate_all("items => items.map(i => i.textContent)")
        assert sorted(line.split(":")[0] for line in peers) == ["atlas", "birch", "cedar"]
        assert all("9.0" in line or "no blender" in line for line in peers)
    finally:
        atlas.cli("cancel", job, check=False)  # leave nothing waiting for the other tests


def test_names_with_control_characters_are_shown_escaped(
    farm: LocalFarm, page: Any, tmp_path: Path
) -> None:
    atlas, birch, _ = farm.daemons
    script = make_script(tmp_path / "esc.sh", sleep=0.1, marks=tmp_path / "marks")
    name = "esc\x1b[31mred\u202eflip[/]<b>x</b>"
    job = farm.submit(atlas, script, "1-2", name=name)
    open_dashboard(page, birch, f"#job={job}")
    shown = page.locator(f"{row_selector(job)} .job-name b")
    shown.wait_for(timeout=15_000)
    assert shown.inner_text() == "esc\\x1b[31mred\\u202eflip[/]<b>x</b>"
    page.wait_for_selector(f'#detail[data-job="{job}"]:not(.hidden)')
    assert page.locator("#detail-title").inner_text() == "esc\\x1b[31mred\\u202eflip[/]<b>x</b>"
    assert page.locator(f"{row_selector(job)} .job-name b *").count() == 0  # no markup ran


def test_logout_ends_the_session_and_the_next_action_asks_for_a_login(
    farm: LocalFarm, page: Any, tmp_path: Path
) -> None:
    atlas = farm.daemons[0]
    script = make_script(tmp_path / "wait.sh", sleep=5, marks=tmp_path / "marks")
    job = farm.submit(atlas, script, "1-4", name="to-pause")
    log_in_with_a_link(page, farm, atlas, f"#job={job}")
    key = page.evaluate("localStorage.getItem('peerfarm-action-key')")
    row = page.locator(row_selector(job))
    row.locator('button[data-action="pause"]').click()
    page.wait_for_selector(f'{row_selector(job)}[data-state="paused"]')
    page.click("#logout")
    page.wait_for_selector("#logout", state="hidden")
    # The key the page held is dead on the server, not only forgotten by the page.
    import httpx

    stale = httpx.post(f"{atlas.url}/api/jobs/{job}/resume", timeout=5.0,
                       headers={"X-Peerfarm": "1", "X-Peerfarm-Key": key})  # fmt: skip
    assert stale.status_code == 401
    row.locator('button[data-action="resume"]').click()
    page.wait_for_selector("#login-dialog", state="visible")
    assert atlas.job(job)["state"] == "paused"
    atlas.cli("cancel", job, check=False)


@pytest.mark.parametrize("path", ["/", "/static/app.js", "/static/style.css"])
def test_the_page_and_its_files_are_served_locally(farm: LocalFarm, path: str) -> None:
    import httpx

    response = httpx.get(farm.daemons[0].url + path, timeout=5.0)
    assert response.status_code == 200
    assert "http://" not in response.text.replace("http://127.0.0.1", "")  # no CDN


def test_hold_drain_and_release_buttons_act_on_another_peer(
    farm: LocalFarm, page: Any, tmp_path: Path
) -> None:
    atlas, birch, cedar = farm.daemons
    log_in_with_a_link(page, farm, birch)
    row = page.locator('#peers tr[data-peer="cedar"]')
    row.locator('button[data-host-action="hold"]').click()
    row.locator(".chip.held").wait_for(timeout=10_000)
    assert row.locator(".chip.held").inner_text() == "held by birch"
    wait_until(
        lambda: any(p.get("availability") == "held by birch" for p in cedar.peers()
                    if p["name"] == "cedar"),
        5,
        "cedar sees its hold",
    )  # fmt: skip
    row.locator('button[data-host-action="release"]').click()
    page.wait_for_function(
        """() => !document.querySelector('#peers tr[data-peer="cedar"] .chip.held')""",
        timeout=10_000,
    )
    page.once("dialog", lambda dialog: dialog.accept())
    row.locator('button[data-host-action="drain"]').click()
    row.locator(".chip.held").wait_for(timeout=10_000)
    assert row.locator(".chip.held").inner_text() == "drained by birch"
    row.locator('button[data-host-action="release"]').click()
    page.wait_for_function(
        """() => !document.querySelector('#peers tr[data-peer="cedar"] .chip.held')""",
        timeout=10_000,
    )
    assert all(not p.get("availability") for p in atlas.peers())
