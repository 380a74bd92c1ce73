"""The package as an operator installs it: a wheel built from a copy of the repository.

Built with ``pip wheel --no-deps --no-build-isolation`` (offline: the venv's setuptools and
wheel), installed with ``pip install --no-deps --target`` (the dependencies come from this venv),
then the installed ``peerfarm`` console script must run from the wheel, not from the repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import peerfarm
from tests.support import ROOT as REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pkg")
    src = root / "src"
    shutil.copytree(
        REPO / "peerfarm", src / "peerfarm", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(root / "dist"), str(src)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    (built,) = (root / "dist").glob("peerfarm-*.whl")
    return built


def test_wheel_holds_every_module_and_the_entry_point(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "peerfarm").rglob("*.py")}
    assert modules <= names, sorted(modules - names)
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[console_scripts]" in text and "peerfarm = peerfarm.console:run" in text


def test_wheel_holds_the_dashboard_files(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    static = {
        p.relative_to(REPO).as_posix()
        for p in (REPO / "peerfarm/api/static").iterdir()
        if p.is_file()
    }
    missing = sorted(static - names)
    assert not missing, (
        f"{missing} are not in the wheel: pyproject.toml needs\n"
        '[tool.setuptools.package-data]\n"peerfarm.api" = ["static/*"]'
    )


def test_installed_wheel_runs_peerfarm_version(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
         str(wheel)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEERFARM_")}
    env["PYTHONPATH"] = str(target)
    done = subprocess.run(
        [str(target / "bin" / "peerfarm"), "--version"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert done.stdout.strip() == f"peerfarm, version {peerfarm.__version__}"
    where = subprocess.run(
        [sys.executable, "-c", "import peerfarm; print(peerfarm.__file__)"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert Path(where.stdout.strip()).is_relative_to(target)  # the wheel's copy, not the repo's


def test_changelog_names_this_version() -> None:
    changelog = (REPO / "CHANGELOG.md").read_text()
    assert f"## [{peerfarm.__version__}]" in changelog
