"""Blender installations, pure: where they are looked for, their order and the choice for a file."""

from __future__ import annotations

from peerfarm.renderers import installs
from peerfarm.renderers.installs import Installation, advertised, choose, sort_installs


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
    steam = "/Users/ann/Library/Application Support/Steam/steamapps/common/Blender"
    assert f"{steam}/Blender*.app/Contents/MacOS/Blender" in patterns


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
