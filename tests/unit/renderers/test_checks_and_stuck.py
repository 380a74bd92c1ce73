"""Output checks (``renderers.checks``) and the stuck-render rule (``renderers.stuck``)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from peerfarm.renderers import stuck
from peerfarm.renderers.base import RenderTask
from peerfarm.renderers.checks import NOTHING, Expected, check_files, damaged, file_digest
from peerfarm.renderers.command import CommandRenderer
from peerfarm.renderers.povray import PovrayRenderer


def png(path: Path, size: tuple[int, int]) -> Path:
    Image.new("RGB", size).save(path)
    return path


def test_an_image_of_the_expected_size_passes(tmp_path: Path) -> None:
    want = Expected(image=True, width=64, height=48)
    assert check_files(want, [png(tmp_path / "a.png", (64, 48))]) is None
    assert check_files(want, [png(tmp_path / "b.png", (32, 48))]) == (
        "exited 0 but b.png is 32x48, not the expected 64x48"
    )
    assert check_files(want, []) == "exited 0 but wrote no output file"
    (tmp_path / "c.png").write_bytes(b"")
    assert "is empty" in (check_files(want, [tmp_path / "c.png"]) or "")
    (tmp_path / "d.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    assert "not a readable image" in (check_files(want, [tmp_path / "d.png"]) or "")


def test_files_required_unless_no_output(tmp_path: Path) -> None:
    assert check_files(Expected(files=1), []) == "exited 0 but wrote no output file"
    assert check_files(NOTHING, []) is None
    (tmp_path / "x.txt").write_text("x")
    assert check_files(Expected(files=1), [tmp_path / "x.txt"]) is None


def task(tmp_path: Path, options: dict[str, object]) -> RenderTask:
    return RenderTask("j", (1,), tmp_path / "s", "s", options, tmp_path, tmp_path)


def test_renderers_declare_what_a_frame_must_produce(tmp_path: Path) -> None:
    assert PovrayRenderer().expected_output(task(tmp_path, {"width": 64, "height": 32})) == (
        Expected(image=True, width=64, height=32)
    )
    command = CommandRenderer()
    assert command.expected_output(task(tmp_path, {})) == Expected(files=1)
    assert command.expected_output(task(tmp_path, {"no_output": True})) == NOTHING


def test_damaged_compares_with_the_ledger_digest(tmp_path: Path) -> None:
    path = tmp_path / "f.png"
    path.write_bytes(b"abc")
    digest = file_digest(path)
    assert damaged(path, digest) is None
    path.write_bytes(b"abd")
    assert "damaged" in (damaged(path, digest) or "")
    assert damaged(tmp_path / "gone.png", digest) == "missing"


def test_a_render_is_stuck_only_without_lines_and_cpu_for_the_whole_limit() -> None:
    watch = stuck.Watch(10.0, since=0.0)
    watch = watch.observe(5.0, lines=0, cpu=0.0)
    assert not watch.stuck(9.9) and watch.stuck(10.0)
    watch = watch.observe(8.0, lines=1, cpu=0.0)  # a new line
    assert not watch.stuck(17.9) and watch.stuck(18.0)
    watch = watch.observe(15.0, lines=1, cpu=0.5)  # CPU time grew
    assert watch.since == 15.0
    watch = watch.observe(20.0, lines=1, cpu=0.505)  # noise: below CPU_EPSILON
    assert watch.since == 15.0 and watch.stuck(25.0)
    assert not stuck.Watch(0.0, since=0.0).stuck(1e9)  # 0: off
    assert stuck.reason(600) == "stuck: no output and no CPU time for 600 s"
