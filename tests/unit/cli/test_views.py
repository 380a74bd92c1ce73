"""The CLI's human views, pure: renderer versions and why a job waits."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from peerfarm.cli import format_renderers, status_view, waiting_lines


def test_every_blender_version_of_a_peer_is_shown() -> None:
    shown = format_renderers({"blender": ["3.4.1", "5.0.1"], "povray": "3.7"})
    assert shown == "blender 3.4.1/5.0.1, povray 3.7"
    assert format_renderers({"blender": "5.0.1"}) == "blender 5.0.1"  # an older peer's shape


JOB: dict[str, Any] = {
    "id": "0123456789abcdef",
    "name": "shot",
    "state": "active",
    "frames_total": 4,
    "frames_done": 0,
    "frames_rendering": 0,
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
    console.print(status_view({"peers": [], "jobs": [job]}))
    text = console.export_text()
    assert "shot (0123456789)" in text and f"waits: {job['blocked']}" in text


def test_passing_reasons_show_only_while_nothing_of_the_job_renders() -> None:
    waiting = {"waiting": {"a": "its slot is busy"}, "blocked": None}
    assert waiting_lines({**JOB, **waiting}) == ["waits: a: its slot is busy"]
    assert waiting_lines({**JOB, **waiting, "frames_rendering": 1}) == []
    assert waiting_lines({**JOB, "waiting": {}, "blocked": None}) == []
    assert waiting_lines(JOB) == []  # a daemon that predates these keys
