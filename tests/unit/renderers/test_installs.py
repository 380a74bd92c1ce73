"""Blender installations: where they are looked for, their order and the choice for a file (pure),
then discovery with stand-in programs (shell scripts that print a Blender version), then with
the real ones this machine has (Debian's ``blender`` program and/or the ``bpy`` module)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import trio

from peerfarm.renderers import installs
from peerfarm.renderers.installs import Installation, advertised, choose, sort_installs
from tests.renderers.conftest import needs_blender_cli, needs_bpy

# --- pure -----------------------------------------------------------------------------------


def test_linux_looks_on_path_in_opt_the_home_folder_snap_and_flatpak() -> None:
    patterns = installs.candidate_patterns("Linux", {}, "/home/ann")
    for expected in (
        "/usr/bin/blender",
        "/opt/blender*/blender",
        "/opt/blender/*/blender",
        "/home/ann/blender*/blender",
        "/home/ann/Downloads/blender*/blender",
        "/snap/bin/blender",
        "/var/lib/flatpak/exports/bin/org.blender.Blender",
        "/home/ann/.local/share/flatpak/exports/bin/org.blender.Blender",
    ):
        assert expected in patterns
    assert len(patterns) == len(set(patterns))
    xdg = installs.candidate_patterns("Linux", {"XDG_DATA_HOME": "/data"}, "/home/ann")
    assert "/data/flatpak/exports/bin/org.blender.Blender" in xdg


def test_macos_looks_in_application_bundles() -> None:
    patterns = installs.candidate_patterns("Darwin", {}, "/Users/ann")
    assert "/Applications/Blender*.app/Contents/MacOS/Blender" in patterns
    assert "/Users/ann/Applications/Blender*.app/Contents/MacOS/Blender" in patterns


def test_windows_looks_under_program_files() -> None:
    env = {"ProgramFiles": r"D:\Apps", "LOCALAPPDATA": r"C:\Users\ann\AppData\Local"}
    patterns = installs.candidate_patterns("Windows", env, r"C:\Users\ann")
    assert r"D:\Apps\Blender Foundation\*\blender.exe" in patterns
    assert r"C:\Program Files (x86)\Blender Foundation\*\blender.exe" in patterns
    assert r"C:\Users\ann\AppData\Local\Programs\Blender Foundation\*\blender.exe" in patterns
    default = installs.candidate_patterns("Windows", {}, r"C:\Users\ann")
    assert default[0] == r"C:\Program Files\Blender Foundation\*\blender.exe"


def test_versions_parse_from_blender_output() -> None:
    assert installs.parse_version_output("Blender 3.4.1\n\tbuild date: 2023") == "3.4.1"
    assert installs.parse_version_output("Blender 4.2.3 LTS") == "4.2.3"
    assert installs.parse_version_output("Read prefs: ...") is None
    assert installs.version_key("4.2.3 LTS") == (4, 2, 3)
    assert installs.version_key("5.0") == (5, 0, 0)
    assert installs.version_key("unknown") == ()


CLI_34 = Installation("cli", "3.4.1", "/usr/bin/blender", "PATH")
CLI_50 = Installation("cli", "5.0.1", "/opt/blender-5.0.1/blender", "standard")
BPY_50 = Installation("bpy", "5.0.1", "/venv/bin/python", "bpy")
CLI_45 = Installation("cli", "4.5.0", "/opt/blender-4.5/blender", "standard")


def test_the_newest_that_can_open_the_file_is_chosen_and_bpy_wins_a_tie() -> None:
    found = sort_installs([BPY_50, CLI_34, CLI_50, CLI_45, CLI_34])
    assert found == [CLI_34, CLI_45, CLI_50, BPY_50]  # ascending, duplicates dropped
    assert choose(found, (3, 4)) == BPY_50
    assert choose(found, (5, 0)) == BPY_50
    assert choose([CLI_34, CLI_45], (3, 4)) == CLI_45
    assert choose([CLI_34, CLI_45], (4, 5)) == CLI_45
    assert choose([CLI_34, CLI_45], (5, 0)) is None
    assert choose([CLI_34], None) == CLI_34
    assert choose([], None) is None
    odd = Installation("bpy", "unknown", "/py", "bpy")
    assert choose([odd], (9, 9)) == odd  # an unreadable version is not refused


def test_a_peer_advertises_every_version_ascending_and_few() -> None:
    assert advertised([CLI_34, CLI_50, BPY_50]) == ["3.4.1", "5.0.1"]
    many = [Installation("cli", f"4.{n}.0", f"/b{n}", "") for n in range(12)]
    shown = advertised(many)
    assert len(shown) == installs.MAX_ADVERTISED and shown[-1] == "4.11.0"
    reason = installs.cannot_open_reason([CLI_34], (5, 0))
    assert reason == (
        "no Blender on this peer can open a file saved by Blender 5.0 (installed: 3.4.1)"
    )


# --- discovery with stand-in programs ---------------------------------------------------------


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


# --- the real installations -------------------------------------------------------------------


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
