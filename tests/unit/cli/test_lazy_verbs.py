"""The ``peerfarm`` group imports a verb's module only when that verb runs (start-up time)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest

from peerfarm.cli import app


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
