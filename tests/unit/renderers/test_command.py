"""The command renderer, pure: the interpreter from the shebang and progress lines."""

from __future__ import annotations

from pathlib import Path

from peerfarm.renderers.base import (
    Progress,
)
from peerfarm.renderers.command import CommandRenderer, interpreter_argv


def test_interpreter_argv_uses_the_shebang() -> None:
    script = Path("/s/render")
    assert interpreter_argv(b"#!/usr/bin/env python3 -u", script) == [
        "/usr/bin/env",
        "python3",
        "-u",
        "/s/render",
    ]
    assert interpreter_argv(b"echo hi", script) == ["/bin/sh", "/s/render"]


def test_parse_line_reads_progress_lines() -> None:
    renderer = CommandRenderer()
    assert renderer.parse_line("PROGRESS 50%") == Progress(None, 0.5, "PROGRESS 50%")
    assert renderer.parse_line("PROGRESS 0.25") == Progress(None, 0.25, "PROGRESS 0.25")
    assert renderer.parse_line("hello") is None
