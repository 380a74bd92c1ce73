"""Blender installations found for real: stand-in programs (shell scripts that print a
Blender version), then the ones this machine has (Debian's ``blender`` and/or ``bpy``)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import trio

from peerfarm.renderers import installs
from tests.support.renderers import needs_blender_cli, needs_bpy


def fake_blender(path: Path, version: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\n[ "$3" = --version ] && echo "Blender {version}"\nexit 0\n')
    path.chmod(0o755)
    return path


async def test_discovery_finds_path_explicit_and_home_versioned_folders(tmp_path: Path) -> None:
    home = tmp_path / "home"
    on_path = fake_blender(tmp_path / "bin" / "blender", "3.4.1")
    in_home = fake_blender(home / "blender-4.2.3-linux-x64" / "blender", "4.2.3 LTS")
    given = fake_blender(tmp_path / "elsewhere" / "blender", "5.0.1")
    broken = tmp_path / "broken" / "blender"
    broken.parent.mkdir()
    broken.write_text("#!/bin/sh\nexit 3\n")
    broken.chmod(0o755)
    env = {"PATH": str(on_path.parent)}
    with trio.fail_after(30):
        found = await installs.discover(
            [str(given), str(broken), str(tmp_path / "missing"), str(on_path)],
            module=False,
            system="Linux",
            env=env,
            home=str(home),
        )
    mine = [i for i in found if i.path.startswith(str(tmp_path))]  # not this machine's own
    assert [(i.version, i.path, i.source) for i in mine] == [
        ("3.4.1", str(on_path), "--blender"),  # the same file given twice counts once
        ("4.2.3", str(in_home), "standard"),
        ("5.0.1", str(given), "--blender"),
    ]
    with trio.fail_after(30):
        only_given = await installs.discover(
            [str(given)], programs=False, module=False, env=env, home=str(home)
        )
    assert [i.path for i in only_given] == [str(given)]


def test_a_blender_folder_given_as_blender_finds_the_program_inside(tmp_path: Path) -> None:
    program = fake_blender(tmp_path / "blender-5.0" / "blender", "5.0.1")
    assert installs.resolve_executable(str(program.parent)) == str(program)
    assert installs.resolve_executable(str(tmp_path / "nothing")) is None


@needs_blender_cli
async def test_the_blender_program_on_path_is_found_with_its_version() -> None:
    """Uses the Blender program (Debian's ``blender``)."""
    program = shutil.which("blender")
    assert program is not None
    with trio.fail_after(60):
        found = await installs.discover(module=False, standard=False)
    [install] = [i for i in found if i.path == program]
    assert install.kind == "cli" and install.version_key >= (2, 80, 0)


@needs_bpy
def test_bpy_is_found_from_its_metadata_without_importing_it() -> None:
    """Uses the bpy module (the ``blender`` extra)."""
    install = installs.bpy_installation()
    assert install is not None and install.kind == "bpy" and install.path == sys.executable
    assert install.version_key >= (4, 0, 0)
    assert "bpy" not in sys.modules


def test_no_bpy_for_an_interpreter_without_it(tmp_path: Path) -> None:
    python = shutil.which("python3")
    if python is None:
        pytest.skip("no python3 on PATH")
    plain = installs.bpy_installation(python)
    assert plain is None or plain.kind == "bpy"  # Debian's python3 normally has no bpy
