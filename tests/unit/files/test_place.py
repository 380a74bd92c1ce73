"""place_copy: a copy lands in the folder under its name, never through a planted symlink."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from peerfarm.files.names import UnsafeName, folder_name
from peerfarm.files.place import place_copy


def test_a_copy_replaces_a_symlink_instead_of_writing_through_it(tmp_path: Path) -> None:
    source = tmp_path / "blob"
    source.write_bytes(b"frame bytes")
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    folder = tmp_path / "dest"
    folder.mkdir()
    (folder / "frame_0001.png").symlink_to(outside)
    target = place_copy(source, folder, "frame_0001.png")
    assert target == folder / "frame_0001.png" and not target.is_symlink()
    assert target.read_bytes() == b"frame bytes" and outside.read_text() == "keep me"
    assert sorted(os.listdir(folder)) == ["frame_0001.png"]  # no temporary file left


def test_unsafe_names_and_unwritable_folders_raise(tmp_path: Path) -> None:
    source = tmp_path / "blob"
    source.write_bytes(b"x")
    with pytest.raises(UnsafeName):
        place_copy(source, tmp_path / "d", "../escape.png")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(NotADirectoryError):
        place_copy(source, blocker / "sub", "a.png")
    (tmp_path / "d" / "a.png").mkdir(parents=True)
    with pytest.raises(IsADirectoryError):
        place_copy(source, tmp_path / "d", "a.png")
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["a.png"]


@pytest.mark.parametrize(
    ("name", "folder"),
    [
        ("shot 10", "shot_10"),
        ("../../etc", "etc"),
        ("...", "job"),
        ("[/]", "job"),
        ("日本" * 100, "日本" * 33),  # cut to 200 bytes of UTF-8, whole characters
    ],
)
def test_folder_name_is_one_plain_component(name: str, folder: str) -> None:
    assert folder_name(name) == folder
