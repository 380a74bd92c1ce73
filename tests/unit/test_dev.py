"""``./dev`` (Linux) and ``dev.py`` (any OS) offer the same verbs and run the same simulated-Windows
tests, and every path in that list exists."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.support import ROOT


def _bash_list() -> list[str]:
    text = (ROOT / "dev").read_text()
    body = re.search(r"SIMULATED_WINDOWS_TESTS=\((.*?)\)", text, re.DOTALL)
    assert body is not None
    return body.group(1).split()


def test_both_entry_points_run_the_same_simulated_windows_tests() -> None:
    sys.path.insert(0, str(ROOT))
    try:
        import dev
    finally:
        sys.path.remove(str(ROOT))
    assert _bash_list() == dev.SIMULATED_WINDOWS_TESTS
    assert all((ROOT / path).exists() for path in _bash_list())


def test_both_entry_points_have_the_same_verbs() -> None:
    shown = subprocess.run(
        [sys.executable, str(ROOT / "dev.py"), "help"], capture_output=True, text=True, check=True
    ).stdout
    verbs_py = re.findall(r"python dev\.py (\w+)", shown)
    verbs_sh = re.findall(r"^#\s+\./dev (\w+)", (ROOT / "dev").read_text(), re.MULTILINE)
    assert verbs_py == verbs_sh == ["demo", "test", "bench"]
    refused = subprocess.run([sys.executable, str(ROOT / "dev.py"), "nope"], capture_output=True)
    assert refused.returncode == 2
