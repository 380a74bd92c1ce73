#!/usr/bin/env python3
"""peerfarm's entry point on any OS (Linux, macOS, Windows): the verbs of ``./dev``.

    python dev.py demo    make the virtual environment, then run a 3-peer farm on loopback
    python dev.py test    make it, then lint (ruff), types (mypy for Linux, Windows and macOS),
                          the simulated-Windows layer (Linux only) and the test suite
    python dev.py bench   make it, then run every benchmark (bench/run.py)

``./dev`` stays the Linux entry point: it also installs the Debian packages (POV-Ray, ffmpeg,
Chromium, Blender, the FAT tools). Here renderers are the user's to install (Homebrew on macOS:
``brew install povray ffmpeg``; on Windows POV-Ray for Windows, ffmpeg and Blender from their
sites); tests that need a missing one are skipped and say so. The virtual environment is
``.venv`` (``.venv\\Scripts`` on Windows), refreshed when pyproject.toml changes. Extra
arguments go to pytest (test) or to the program (demo, bench).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
EXTRAS = "test,blender"
#: The same list as SIMULATED_WINDOWS_TESTS in ./dev (tests/unit/test_dev.py checks they agree).
SIMULATED_WINDOWS_TESTS = [
    "tests/unit/test_platform.py", "tests/unit/files", "tests/unit/renderers", "tests/unit/cli",
    "tests/sim/test_peer_files_sim.py", "tests/sim/security", "tests/sim/api", "tests/sim/cli",
]  # fmt: skip
#: pytest-xdist on both cores; a worker that runs dry takes tests queued for the other.
BOTH_CORES = ("-n", "2", "--dist", "worksteal")


def say(text: str) -> None:
    print(f"[dev] {text}", file=sys.stderr, flush=True)


def run(*argv: str | Path) -> None:
    """Run a step; stop with its status when it fails."""
    done = subprocess.run([str(a) for a in argv], cwd=ROOT, check=False)
    if done.returncode != 0:
        sys.exit(done.returncode)


def ensure_venv() -> None:
    if not PYTHON.exists():
        say(f"creating {VENV}")
        venv.create(VENV, with_pip=True)
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:16]
    stamp = f"{digest}-{EXTRAS}-compat"
    stamp_file = VENV / ".peerfarm-stamp"
    if not stamp_file.exists() or stamp_file.read_text().strip() != stamp:
        say(f"installing peerfarm[{EXTRAS}] into {VENV}")
        subprocess.run([str(PYTHON), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=False)
        # compat: a plain path entry, not an import hook every Python start runs
        run(PYTHON, "-m", "pip", "install", "-q", "-e", f".[{EXTRAS}]",
            "--config-settings", "editable_mode=compat")  # fmt: skip
        stamp_file.write_text(stamp + "\n")
    # Bytecode, as an installed peerfarm has it (even where PYTHONDONTWRITEBYTECODE is set).
    run(PYTHON, "-m", "compileall", "-q", "-j", "0", "peerfarm")


def missing_programs() -> None:
    absent = [name for name in ("povray", "ffmpeg", "blender") if shutil.which(name) is None]
    if absent:
        say(f"not on PATH: {', '.join(absent)} (the tests that need them are skipped)")


def test(args: list[str]) -> None:
    ensure_venv()
    missing_programs()
    say("ruff")
    run(PYTHON, "-m", "ruff", "check", "peerfarm", "tests", "bench", "examples", "dev.py")
    say("mypy (this platform, then as on Windows and macOS)")
    run(PYTHON, "-m", "mypy")
    run(PYTHON, "-m", "mypy", "--platform", "win32")
    run(PYTHON, "-m", "mypy", "--platform", "darwin")
    if sys.platform.startswith("linux"):  # the simulation reads /proc/self/fd
        say("pytest: the Windows-sensitive unit and sim tests under a simulated Windows")
        windows = ("--simulate-windows", *SIMULATED_WINDOWS_TESTS)
        run(PYTHON, "-m", "pytest", "-q", *BOTH_CORES, *windows)
    if args:
        say(f"pytest {' '.join(args)}")
        run(PYTHON, "-m", "pytest", *args)
        return
    # The whole suite in three passes, as ./dev runs it: the fast layers and the real daemons,
    # renderers and browser on both cores, then the namespace clusters one at a time.
    say("pytest -m 'not real' -n 2: the unit and sim layers on both cores")
    run(PYTHON, "-m", "pytest", "-m", "not real", *BOTH_CORES)
    say("pytest -m 'real and not cluster' -n 2: real daemons, renderers and the browser")
    run(PYTHON, "-m", "pytest", "-m", "real and not cluster", *BOTH_CORES)
    say("pytest -m cluster: real daemons in network namespaces, one test at a time")
    run(PYTHON, "-m", "pytest", "-m", "cluster")


def main(argv: list[str]) -> int:
    verb, args = (argv[0], argv[1:]) if argv else ("help", [])
    if verb == "test":
        test(args)
    elif verb == "demo":
        ensure_venv()
        missing_programs()
        run(PYTHON, "-m", "peerfarm", "demo", *args)
    elif verb == "bench":
        ensure_venv()
        run(PYTHON, "bench/run.py", *args)
    else:
        print(__doc__.split("\n\n")[1])
        return 0 if verb in ("help", "-h", "--help") else 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
