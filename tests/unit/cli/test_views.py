"""The CLI's human views, pure: renderer versions, why a job waits, what a verb says it did."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from peerfarm.cli.views import (
    encode_text,
    fetch_text,
    format_renderers,
    format_rendering,
    peers_table,
    retry_text,
    status_view,
    waiting_lines,
)


def test_every_blender_version_of_a_peer_is_shown() -> None:
    shown = format_renderers({"blender": ["3.4.1", "5.0.1"], "povray": "3.7"})
    assert shown == "blender 3.4.1/5.0.1, povray 3.7"
    assert format_renderers({"blender": "5.0.1"}) == "blender 5.0.1"  # an older peer's shape


JOB: dict[str, Any] = {
    "id": "0123456789abcdef",
    "name": "shot",
    "state": "active",
    "priority": 0,
    "frames_total": 4,
    "frames_done": 0,
    "frames_failed": 0,
    "frames_rendering": 0,
    "frames_pending": 4,
    "frames_delivered": 0,
    "submitted_by": "a",
    "submitted_by_id": "a" * 16,
    "submitted_at": 1.7e9,
    "output": "/out/shot",
    "renderer": "blender",
    "scene": "shot.blend",
    "chunk": 1,
    "eta_seconds": None,
    "seconds_rendered": 0.0,
    "banned": {},
    "waiting": {},
    "blocked": None,
}


def test_a_blocked_job_says_why_and_status_job_lists_every_peer() -> None:
    job = {
        **JOB,
        "waiting": {"a": "no blender", "b": "blender 3.4.1 is older than the file (5.0)"},
        "blocked": "no peer can render it: a: no blender; b: blender 3.4.1 is older ...",
    }
    assert waiting_lines(job) == [f"waits: {job['blocked']}"]
    assert waiting_lines(job, every_peer=True)[1:] == [
        "a: no blender",
        "b: blender 3.4.1 is older than the file (5.0)",
    ]
    console = Console(width=200, record=True)
    console.print(status_view({"peers": [], "jobs": [job], "archived": []}))
    text = console.export_text()
    assert "shot (0123456789)" in text and f"waits: {job['blocked']}" in text


def test_passing_reasons_show_only_while_nothing_of_the_job_renders() -> None:
    waiting = {"waiting": {"a": "its slot is busy"}, "blocked": None}
    assert waiting_lines({**JOB, **waiting}) == ["waits: a: its slot is busy"]
    busy = {**JOB, **waiting, "frames_rendering": 1}
    assert waiting_lines(busy) == []
    assert waiting_lines(JOB) == []
    older = {k: v for k, v in JOB.items() if k not in ("waiting", "blocked")}
    assert waiting_lines(older) == []  # a daemon before these keys


def test_what_peers_render_is_named_by_job_name_and_frame() -> None:
    rendering = [{"job": "0123456789abcdef", "name": "shot", "frame": 7}]
    assert format_rendering(rendering) == "shot:7"
    assert format_rendering([]) == "-"
    peer = {
        "id": "a" * 16, "name": "atlas", "address": "10.0.0.1:7946", "state": "alive",
        "slots": 2, "busy": 1, "renderers": {"povray": "3.7"}, "host": "h", "os": "Linux",
        "python": "3.11", "peerfarm": "0.1.0", "protocol": 1, "tags": [],
        "allow_command": False, "rendering": rendering,
    }  # fmt: skip
    console = Console(width=200, record=True)
    console.print(peers_table([peer]))
    assert "shot:7" in console.export_text()


def test_retry_fetch_and_encode_say_what_happened() -> None:
    answer = {"job": "j", "action": "retry", "state": "active", "changed": 3, "frames": 2}
    assert retry_text("shot", answer) == "retry: shot: 2 frame(s) queued again"
    older = {k: v for k, v in answer.items() if k != "frames"}  # a daemon before "frames"
    assert retry_text("shot", older) == "retry: shot: 3 frame(s) queued again"
    fetched = {"job": "j", "dest": "/out/shot", "files": 4}
    assert fetch_text(fetched) == "4 file(s) in /out/shot"
    encoded = {"job": "j", "video": "/out/shot.mp4", "frames": 48, "fps": 24.0}
    assert encode_text(encoded) == "/out/shot.mp4 (48 frames at 24 fps)"
    encoded["fps"] = 29.97
    assert encode_text(encoded) == "/out/shot.mp4 (48 frames at 29.97 fps)"


def _frame(n: int, state: str) -> dict[str, Any]:
    return {
        "frame": n,
        "state": state,
        "peer": None,
        "attempts": 0,
        "seconds": None,
        "delivered": False,
        "outputs": [],
        "error": None,
        "failures": 0,
    }


def _printed(status: dict[str, Any]) -> str:
    console = Console(width=200, record=True)
    console.print(status_view(status))  # type: ignore[arg-type]
    return console.export_text()


def test_a_big_jobs_status_lists_a_page_and_says_how_to_see_the_rest() -> None:
    job = {**JOB, "frames_total": 100_000, "frames_done": 40_000, "frames_pending": 60_000}
    page = {
        "frames": None,
        "states": ["pending", "rendering", "failed"],
        "limit": 60,
        "matched": 60_000,
        "returned": 60,
        "next": 40_061,
    }
    frames = [_frame(n, "pending") for n in range(40_001, 40_061)]
    text = _printed(
        {"peers": [], "jobs": [job], "archived": [], "frames": frames, "frames_page": page}
    )
    assert "Frames not done (60 of 60,000 shown)" in text
    assert "59,940 more from frame 40061: `peerfarm status 0123456789 --frames 40061-...`" in text
    assert text.count("pending") >= 60
    every_done = {**page, "matched": 0, "returned": 0, "next": None}
    text = _printed(
        {"peers": [], "jobs": [job], "archived": [], "frames": [], "frames_page": every_done}
    )
    assert "every frame is done: list them with `peerfarm status 0123456789 --frames" in text


def test_a_page_asked_for_is_shown_whole_with_what_was_asked_in_its_title() -> None:
    page = {
        "frames": "1-100",
        "states": ["failed"],
        "limit": None,
        "matched": 2,
        "returned": 2,
        "next": None,
    }
    frames = [_frame(7, "failed"), _frame(90, "failed")]
    text = _printed(
        {"peers": [], "jobs": [JOB], "archived": [], "frames": frames, "frames_page": page}
    )
    assert "Frames failed in 1-100 (2 of 2 shown)" in text and "more from" not in text


def test_a_daemon_without_pages_still_gets_the_frames_not_done_first() -> None:
    frames = [_frame(n, "done" if n % 2 else "pending") for n in range(1, 101)]
    text = _printed({"peers": [], "jobs": [JOB], "archived": [], "frames": frames})
    assert "Frames (50 of 100 shown)" in text


def test_a_split_still_is_counted_in_tiles() -> None:
    job = {**JOB, "tiles": 4, "tile_frame": 7, "frames_done": 3, "frames_pending": 1}
    tile = {
        "frame": 2,
        "state": "done",
        "peer": "b",
        "attempts": 1,
        "seconds": 0.4,
        "delivered": True,
        "outputs": [],
        "error": None,
        "failures": 0,
    }
    console = Console(width=200, record=True)
    console.print(status_view({"peers": [], "jobs": [job], "frames": [tile]}))
    text = console.export_text()
    assert "3/4 tiles" in text and "Tiles of frame 7 (1 of 1 shown)" in text
    assert "┃ tile" in text
    console = Console(width=200, record=True)
    console.print(status_view({"peers": [], "jobs": [JOB], "frames": [tile]}))
    text = console.export_text()
    assert "0/4 " in text and "tiles" not in text and "Frames (1 of 1 shown)" in text
