"""Fixtures of the real renderer tests: a turntable scene freshly built by bpy."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import EXAMPLES


@pytest.fixture(scope="session")
def turntable_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A freshly generated turntable scene (scene + textures/) in a temp folder."""
    if importlib.util.find_spec("bpy") is None:
        pytest.skip("bpy is not importable")
    out = tmp_path_factory.mktemp("turntable")
    subprocess.run(
        [sys.executable, str(EXAMPLES / "blender" / "make_turntable.py"), "--out", str(out)],
        check=True,
        capture_output=True,
        timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    return out
