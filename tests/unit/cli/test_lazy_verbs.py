"""The ``peerfarm`` group imports a verb's module only when that verb runs (start-up time)."""

from __future__ import annotations

import json
import subprocess
import sys

import click

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


def test_a_short_verb_does_not_import_the_daemon_or_the_other_verbs() -> None:
    probe = (
        "import sys, json; from peerfarm.cli import main; code = main(['status', '--data-dir', "
        "sys.argv[1]]); print(json.dumps(sorted(m for m in sys.modules if m.startswith("
        "('peerfarm', 'trio', 'zeroconf', 'msgpack', 'cryptography')))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, "/nonexistent/peerfarm-data"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    loaded = set(json.loads(done.stdout.splitlines()[-1]))
    assert "peerfarm.cli.jobs" in loaded
    heavy = {"peerfarm.cli.host", "peerfarm.cli.hosts", "peerfarm.daemon", "peerfarm.ledger",
             "trio", "zeroconf", "msgpack", "cryptography"}  # fmt: skip
    assert not heavy & loaded, f"status imported {sorted(heavy & loaded)}"
