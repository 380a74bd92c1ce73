"""Job options: what each renderer accepts, checked in one place (pure, no I/O).

This module owns the option schemas. ``validate(renderer, options)`` is what a submit calls: it
refuses an unknown option, a value of the wrong type or out of range, and an option peerfarm
sets itself, with one line that names the option (``option width: expected a whole number, got
'640px'``), and returns the options normalised (``640.0`` -> ``640``, ``"png"`` -> ``"PNG"``).
``read(renderer, options)`` is what a renderer calls on a job that came from the network (a
hostile or newer peer may send anything): the same checks, but options it does not know are
ignored (a newer peer may know more) and the ones peerfarm sets itself are checked too.

Every renderer takes ``fps`` (the video's frame rate), ``order`` (ordered, first-last or spread:
the order the farm starts frames in), ``overwrite`` and ``allow_scripts`` (flags the submit sets
from ``--overwrite`` / ``--allow-scripts``) and ``require`` (the tags a peer must have been
started with: ``submit --require``, a sorted list set from the submit's own field). Then:

=========  =====================================================================================
povray     ``width``, ``height`` (pixels, 1-16384), ``antialias`` (threshold 0-3; 0 or false turns
           it off, true is 0.3), ``threads`` (0-1024, 0: POV-Ray decides), ``main`` (the main
           file inside a folder or archive scene)
blender    ``format`` (an image format Blender writes: PNG, OPEN_EXR, ...), ``threads``
           (0-1024, 0: all cores), ``main``, ``device`` (CPU, GPU = any GPU backend, or one
           backend: OPTIX, CUDA, HIP, METAL, ONEAPI), ``samples`` (1-1,000,000), ``percentage``
           (the resolution percentage, 1-1000), ``camera`` and ``view_layer`` (names in the
           file); they are applied by a generated script (``blender_settings``), never by
           editing the file
command    ``args`` (a list of at most 256 strings added to the script's command line)
=========  =====================================================================================
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from peerfarm.errors import UsageError

__all__ = ["SCHEMAS", "OptionError", "accepted", "read", "requirements", "validate"]

#: Largest image side in pixels (16K): a bigger frame costs every peer gigabytes of memory.
MAX_SIDE = 16384
#: Largest render thread count accepted (Blender's own ceiling is 1024).
MAX_THREADS = 1024
#: Highest frame rate a video may be asked for.
MAX_FPS = 1000.0
#: Limits of the command renderer's extra arguments.
MAX_ARGS = 256
MAX_ARG_CHARS = 4096
#: Longest ``main`` path inside a scene folder or archive.
MAX_MAIN_CHARS = 1024
#: Highest frame number the ledger accepts (``ledger.codec.MAX_FRAME``).
MAX_FRAME = 10**9
#: Most tiles a split still may have (``renderers.tiles.MAX_TILES``).
MAX_TILES = 256

#: Cycles device choices: CPU, any GPU backend, or one backend (Cycles' own names).
GPU_BACKENDS = ("OPTIX", "CUDA", "HIP", "METAL", "ONEAPI")
BLENDER_DEVICES = ("CPU", "GPU", *GPU_BACKENDS)
#: Limits of ``submit --require``: tags per job and characters per tag.
MAX_REQUIRE = 8
MAX_TAG_CHARS = 64
#: Longest name of a Blender data-block (camera, view layer): Blender's own limit is 63 bytes.
MAX_BLENDER_NAME = 63
MAX_SAMPLES = 1_000_000
MAX_PERCENTAGE = 1000

#: Image formats Blender's ``-F`` writes as one file per frame.
BLENDER_FORMATS = (
    "BMP",
    "CINEON",
    "DPX",
    "HDR",
    "IRIS",
    "JP2",
    "JPEG",
    "OPEN_EXR",
    "OPEN_EXR_MULTILAYER",
    "PNG",
    "RAWTGA",
    "TGA",
    "TIFF",
    "WEBP",
)


class OptionError(UsageError):
    """A job option a renderer cannot use; the message names the option and says why."""


Check = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class Option:
    """One option: how to check and normalise its value, and who may set it."""

    check: Check
    #: False for options peerfarm sets itself (a submit refuses them; a render checks them).
    user: bool = True


def _shown(value: Any) -> str:
    """A value as a user wrote it, cut short: ``'640px'``, ``true``, ``[1, 2]``."""
    text = repr(value) if isinstance(value, str) else _json(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _json(value: Any) -> str:
    try:
        return json.dumps(value, allow_nan=True)
    except (TypeError, ValueError):
        return type(value).__name__


class _Bad(Exception):
    """Why a value does not fit (without the option's name, which ``validate`` adds)."""


def _number(value: Any, what: str) -> float:
    number = value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise _Bad(f"expected {what}, got {_shown(value)}") from None
    if isinstance(number, bool) or not isinstance(number, int | float):
        raise _Bad(f"expected {what}, got {_shown(value)}")
    if isinstance(number, float) and not math.isfinite(number):
        raise _Bad(f"expected {what}, got {_shown(value)}")
    return number


def whole(low: int, high: int) -> Check:
    """A whole number from ``low`` to ``high`` (``640``, ``640.0`` and ``"640"`` are 640)."""

    def check(value: Any) -> int:
        number = _number(value, "a whole number")
        if number != int(number):
            raise _Bad(f"expected a whole number, got {_shown(value)}")
        result = int(number)
        if not low <= result <= high:
            raise _Bad(f"must be from {low} to {high}, got {result}")
        return result

    return check


def real(low: float, high: float, *, low_open: bool = False) -> Check:
    """A finite number in ``[low, high]`` (``(low, high]`` with ``low_open``)."""

    def check(value: Any) -> float:
        number = float(_number(value, "a number"))
        if number < low or (low_open and number == low) or number > high:
            span = f"above {low:g} and at most" if low_open else f"from {low:g} to"
            raise _Bad(f"must be {span} {high:g}, got {number:g}")
        return number

    return check


def flag(value: Any) -> bool:
    """``true``/``false`` (also ``1``/``0``, ``yes``/``no``, ``on``/``off`` as text)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "0", "no", "off"):
        return False
    raise _Bad(f"expected true or false, got {_shown(value)}")


def choice(names: tuple[str, ...]) -> Check:
    """One of ``names``, in any case; normalised to the case of ``names``."""
    by_upper = {name.upper(): name for name in names}

    def check(value: Any) -> str:
        if isinstance(value, str) and value.strip().upper() in by_upper:
            return by_upper[value.strip().upper()]
        raise _Bad(f"expected one of {', '.join(names)}; got {_shown(value)}")

    return check


def _antialias(value: Any) -> float:
    if isinstance(value, bool):
        return 0.3 if value else 0.0
    return float(real(0.0, 3.0)(value))


def _relative_path(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Bad(f"expected a file name inside the scene folder, got {_shown(value)}")
    if len(value) > MAX_MAIN_CHARS or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise _Bad(f"expected a plain file name inside the scene folder, got {_shown(value)}")
    path = PurePosixPath(value.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts:
        raise _Bad(f"must be a path inside the scene folder, got {_shown(value)}")
    return path.as_posix()


def _args(value: Any) -> list[str]:
    hint = 'a list of strings, e.g. args=\'["--fast", "-q"]\''
    if not isinstance(value, list | tuple) or not all(isinstance(a, str) for a in value):
        raise _Bad(f"expected {hint}; got {_shown(value)}")
    if len(value) > MAX_ARGS:
        raise _Bad(f"at most {MAX_ARGS} arguments, got {len(value)}")
    for arg in value:
        if "\x00" in arg or len(arg) > MAX_ARG_CHARS:
            raise _Bad(f"an argument has a NUL byte or more than {MAX_ARG_CHARS} characters")
    return list(value)


def tag_list(value: Any) -> list[str]:
    """Tags a job requires: a list (or comma-separated text) of short printable names; sorted,
    duplicates merged."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(t, str) for t in items):
        raise _Bad(f"expected a list of tags, got {_shown(value)}")
    tags = sorted({t.strip() for t in items if t.strip()})
    if len(tags) > MAX_REQUIRE:
        raise _Bad(f"at most {MAX_REQUIRE} tags, got {len(tags)}")
    for tag in tags:
        if len(tag) > MAX_TAG_CHARS or not tag.isprintable() or "," in tag:
            raise _Bad(f"a tag is a short printable name without commas, got {_shown(tag)}")
    return tags


def blender_name(value: Any) -> str:
    """The name of something inside a .blend (a camera, a view layer): 1-63 bytes of text."""
    if not isinstance(value, str) or not value.strip():
        raise _Bad(f"expected a name in the scene, got {_shown(value)}")
    if len(value.encode()) > MAX_BLENDER_NAME or not value.isprintable():
        raise _Bad(f"a Blender name has at most {MAX_BLENDER_NAME} printable bytes")
    return value


def _set_by_peerfarm(value: Any) -> Any:
    return value


_THREADS = whole(0, MAX_THREADS)
_COMMON: dict[str, Option] = {
    "fps": Option(real(0.0, MAX_FPS, low_open=True)),
    "overwrite": Option(flag),
    "allow_scripts": Option(flag),
    # The order the farm starts the job's frames in (peerfarm.scheduler.planner.ORDERS).
    "order": Option(choice(("ordered", "first-last", "spread"))),
    # Set by the submitting peer: where a shared-storage scene and output live, and which
    # Blender saved the scene. A user cannot choose them.
    "shared_scene": Option(_set_by_peerfarm, user=False),
    "shared_output": Option(_set_by_peerfarm, user=False),
    "blend_version": Option(_set_by_peerfarm, user=False),
    # ``submit --require TAG``: set from the submit's ``require`` field, not as an option.
    "require": Option(tag_list, user=False),
}

#: Every renderer's options by name.
SCHEMAS: dict[str, dict[str, Option]] = {
    "povray": {
        "width": Option(whole(1, MAX_SIDE)),
        "height": Option(whole(1, MAX_SIDE)),
        "antialias": Option(_antialias),
        "threads": Option(_THREADS),
        "main": Option(_relative_path),
        # Set by the rendering peer from the job's frames: the animation clock's span.
        "frame_first": Option(whole(0, MAX_FRAME), user=False),
        "frames_total": Option(whole(1, MAX_FRAME + 1), user=False),
        **_COMMON,
    },
    "blender": {
        "format": Option(choice(BLENDER_FORMATS)),
        "threads": Option(_THREADS),
        "main": Option(_relative_path),
        # Set by the submitting peer from --tiles: a split still (peerfarm.stills).
        "tiles": Option(whole(2, MAX_TILES), user=False),
        "tile_frame": Option(whole(0, MAX_FRAME), user=False),
        "device": Option(choice(BLENDER_DEVICES)),
        "samples": Option(whole(1, MAX_SAMPLES)),
        "percentage": Option(whole(1, MAX_PERCENTAGE)),
        "camera": Option(blender_name),
        "view_layer": Option(blender_name),
        **_COMMON,
    },
    "command": {
        "args": Option(_args),
        **_COMMON,
    },
}


def accepted(renderer: str) -> list[str]:
    """The options a user may give ``renderer``, sorted."""
    return sorted(name for name, option in SCHEMAS.get(renderer, {}).items() if option.user)


def _unknown(renderer: str, key: str) -> OptionError:
    names = accepted(renderer)
    close = difflib.get_close_matches(key, names, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    return OptionError(
        f"option {_shown(key) if not key.isidentifier() else key}: {renderer} has no such option "
        f"({hint}it takes {', '.join(names)})"
    )


def _check(renderer: str, options: Mapping[str, Any], *, strict: bool) -> dict[str, Any]:
    schema = SCHEMAS.get(renderer)
    if schema is None:
        raise OptionError(f"unknown renderer {renderer!r}: choose one of {', '.join(SCHEMAS)}")
    if not isinstance(options, Mapping):
        raise OptionError(f"options must be a map of names to values, not {_shown(options)}")
    result: dict[str, Any] = {}
    for key, value in options.items():
        option = schema.get(key) if isinstance(key, str) else None
        if option is None:
            if strict:
                raise _unknown(renderer, str(key))
            result[key] = value  # a newer peer's option: not ours to judge
            continue
        if strict and not option.user:
            raise OptionError(f"option {key}: set by peerfarm itself, not an option to give")
        try:
            result[key] = option.check(value)
        except _Bad as exc:
            raise OptionError(f"option {key}: {exc}") from None
    return result


def requirements(tags: Any) -> list[str]:
    """``submit --require`` tags, checked (``OptionError`` naming ``require``) and sorted."""
    try:
        return tag_list(tags)
    except _Bad as exc:
        raise OptionError(f"require: {exc}") from None


def validate(renderer: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The options of a submit, checked against ``renderer``'s schema and normalised.

    Raises ``OptionError`` (a ``UsageError``: HTTP 400, CLI exit 2) with one line naming the
    first option that is unknown, set by peerfarm itself, of the wrong type or out of range.
    """
    return _check(renderer, options, strict=True)


def read(renderer: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The options of a job from the network, checked and normalised for ``renderer``.

    Options the schema does not know pass unchanged (and unused); a known option with a bad
    value raises ``OptionError``, which the renderer turns into that frame's failure.
    """
    return _check(renderer, options, strict=False)
