"""``peer.render.remove_all``: how a peer removes the scratch it no longer needs."""

from __future__ import annotations

from pathlib import Path

from peerfarm.peer.render import remove_all


def test_removes_empty_and_full_folders_and_files_and_shrugs_at_missing(tmp_path: Path) -> None:
    empty = tmp_path / "slot0-aaaa"
    empty.mkdir()
    full = tmp_path / "slot0-bbbb"
    (full / "frame_0001").mkdir(parents=True)
    (full / "frame_0001" / "a.png").write_bytes(b"png")
    (full / "frame_0002").mkdir()
    loose = tmp_path / "video.mp4"
    loose.write_bytes(b"mp4")
    remove_all([empty, full, loose, tmp_path / "gone"])
    assert list(tmp_path.iterdir()) == []


def test_a_link_to_a_folder_goes_and_the_folder_it_points_at_stays(tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.mkdir()
    (target / "keep.txt").write_text("keep")
    empty_target = tmp_path / "empty"
    empty_target.mkdir()
    links = [tmp_path / "link", tmp_path / "link-to-empty"]
    links[0].symlink_to(target, target_is_directory=True)
    links[1].symlink_to(empty_target, target_is_directory=True)
    remove_all(links)
    assert not any(link.is_symlink() for link in links)
    assert (target / "keep.txt").read_text() == "keep" and empty_target.is_dir()
