"""Running the CLI in-process as a shell would (click's runner) and reading its one error line.

``run`` is a fixture: a layer's conftest imports it to offer it to that layer's tests.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from peerfarm.cli import cli

Run = Callable[..., Result]


def invoke(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    """``peerfarm ARGS`` in this process; exceptions the CLI does not catch propagate."""
    return CliRunner().invoke(cli, [str(a) for a in args], env=env, catch_exceptions=False)


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch) -> Run:
    """Invoke the CLI like a shell would (env isolated from the user's data dir and key)."""
    monkeypatch.delenv("PEERFARM_DATA_DIR", raising=False)
    monkeypatch.delenv("PEERFARM_KEY", raising=False)
    return invoke


def one_error_line(result: Result) -> str:
    """The single stderr line of a failed command (asserting it is one line, no traceback)."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output + result.stderr
    assert lines[0].startswith("peerfarm: ")
    return lines[0]
