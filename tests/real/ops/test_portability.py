"""The test suite imports where POSIX-only modules are missing (Windows): collection of every
layer succeeds with ``resource`` unimportable and ``ctypes.CDLL(None)`` failing as it does
there. A real subprocess, since both are process-wide."""

from __future__ import annotations

import subprocess
import sys

from peerfarm.testing.daemons import daemon_env
from tests.support import ROOT

PRELUDE = """
import ctypes, sys
import psutil  # its Linux backend uses resource; its Windows one does not: theirs to get right
sys.modules["resource"] = None  # import resource -> ImportError, as on Windows
_CDLL = ctypes.CDLL

class _WindowsCDLL(_CDLL):
    def __init__(self, name, *args, **kwargs):
        if name is None:  # Windows has no process-wide C library to load
            raise TypeError("LoadLibrary() argument 1 must be str, not None")
        super().__init__(name, *args, **kwargs)

ctypes.CDLL = _WindowsCDLL
import pytest
sys.exit(pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", "tests"]))
"""


def test_every_layer_collects_without_resource_or_a_c_library() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PRELUDE],
        cwd=ROOT, env=daemon_env(), capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "error" not in done.stdout.lower().splitlines()[-1]
    assert " tests collected" in done.stdout or "tests collected" in done.stdout
