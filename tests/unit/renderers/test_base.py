"""Pure parts of the renderer base: naming, frame runs, line splitting, tails, archives."""

from __future__ import annotations

import io
import itertools
import tarfile
import zipfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peerfarm.errors import UsageError
from peerfarm.renderers import available_renderers, renderer_for_scene
from peerfarm.renderers.archives import find_main_file, unpack_archive_once
from peerfarm.renderers.base import (
    LogTail,
    RenderFailed,
    contiguous_runs,
    frame_stem,
    split_lines,
)


def test_frame_stem_pads_to_four_digits_and_grows() -> None:
    assert frame_stem(1) == "frame_0001"
    assert frame_stem(240) == "frame_0240"
    assert frame_stem(12345) == "frame_12345"
    assert frame_stem(-3) == "frame_-0003"


def test_contiguous_runs_example() -> None:
    assert contiguous_runs([7, 1, 2, 3, 3, 9, 8]) == [(1, 3), (7, 9)]
    assert contiguous_runs([]) == []


@given(st.sets(st.integers(-50, 500)))
def test_contiguous_runs_cover_exactly_the_frames(frames: set[int]) -> None:
    runs = contiguous_runs(frames)
    covered = [f for a, b in runs for f in range(a, b + 1)]
    assert covered == sorted(frames)
    assert all(b2 > b1 + 1 for (_, b1), (b2, _) in itertools.pairwise(runs))


def _split_all(chunks: list[bytes]) -> list[str]:
    buffer = bytearray()
    lines: list[str] = []
    for chunk in chunks:
        buffer.extend(chunk)
        lines.extend(split_lines(buffer))
    buffer.extend(b"\n")
    lines.extend(split_lines(buffer))
    return lines


def test_split_lines_handles_carriage_returns_as_povray_writes_them() -> None:
    data = b"Rendered 1 of 4 pixels\rRendered 4 of 4 pixels\r\ndone\n\n"
    assert _split_all([data]) == ["Rendered 1 of 4 pixels", "Rendered 4 of 4 pixels", "done"]


@given(
    st.lists(st.text(alphabet="ab \u00e9", min_size=1, max_size=8), max_size=10),
    st.sampled_from([b"\n", b"\r", b"\r\n"]),
    st.data(),
)
def test_split_lines_does_not_depend_on_chunking(
    lines: list[str], sep: bytes, data: st.DataObject
) -> None:
    blob = sep.join(line.encode() for line in lines) + sep
    cuts = sorted(data.draw(st.sets(st.integers(0, len(blob)), max_size=6)))
    chunks = [blob[a:b] for a, b in zip([0, *cuts], [*cuts, len(blob)], strict=True)]
    assert _split_all(chunks) == [line for line in lines if line.strip()]


def test_log_tail_keeps_the_last_lines_within_bytes() -> None:
    tail = LogTail(max_lines=3, max_bytes=20)
    for i in range(10):
        tail.add(f"line {i}")
    assert tail.text() == "line 8\nline 9"
    tail = LogTail(max_lines=3, max_bytes=1000)
    for i in range(10):
        tail.add(f"line {i}")
    assert tail.text() == "line 7\nline 8\nline 9"


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_unpack_zip_once_and_find_the_main_file(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "s.zip", {"proj/a.pov": b"x", "proj/inc/c.inc": b"y"})
    root = unpack_archive_once(archive, tmp_path / "work")
    assert (root / "proj" / "inc" / "c.inc").read_bytes() == b"y"
    assert find_main_file(root, ".pov") == root / "proj" / "a.pov"
    archive.unlink()  # a second call reuses the unpacked copy
    assert unpack_archive_once(archive, tmp_path / "work") == root


@pytest.mark.parametrize("name", ["../evil.pov", "/abs/evil.pov", "a/../../evil.pov"])
def test_unpack_refuses_paths_that_escape(tmp_path: Path, name: str) -> None:
    archive = _zip(tmp_path / "s.zip", {name: b"x"})
    with pytest.raises(RenderFailed, match="escapes"):
        unpack_archive_once(archive, tmp_path / "work")
    assert not (tmp_path / "evil.pov").exists()
    assert not (tmp_path / "work" / "scene").exists()


def test_unpack_refuses_archives_over_the_size_cap(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "s.zip", {"a.pov": b"x" * 5000})
    with pytest.raises(RenderFailed, match="more than"):
        unpack_archive_once(archive, tmp_path / "work", max_bytes=1000)


def test_unpack_tar_refuses_symlinks(tmp_path: Path) -> None:
    archive = tmp_path / "s.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        info = tarfile.TarInfo("link.pov")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tf.addfile(info)
        data = tarfile.TarInfo("ok.pov")
        data.size = 1
        tf.addfile(data, io.BytesIO(b"x"))
    with pytest.raises(RenderFailed, match="link"):
        unpack_archive_once(archive, tmp_path / "work")


def test_find_main_file_needs_the_main_option_when_ambiguous(tmp_path: Path) -> None:
    (tmp_path / "a.pov").write_text("")
    (tmp_path / "b.pov").write_text("")
    with pytest.raises(RenderFailed, match="main"):
        find_main_file(tmp_path, ".pov")
    assert find_main_file(tmp_path, ".pov", "b.pov") == (tmp_path / "b.pov").resolve()
    with pytest.raises(RenderFailed):
        find_main_file(tmp_path, ".pov", "../outside.pov")


def test_renderer_for_scene_by_extension_and_contents(tmp_path: Path) -> None:
    assert renderer_for_scene(Path("shot.blend")) == "blender"
    assert renderer_for_scene(Path("spin.pov")) == "povray"
    assert renderer_for_scene(Path("render.sh")) == "command"
    assert renderer_for_scene(_zip(tmp_path / "p.zip", {"d/s.pov": b""})) == "povray"
    assert renderer_for_scene(_zip(tmp_path / "b.zip", {"s.blend": b""})) == "blender"
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "scene.pov").write_text("")
    assert renderer_for_scene(folder) == "povray"
    with pytest.raises(UsageError, match=r"\.mb.*--renderer"):
        renderer_for_scene(Path("scene.mb"))


def test_registry_names_every_plugin() -> None:
    renderers = available_renderers()
    assert set(renderers) == {"command", "povray", "blender"}
    assert all(r.name == name for name, r in renderers.items())
