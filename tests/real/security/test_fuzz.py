"""The decoders under coverage-guided fuzzing (issue 10): with atheris installed, each target runs
for a few seconds in a subprocess (``fuzz/run.py --target T --seconds 2``)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from fuzz import targets
from tests.support import ROOT

HAS_ATHERIS = importlib.util.find_spec("atheris") is not None


@pytest.mark.skipif(not HAS_ATHERIS, reason="atheris not installed: Hypothesis runs instead")
@pytest.mark.parametrize("name", sorted(targets.TARGETS))
def test_coverage_guided_fuzzing_runs_clean(name: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "fuzz" / "run.py"),
            "--target",
            name,
            "--seconds",
            "2",
            "--seed",
            "7",
            "--corpus",
            str(tmp_path / "corpus"),
            "--crashes",
            str(tmp_path / "crashes"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    crashes = list((tmp_path / "crashes").rglob("*"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert not [c for c in crashes if c.is_file()]
    assert "Done" in result.stderr  # libFuzzer really ran
