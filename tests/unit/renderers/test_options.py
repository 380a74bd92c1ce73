"""Option schemas (issue 17): what each renderer takes; a bad one is refused in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from peerfarm.errors import UsageError
from peerfarm.renderers.base import RenderFailed
from peerfarm.renderers.command import CommandRenderer
from peerfarm.renderers.options import OptionError, accepted, read, requirements, validate
from peerfarm.renderers.povray import PovrayRenderer, clock_range
from tests.support.renderers import make_task


@pytest.mark.parametrize(
    ("renderer", "given", "normalised"),
    [
        ("povray", {"width": 640, "height": 480.0}, {"width": 640, "height": 480}),
        ("povray", {"width": "640"}, {"width": 640}),
        ("povray", {"antialias": 0}, {"antialias": 0.0}),
        ("povray", {"antialias": False, "threads": 0}, {"antialias": 0.0, "threads": 0}),
        ("povray", {"antialias": True}, {"antialias": 0.3}),
        ("povray", {"main": "scenes/shot.pov"}, {"main": "scenes/shot.pov"}),
        ("povray", {"overwrite": True, "fps": 25}, {"overwrite": True, "fps": 25.0}),
        ("blender", {"format": "open_exr", "threads": 4}, {"format": "OPEN_EXR", "threads": 4}),
        ("blender", {"allow_scripts": "yes"}, {"allow_scripts": True}),
        ("command", {"args": ["-v", "two words"]}, {"args": ["-v", "two words"]}),
        ("command", {}, {}),
    ],
)
def test_good_options_are_normalised(
    renderer: str, given: dict[str, Any], normalised: dict[str, Any]
) -> None:
    result = validate(renderer, given)
    assert result == normalised
    assert [type(v) for v in result.values()] == [type(v) for v in normalised.values()]


@pytest.mark.parametrize(
    ("renderer", "given", "message"),
    [
        ("povray", {"width": "640px"}, "option width: expected a whole number, got '640px'"),
        ("povray", {"threads": "four"}, "option threads: expected a whole number, got 'four'"),
        ("povray", {"width": 0}, "option width: must be from 1 to 16384, got 0"),
        ("povray", {"height": -5}, "option height: must be from 1 to 16384, got -5"),
        ("povray", {"width": 10**30}, "option width: must be from 1 to 16384"),
        ("povray", {"width": 640.5}, "option width: expected a whole number, got 640.5"),
        ("povray", {"width": True}, "option width: expected a whole number, got true"),
        ("povray", {"width": [640]}, "option width: expected a whole number, got [640]"),
        ("povray", {"antialias": float("nan")}, "option antialias: expected a number, got NaN"),
        ("povray", {"antialias": 9}, "option antialias: must be from 0 to 3, got 9"),
        ("povray", {"main": "../../etc/passwd"}, "option main: must be a path inside"),
        ("povray", {"main": "/etc/passwd"}, "option main: must be a path inside"),
        ("povray", {"widht": 640}, "option widht: povray has no such option (did you mean width?"),
        ("povray", {"frames_total": 3}, "option frames_total: set by peerfarm itself"),
        ("povray", {"shared_scene": "x.pov"}, "option shared_scene: set by peerfarm itself"),
        ("povray", {"fps": 0}, "option fps: must be above 0 and at most 1000, got 0"),
        ("povray", {"overwrite": "maybe"}, "option overwrite: expected true or false"),
        ("blender", {"format": "FFMPEG"}, "option format: expected one of BMP, CINEON"),
        ("blender", {"threads": 5000}, "option threads: must be from 0 to 1024, got 5000"),
        ("blender", {"width": 640}, "option width: blender has no such option"),
        ("command", {"args": "-v"}, "option args: expected a list of strings"),
        ("command", {"args": ["a\x00b"]}, "option args: an argument has a NUL byte"),
        ("command", {"args": ["x"] * 300}, "option args: at most 256 arguments, got 300"),
    ],
)
def test_bad_options_are_refused_in_one_line_naming_the_option(
    renderer: str, given: dict[str, Any], message: str
) -> None:
    with pytest.raises(OptionError) as caught:
        validate(renderer, given)
    text = str(caught.value)
    assert text.startswith(message), text
    assert "\n" not in text and len(text) < 300
    assert isinstance(caught.value, UsageError)  # HTTP 400, CLI exit 2


def test_every_renderer_lists_what_it_takes() -> None:
    assert accepted("povray") == [
        "allow_scripts", "antialias", "fps", "height", "main", "order", "overwrite", "threads",
        "width",
    ]  # fmt: skip
    assert accepted("blender") == [
        "allow_scripts", "camera", "device", "format", "fps", "main", "order", "overwrite",
        "percentage", "samples", "threads", "view_layer",
    ]  # fmt: skip
    assert accepted("command") == ["allow_scripts", "args", "fps", "order", "overwrite"]


def test_read_ignores_options_it_does_not_know_but_checks_those_it_does() -> None:
    """A job from the network: a newer peer's option passes; a bad known one does not."""
    assert read("povray", {"future": 1, "frames_total": 5}) == {"future": 1, "frames_total": 5}
    with pytest.raises(OptionError, match="option frame_first"):
        read("povray", {"frame_first": "one"})


@pytest.mark.parametrize(
    "options",
    [{"width": "640px"}, {"threads": "four"}, {"antialias": "lots"}, {"frames_total": "x"}],
)
def test_povray_turns_a_bad_option_from_the_network_into_render_failed(
    tmp_path: Path, options: dict[str, Any]
) -> None:
    task = make_task(tmp_path, Path("s.pov"), (1,), options=options)
    with pytest.raises(RenderFailed, match=r"^bad job option: option \w+: expected"):
        PovrayRenderer().build_argv(task)
    with pytest.raises(RenderFailed):
        clock_range(make_task(tmp_path, Path("s.pov"), (1,), options={"frame_first": [1]}))


def test_command_turns_bad_args_from_the_network_into_render_failed(tmp_path: Path) -> None:
    task = make_task(tmp_path, Path("s.sh"), (1,), options={"args": ["ok", "nul\x00"]})
    with pytest.raises(RenderFailed, match="NUL byte"):
        CommandRenderer().build_argv(task)


@pytest.mark.parametrize(
    ("options", "normalised"),
    [
        ({"device": "cuda"}, {"device": "CUDA"}),
        ({"device": "gpu"}, {"device": "GPU"}),
        ({"samples": "64", "percentage": 50.0}, {"samples": 64, "percentage": 50}),
        ({"camera": "Cam.002", "view_layer": "Fore ground"}, None),
        ({"threads": 0, "format": "open_exr"}, {"threads": 0, "format": "OPEN_EXR"}),
    ],
)
def test_blender_options_are_checked_and_normalised(
    options: dict[str, Any], normalised: dict[str, Any] | None
) -> None:
    assert validate("blender", options) == (normalised or options)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"device": "TPU"}, "option device: expected one of CPU, GPU, OPTIX, CUDA, HIP, METAL"),
        ({"samples": 0}, "option samples: must be from 1 to 1000000, got 0"),
        ({"samples": "lots"}, "option samples: expected a whole number, got 'lots'"),
        ({"percentage": 2000}, "option percentage: must be from 1 to 1000, got 2000"),
        ({"camera": ""}, "option camera: expected a name in the scene, got ''"),
        ({"camera": "x" * 64}, "option camera: a Blender name has at most 63 printable bytes"),
        ({"view_layer": 3}, "option view_layer: expected a name in the scene, got 3"),
        ({"require": ["gpu"]}, "option require: set by peerfarm itself, not an option to give"),
        ({"devices": "CPU"}, "option devices: blender has no such option (did you mean device?"),
    ],
)  # fmt: skip
def test_a_bad_blender_option_is_one_line_that_names_it(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(OptionError) as error:
        validate("blender", options)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_requirements_are_tags_sorted_without_duplicates() -> None:
    assert requirements(["gpu", "big", "gpu"]) == ["big", "gpu"]
    assert requirements("gpu, big") == ["big", "gpu"]
    assert requirements([]) == []
    for bad, why in [
        (["a,b"], "without commas"),
        (["x" * 65], "without commas"),
        ([str(n) for n in range(9)], "at most 8 tags"),
        ([1], "expected a list of tags"),
    ]:
        with pytest.raises(OptionError, match=f"^require: .*{why}"):
            requirements(bad)
