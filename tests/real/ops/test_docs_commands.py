"""The docs' commands run, so the docs cannot rot.

Every ``$ peerfarm ...`` line in a ``console`` block of docs/*.md is a command an operator will
type. The read-only ones (:data:`SAFE`) run against two real daemons on loopback and must
succeed, with the output the docs show when they show one right under the command; every
``--option`` the docs pass to ``peerfarm up`` must exist in ``peerfarm up --help``, and every
verb the docs use must exist in ``peerfarm --help``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from peerfarm.testing.daemons import LocalFarm
from tests.support import DOCS

pytestmark = pytest.mark.slow


#: Verbs that only read: safe to run against a live farm from the docs.
SAFE = {"status", "peers", "--version"}  # `key` needs a key in the data dir
_FENCE = re.compile(r"^```(\w*)\s*$")


def console_commands() -> list[tuple[str, list[str], list[str]]]:
    """(doc file, argv after ``peerfarm``, output lines shown right under it)."""
    found = []
    for doc in sorted(DOCS.glob("*.md")):
        block: str | None = None
        lines: list[str] = []
        for line in doc.read_text().splitlines():
            fence = _FENCE.match(line)
            if fence and block is None:
                block, lines = fence.group(1), []
            elif fence:
                if block == "console":
                    found += _commands(doc.name, lines)
                block = None
            elif block is not None:
                lines.append(line)
    return found


def _commands(doc: str, lines: list[str]) -> list[tuple[str, list[str], list[str]]]:
    out: list[tuple[str, list[str], list[str]]] = []
    for line in lines:
        if line.startswith("$ peerfarm"):
            out.append((doc, line[len("$ peerfarm") :].split(), []))
        elif out and not line.startswith("$ "):
            out[-1][2].append(line)
    return out


def all_doc_text() -> str:
    return "\n".join(p.read_text() for p in sorted(DOCS.glob("*.md")))


def cli(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "peerfarm", *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_docs_have_runnable_commands() -> None:
    verbs = {argv[0] for _doc, argv, _out in console_commands()}
    assert {"status", "peers", "--version"} <= verbs


def test_documented_up_options_and_verbs_exist() -> None:
    text = all_doc_text()
    help_text = cli("up", "--help")
    for options in re.findall(r"peerfarm up((?: +[-\w.:=/]+)+)", text):
        for option in re.findall(r"(--[a-z][a-z-]*)", options):
            assert option in help_text, f"docs use `peerfarm up {option}`, which does not exist"
    verbs = set(re.findall(r"^  (\w+) ", cli("--help"), re.M))
    for verb in re.findall(r"`peerfarm ([a-z]\w*)", text):
        assert verb in verbs, f"docs name `peerfarm {verb}`, which does not exist"


def test_safe_doc_commands_run_against_real_daemons(tmp_path: Path) -> None:
    commands = [c for c in console_commands() if c[1][0] in SAFE]
    assert commands
    with LocalFarm(tmp_path) as farm:
        farm.start_all(["docs-a", "docs-b"], web=True, allow_command=True)
        peer = farm.daemons[0]
        for doc, argv, shown in commands:
            if argv[0] == "--version":
                done = subprocess.run(
                    [sys.executable, "-m", "peerfarm", *argv],
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=False,
                )
            else:
                done = peer.cli(*argv, check=False)
            assert done.returncode == 0, f"{doc}: `peerfarm {' '.join(argv)}`: {done.stderr}"
            expected = [line for line in shown if line.strip()]
            if expected:
                assert done.stdout.splitlines()[: len(expected)] == expected, (doc, argv)
            if argv[0] == "peers" and "--json" not in argv:
                assert "docs-b" in done.stdout and "alive" in done.stdout
