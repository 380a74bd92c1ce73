"""The ``peerfarm`` group imports a verb's module only when that verb runs (start-up time)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from peerfarm.cli import app
from peerfarm.client import CONTROL_FILE


def test_every_verb_is_in_the_table_under_the_module_that_defines_it() -> None:
    ctx = click.Context(app.cli)
    for name in app.VERBS:
        command = app.cli.get_command(ctx, name)
        assert command is not None, f"{name} is in VERBS but no module defines it"
        assert command.callback is not None
        module = command.callback.__module__.rsplit(".", 1)[1]
        assert module == app.VERBS[name], f"{name} is in {module}, VERBS says {app.VERBS[name]}"
    # Every verb the modules register is in the table (a new verb must be added there, or
    # `peerfarm NEWVERB` would say "no such command").
    assert set(app.cli.commands) == set(app.VERBS)


HEAVY = {"peerfarm.cli.host", "peerfarm.cli.hosts", "peerfarm.daemon", "peerfarm.ledger",
         "peerfarm.renderers", "trio", "zeroconf", "msgpack", "cryptography", "PIL"}  # fmt: skip


def _modules_after(argv: list[str]) -> set[str]:
    """The modules loaded once ``peerfarm ARGV`` ran (in a fresh interpreter: no daemon)."""
    probe = (
        "import sys, json; from peerfarm.cli import main; main(json.loads(sys.argv[1])); "
        "print(json.dumps(sorted(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, json.dumps(argv)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return set(json.loads(done.stdout.splitlines()[-1]))


@pytest.mark.parametrize("verb", ["status", "submit"])
def test_a_short_verb_does_not_import_the_daemon_or_the_other_verbs(
    verb: str, tmp_path: Path
) -> None:
    scene = tmp_path / "frame.sh"
    scene.write_text("#!/bin/sh\n")
    args = {"status": ["status"], "submit": ["submit", str(scene), "1-10", "--no-output"]}[verb]
    loaded = _modules_after([*args, "--data-dir", str(tmp_path / "no-daemon")])
    assert "peerfarm.cli.jobs" in loaded
    heavy = {m for m in loaded if m.split(".")[0] in HEAVY or m in HEAVY or any(
        m.startswith(h + ".") for h in HEAVY)}  # fmt: skip
    assert not heavy, f"{verb} imported {sorted(heavy)[:8]}"


def test_a_submit_reaches_the_daemon_before_rich_and_the_views_load(tmp_path: Path) -> None:
    """What the user waits for starts when the request leaves: output modules load after it.
    The probe stops the CLI at its first connect (a live pid in control.json, nothing listens)."""
    scene = tmp_path / "frame.sh"
    scene.write_text("#!/bin/sh\n")
    data = tmp_path / "data"
    data.mkdir()
    control = {"url": "http://127.0.0.1:9", "token": "t" * 32, "pid": os.getpid()}
    (data / CONTROL_FILE).write_text(json.dumps(control))
    probe = (
        "import json, os, socket, sys\n"
        "def connect(self, address):\n"
        "    print(json.dumps(sorted(sys.modules)), flush=True)\n"
        "    os._exit(0)\n"
        "socket.socket.connect = connect\n"
        "from peerfarm.console import run\n"
        "sys.argv = json.loads(sys.argv[1])\n"
        "run()\n"
    )
    argv = ["peerfarm", "submit", str(scene), "1-10", "--wait", "--data-dir", str(data)]
    done = subprocess.run(
        [sys.executable, "-c", probe, json.dumps(argv)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    loaded = set(json.loads(done.stdout.splitlines()[-1]))
    assert "peerfarm.client" in loaded  # the probe stopped the real request
    # rich draws tables, psutil reads processes, tarfile and zipfile read archive scenes,
    # platformdirs finds the default data dir (given here): none is needed to send a submit.
    unneeded = {"rich", "psutil", "tarfile", "zipfile", "platformdirs"}
    late = {m for m in loaded if m.split(".")[0] in unneeded or m == "peerfarm.cli.views"}
    assert not late, f"loaded before the submit left: {sorted(late)[:8]}"
