"""The CLI's arguments made into values (pure, but for the scene checks that look at files).

Every mistake is a ``UsageError`` with one line that says what to write instead.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from peerfarm.control import RENDERERS
from peerfarm.errors import UsageError

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1024, "kib": 1024, "kb": 1000,
    "m": 1024**2, "mib": 1024**2, "mb": 1000**2,
    "g": 1024**3, "gib": 1024**3, "gb": 1000**3,
    "t": 1024**4, "tib": 1024**4, "tb": 1000**4,
}  # fmt: skip


def parse_hostport(text: str, default_port: int) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT``, ``HOST`` (default port) or ``:PORT`` (all interfaces)."""
    value = text.strip()
    host, port_text = value, ""
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise UsageError(f"bad address {text!r}: missing ']'")
        host, rest = value[1:end], value[end + 1 :]
        if rest and not rest.startswith(":"):
            raise UsageError(f"bad address {text!r}: expected [HOST]:PORT")
        port_text = rest[1:]
    elif value.count(":") == 1:
        host, port_text = value.split(":")
    if not port_text:
        port = default_port
    elif port_text.isdigit() and int(port_text) <= 65535:
        port = int(port_text)
    else:
        raise UsageError(f"bad port in {text!r}: use HOST:PORT with a port from 0 to 65535")
    return host or "0.0.0.0", port


def parse_size(text: str) -> int:
    """Bytes from ``500M``, ``10G``, ``10GiB`` (binary) or ``10GB`` (decimal), or plain bytes."""
    value = text.strip().lower().replace(" ", "")
    number = value.rstrip("kmgtib")
    unit = value[len(number) :]
    try:
        amount = float(number)
    except ValueError:
        raise UsageError(f"bad size {text!r}: write e.g. 500M, 20G or 1T") from None
    if unit not in _SIZE_UNITS or amount < 0:
        raise UsageError(f"bad size {text!r}: write e.g. 500M, 20G or 1T")
    return int(amount * _SIZE_UNITS[unit])


def parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; a value is JSON when it parses (numbers, true), else text."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"bad --option {pair!r}: write KEY=VALUE (e.g. width=640)")
        try:  # NaN and Infinity stay text: JSON has no such numbers
            options[key.strip()] = json.loads(value, parse_constant=_no_constant)
        except (ValueError, RecursionError):
            options[key.strip()] = value
    return options


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def check_scene(path: Path) -> Path:
    """The scene made absolute; ``UsageError`` if it is missing or unreadable."""
    scene = path.expanduser().absolute()
    if not scene.exists():
        raise UsageError(f"scene not found: {scene}")
    if not os.access(scene, os.R_OK) or (scene.is_dir() and not os.access(scene, os.X_OK)):
        raise UsageError(f"scene is not readable: {scene}")
    return scene


def check_renderer(scene: Path, renderer: str | None) -> None:
    """``UsageError`` unless ``renderer`` is known, or (when None) the scene's type is."""
    if renderer is not None:
        if renderer not in RENDERERS:
            raise UsageError(f"unknown renderer {renderer!r}: choose one of {', '.join(RENDERERS)}")
        return
    # Not from the renderers package: importing the plugins takes about 0.1 s.
    from peerfarm.scene_kind import renderer_for_scene

    renderer_for_scene(scene)
