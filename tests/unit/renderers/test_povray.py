"""POV-Ray, pure: argv (the clock over the whole job) and parsing of recorded logs."""

from __future__ import annotations

from pathlib import Path

import pytest

from peerfarm.renderers.base import Progress, RenderFailed
from peerfarm.renderers.povray import PovrayRenderer, clock_range, frame_index
from tests.support.renderers import DATA, make_task


def test_argv_sets_the_clock_over_the_whole_job(tmp_path: Path) -> None:
    task = make_task(
        tmp_path,
        Path("/scenes/spin/spin.pov"),
        (6, 7),
        options={"frames_total": 24, "width": 64, "height": 48, "antialias": 0.2},
    )
    argv = PovrayRenderer().build_argv(task)
    assert argv[0] == "povray"
    assert '+I"spin.pov"' in argv
    assert f'+O"{tmp_path / "out" / "frame_"}"' in argv
    for flag in ("+W64", "+H48", "+A0.2", "+FN", "-D", '+L"/scenes/spin"'):
        assert flag in argv
    assert argv[-6:] == ["+KFI1", "+KFF24", "+KI0", "+KF1", "+SF6", "+EF7"]


def test_argv_defaults_and_antialias_off(tmp_path: Path) -> None:
    task = make_task(tmp_path, Path("s.pov"), (3,), options={"antialias": 0, "threads": 2})
    argv = PovrayRenderer().build_argv(task)
    assert {"+W320", "+H240", "-A", "+KFF3", "+SF3", "+EF3", "+WT2"} <= set(argv)
    assert clock_range(make_task(tmp_path, Path("s.pov"), (5, 9))) == (1, 9)
    options = {"frame_first": 10, "frames_total": 5}
    assert clock_range(make_task(tmp_path, Path("s.pov"), (11,), options=options)) == (10, 14)


def test_paths_with_spaces_are_one_quoted_value_and_a_quote_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "Application Support" / "my scene"
    argv = PovrayRenderer().build_argv(make_task(folder, folder / "a b.pov", (1,)))
    assert '+I"a b.pov"' in argv and f'+L"{folder}"' in argv
    assert f'+O"{folder / "out" / "frame_"}"' in argv
    with pytest.raises(RenderFailed, match="double quote"):
        PovrayRenderer().build_argv(make_task(tmp_path, tmp_path / 'say "hi".pov', (1,)))


def test_argv_refuses_frames_that_are_not_contiguous(tmp_path: Path) -> None:
    with pytest.raises(RenderFailed, match="contiguous"):
        PovrayRenderer().build_argv(make_task(tmp_path, Path("s.pov"), (1, 3)))


def test_parse_recorded_log() -> None:
    renderer = PovrayRenderer()
    raw = (DATA / "povray_spin_frames_6_7.log").read_bytes().decode()
    lines = [line for line in raw.replace("\r", "\n").split("\n") if line.strip()]
    parsed = [p for line in lines if (p := renderer.parse_line(line)) is not None]
    pixel_reports = [p for p in parsed if p.message.startswith("Rendered")]
    assert pixel_reports[0].fraction == pytest.approx(1024 / 76800)
    assert pixel_reports[-1].fraction == 1.0
    assert sum(1 for p in pixel_reports if p.fraction == 1.0) == 2  # two frames finished
    assert [frame_index(line) for line in lines if frame_index(line)] == [1, 1, 2]
    assert renderer.parse_line("Trace Time: 0 hours") is None


def test_parse_recorded_error_log() -> None:
    renderer = PovrayRenderer()
    lines = (DATA / "povray_parse_error.log").read_text().splitlines()
    errors = [p for line in lines if (p := renderer.parse_line(line)) and p.fraction is None]
    assert any("Parse Error" in p.message for p in errors)
    assert renderer.parse_line("Rendered 0 of 0 pixels") == Progress(
        None, None, "Rendered 0 of 0 pixels"
    )
