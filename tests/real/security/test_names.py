"""Names are plain text everywhere (issue 17, item 7): real daemons, the real CLI.

A job named ``[/]`` used to make ``peerfarm status`` fail on every peer (Rich read it as markup)
until the job was archived; escape sequences in job and peer names reached the terminal and the
log. Now every name is shown as written, with control characters as visible escapes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from peerfarm.testing.daemons import LocalFarm, wait_until

ESC_NAME = "evil\x1b[2J\x1b[31mred\u202eflip\rover"
SHOWN = "evil\\x1b[2J\\x1b[31mred\\u202eflip\\rover"
PEER_NAME = "[bold red]peer[/]\x1b]0;pwned\x07"


def _script(tmp_path: Path) -> Path:
    scene = tmp_path / "quick.sh"
    scene.write_text('#!/bin/sh\necho "[/] \\033[31m done" > "$PEERFARM_OUTPUT_DIR/out.txt"\n')
    return scene


def test_markup_and_escape_sequences_in_names_are_shown_as_plain_text(
    farm: LocalFarm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # Rich tables: wide enough to show names whole
    a = farm.start("a", "--allow-command")
    b = farm.start("b", "--allow-command", "--name", PEER_NAME, join=a)
    wait_until(lambda: len(a.alive_names()) == 2, 20, "two peers")
    scene = _script(tmp_path)
    jobs = []
    for name in ("[/]", "[bold]x[/bold", ESC_NAME):
        submitted = a.cli("submit", str(scene), "1-2", "--renderer", "command", "--name", name,
                          "--output", str(tmp_path / f"out{len(jobs)}"), "--wait")  # fmt: skip
        assert submitted.returncode == 0, submitted.stderr
        assert "\x1b" not in submitted.stderr  # the progress bar shows the name escaped
        jobs.append(submitted.stdout.split()[0])
    for peer in (a, b):  # every peer, as every peer sees the job
        status = peer.cli("status", check=False)
        assert status.returncode == 0, status.stderr
        assert "[/]" in status.stdout and "[bold]x[/bold" in status.stdout
        assert SHOWN in status.stdout and "[bold red]peer[/]\\x1b]0;pwned\\x07" in status.stdout
        assert "\x1b" not in status.stdout and "\r" not in status.stdout
        assert "\u202e" not in status.stdout
        one = peer.cli("status", jobs[0], check=False)
        assert one.returncode == 0 and "[/]" in one.stdout, one.stderr
        peers = peer.cli("peers", check=False)
        assert peers.returncode == 0 and "[bold red]peer[/]" in peers.stdout, peers.stderr
        assert "\x1b" not in peers.stdout and "\x07" not in peers.stdout
        logs = peer.cli("logs", jobs[2], "1", check=False)
        assert logs.returncode == 0, logs.stderr
        assert "\x1b" not in logs.stdout
    wrong = a.cli("logs", jobs[2], "7", check=False)  # an error message quoting the name
    assert wrong.returncode == 2 and SHOWN in wrong.stderr and "\x1b" not in wrong.stderr
    for peer in (a, b):
        log = peer.log()
        assert "\x1b" not in log and "\u202e" not in log, log[-2000:]
    assert SHOWN in a.log() or "job submitted: " + SHOWN in a.log()
