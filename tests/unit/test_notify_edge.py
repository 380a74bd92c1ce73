"""The notification edge's pure parts: the desktop command per platform, the sent journal."""

from __future__ import annotations

from pathlib import Path

import pytest

from peerfarm.peer import notify


def test_desktop_command_per_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    have = {"notify-send", "osascript", "powershell"}
    monkeypatch.setattr(notify.shutil, "which", lambda name: name if name in have else None)
    assert notify.desktop_argv("peerfarm: shot done", "4 of 4", "linux") == [
        "notify-send",
        "peerfarm: shot done",
        "4 of 4",
    ]
    mac = notify.desktop_argv('a "quoted" title', "text", "darwin")
    assert mac is not None and mac[:2] == ["osascript", "-e"]
    assert '"a \\"quoted\\" title"' in mac[2]  # JSON quoting keeps AppleScript strings closed
    win = notify.desktop_argv("it's done", "text", "win32")
    assert win is not None and win[0] == "powershell" and "it''s done" in win[-1]
    have.clear()
    assert notify.desktop_argv("t", "x", "linux") is None


def test_the_sent_journal_reads_back(tmp_path: Path) -> None:
    path = tmp_path / notify.JOURNAL_FILE
    assert notify.read_journal(path) == set()
    path.write_text("a:0:done\n\nb:3:failed\n")
    assert notify.read_journal(path) == {"a:0:done", "b:3:failed"}
