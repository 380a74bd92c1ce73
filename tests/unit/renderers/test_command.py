"""The command renderer, pure: the interpreter from the shebang and progress lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from peerfarm.renderers.base import (
    Progress,
    RenderFailed,
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


def _which(name: str) -> str | None:
    programs = {"sh": "/bin/sh", "cmd.exe": r"C:\Windows\cmd.exe", "pwsh": "/usr/bin/pwsh"}
    programs |= {"powershell": r"C:\PS\powershell.exe", "python3": r"C:\Py\python3.exe"}
    return programs.get(name)


@pytest.mark.parametrize("windows", [False, True])
def test_the_suffix_names_the_interpreter(windows: bool) -> None:
    def argv(name: str, first: bytes = b"") -> list[str]:
        script = Path("/job dir") / name
        return interpreter_argv(first, script, windows=windows, python="/py", which=_which)

    assert argv("frame.py") == ["/py", "/job dir/frame.py"]
    # A .sh keeps its #! interpreter; on Windows one PATH lacks (no bash here) falls back to sh.
    bash = "/bin/sh" if windows else "/bin/bash"
    assert argv("frame.sh", b"#!/bin/bash") == [bash, "/job dir/frame.sh"]
    assert argv("frame.sh") == ["/bin/sh", "/job dir/frame.sh"]
    shell = r"C:\PS\powershell.exe" if windows else "/usr/bin/pwsh"
    flags = ["-NoProfile", "-ExecutionPolicy", "Bypass", "-File"]
    assert argv("f.PS1") == [shell, *flags, "/job dir/f.PS1"]
    if windows:
        assert argv("f.bat") == [r"C:\Windows\cmd.exe", "/d", "/c", "/job dir/f.bat"]
        assert argv("f", b"#!/usr/bin/env python3 -u") == [r"C:\Py\python3.exe", "-u", "/job dir/f"]
        assert argv("f") == ["/bin/sh", "/job dir/f"]
    else:
        with pytest.raises(RenderFailed, match="needs a Windows peer"):
            argv("f.cmd")


def test_a_missing_interpreter_is_a_clear_render_failure() -> None:
    with pytest.raises(RenderFailed, match="no pwsh"):
        interpreter_argv(b"", Path("f.ps1"), which=lambda _name: None)
    with pytest.raises(RenderFailed, match="no sh"):
        interpreter_argv(b"", Path("f.sh"), windows=True, which=lambda _name: None)


def test_parse_line_reads_progress_lines() -> None:
    renderer = CommandRenderer()
    assert renderer.parse_line("PROGRESS 50%") == Progress(None, 0.5, "PROGRESS 50%")
    assert renderer.parse_line("PROGRESS 0.25") == Progress(None, 0.25, "PROGRESS 0.25")
    assert renderer.parse_line("hello") is None
