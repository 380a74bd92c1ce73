"""Every Blender this machine has, and which one renders a given file.

This module owns finding Blender installations and choosing among them. Two halves:

* Pure: where Blender is usually installed on Linux, macOS and Windows (``candidate_patterns``,
  glob patterns built from the platform, its environment and the home folder), reading the
  version out of ``blender --version``, the order of installations, the choice for a file
  (``choose``: the newest installation whose version is at least the file's; at equal versions
  the ``bpy`` module, since its worker stays warm between frames) and what a peer advertises
  (``advertised``: every version, ascending).
* I/O (``discover``): each ``--blender PATH``, the ``blender`` on PATH, the standard locations
  (versioned folders under /opt and the home folder, /Applications/Blender*.app, Program
  Files\\Blender Foundation\\*, snap, flatpak, Steam), each probed with ``blender -b
  --factory-startup --version``; and ``bpy`` when this interpreter can import it, its version
  read from the package metadata without importing it (importing bpy takes seconds).

A file saved by a newer Blender than every installation cannot be rendered here: Blender cannot
open files from its future (3.4 cannot read 5.0 files), while a newer Blender opens older files.
"""

from __future__ import annotations

import glob
import importlib.metadata
import importlib.util
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath, PureWindowsPath
from typing import Literal

import trio

from peerfarm.renderers.base import RenderFailed, run_logged

log = logging.getLogger("peerfarm")

VERSION_OUTPUT_RE = re.compile(r"Blender\s+(\d+\.\d+(?:\.\d+)?)")
_NUMBERS_RE = re.compile(r"\d+")
#: Seconds one ``blender --version`` probe may take (a cold start from a slow disk).
PROBE_TIMEOUT_S = 30.0
#: Versions a peer advertises at most (the newest), so its gossiped metadata stays small.
MAX_ADVERTISED = 8

Kind = Literal["cli", "bpy"]


@dataclass(frozen=True, slots=True)
class Installation:
    """One Blender: a program (``cli``, ``path`` the executable) or the ``bpy`` module
    (``path`` the Python interpreter that imports it). ``source`` says how it was found."""

    kind: Kind
    version: str
    path: str
    source: str = ""

    @property
    def version_key(self) -> tuple[int, ...]:
        """(major, minor, patch) for ordering; () when the version does not parse."""
        return version_key(self.version)

    def describe(self) -> str:
        where = f"bpy in {self.path}" if self.kind == "bpy" else self.path
        return f"{self.version} ({where})"


def version_key(text: str) -> tuple[int, ...]:
    """``"4.2.3 LTS"`` -> (4, 2, 3); ``"5.0"`` -> (5, 0, 0); () without a ``major.minor``."""
    if not re.search(r"\d+\.\d+", text):
        return ()
    numbers = [int(n) for n in _NUMBERS_RE.findall(text)[:3]]
    return tuple(numbers + [0] * (3 - len(numbers)))


def parse_version_output(text: str) -> str | None:
    """The version in ``blender --version`` output ("Blender 3.4.1" -> "3.4.1"), or None."""
    match = VERSION_OUTPUT_RE.search(text)
    return match.group(1) if match else None


# --- where to look (pure) -------------------------------------------------------------------


def candidate_patterns(system: str, env: Mapping[str, str], home: str) -> list[str]:
    """Glob patterns of Blender executables in the usual places of ``system`` (as
    ``platform.system()`` names it: Linux, Darwin, Windows), most common first."""
    if system == "Windows":
        win = PureWindowsPath
        roots = [
            env.get("ProgramFiles") or env.get("PROGRAMFILES") or r"C:\Program Files",
            env.get("ProgramFiles(x86)") or r"C:\Program Files (x86)",
        ]
        if local := env.get("LOCALAPPDATA"):
            roots.append(str(win(local) / "Programs"))
        patterns = [str(win(root) / "Blender Foundation" / "*" / "blender.exe") for root in roots]
        patterns.append(str(win(roots[1]) / "Steam" / "steamapps" / "common" / "Blender" /
                            "blender.exe"))  # fmt: skip
        return _unique(patterns)
    posix = PurePosixPath
    user = posix(home)
    if system == "Darwin":
        steam = user / "Library" / "Application Support" / "Steam" / "steamapps" / "common"
        bundles = [posix("/Applications"), user / "Applications", steam / "Blender"]
        return _unique(
            str(folder / "Blender*.app" / "Contents" / "MacOS" / name)
            for folder in bundles
            for name in ("Blender", "blender")
        )
    flatpak_user = posix(env.get("XDG_DATA_HOME") or str(user / ".local" / "share"))
    return _unique(
        [
            "/usr/bin/blender",
            "/usr/local/bin/blender",
            "/snap/bin/blender",
            "/var/lib/flatpak/exports/bin/org.blender.Blender",
            str(flatpak_user / "flatpak" / "exports" / "bin" / "org.blender.Blender"),
            "/opt/blender*/blender",
            "/opt/Blender*/blender",
            "/opt/blender/*/blender",
            "/usr/local/blender*/blender",
            str(user / "blender*" / "blender"),
            str(user / "Blender*" / "blender"),
            str(user / "Applications" / "blender*" / "blender"),
            str(user / "Downloads" / "blender*" / "blender"),
            str(user / ".local" / "bin" / "blender"),
            str(user / ".local" / "opt" / "blender*" / "blender"),
            str(user / ".steam" / "steam" / "steamapps" / "common" / "Blender" / "blender"),
        ]
    )


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


# --- order and choice (pure) ----------------------------------------------------------------


def _rank(install: Installation, index: int) -> tuple[tuple[int, ...], int, int]:
    # Newer first; at equal versions bpy (warm) beats a program; then the first found.
    return (install.version_key, install.kind == "bpy", -index)


def sort_installs(installs: Iterable[Installation]) -> list[Installation]:
    """Installations without duplicates (same kind and path), ascending: the last is preferred."""
    unique = list({(i.kind, i.path): i for i in installs}.values())
    order = {id(install): index for index, install in enumerate(unique)}
    return sorted(unique, key=lambda i: _rank(i, order[id(i)]))


def can_open(install: Installation, file_version: tuple[int, int] | None) -> bool:
    """Whether ``install`` opens a file saved by ``file_version`` (unknown versions: yes)."""
    if file_version is None or not install.version_key:
        return True
    return install.version_key[:2] >= tuple(file_version)


def choose(
    installs: Sequence[Installation], file_version: tuple[int, int] | None
) -> Installation | None:
    """The newest installation that can open a file saved by ``file_version`` (None: any file)."""
    able = [(i, index) for index, i in enumerate(installs) if can_open(i, file_version)]
    if not able:
        return None
    return max(able, key=lambda pair: _rank(*pair))[0]


def advertised(installs: Sequence[Installation]) -> list[str]:
    """Every distinct version, ascending, at most ``MAX_ADVERTISED`` (the newest)."""
    versions = sorted({i.version for i in installs}, key=lambda v: (version_key(v), v))
    return versions[-MAX_ADVERTISED:]


def cannot_open_reason(installs: Sequence[Installation], file_version: tuple[int, int]) -> str:
    """One line for a file no installation here can open."""
    have = ", ".join(advertised(installs)) or "none"
    return (
        f"no Blender on this peer can open a file saved by Blender "
        f"{file_version[0]}.{file_version[1]} (installed: {have})"
    )


# --- looking (I/O) --------------------------------------------------------------------------


def expand_patterns(patterns: Iterable[str]) -> list[str]:
    """Existing executable files matching ``patterns``, each pattern's matches newest-named last."""
    found: list[str] = []
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)):
            if os.path.isfile(path) and os.access(path, os.X_OK):
                found.append(path)
    return found


def _same_file_key(path: str) -> tuple[int, int] | str:
    try:
        stat = os.stat(path)
    except OSError:
        return path
    return (stat.st_dev, stat.st_ino)


async def probe_cli(path: str, source: str = "") -> Installation | None:
    """Run ``path -b --factory-startup --version``; the installation, or None if it is not one."""
    with trio.move_on_after(PROBE_TIMEOUT_S):
        try:
            run = await run_logged([path, "-b", "--factory-startup", "--version"])
        except RenderFailed as exc:
            log.debug("not a Blender: %s (%s)", path, exc.reason)
            return None
        version = parse_version_output(run.log_tail)
        if run.returncode != 0 or version is None:
            log.debug("not a Blender: %s (status %s)", path, run.returncode)
            return None
        return Installation("cli", version, path, source)
    log.warning("%s did not print its version within %g s", path, PROBE_TIMEOUT_S)
    return None


def bpy_installation(python: str = sys.executable) -> Installation | None:
    """``bpy`` importable by ``python`` (this interpreter: read from its metadata, no import)."""
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        if importlib.util.find_spec("bpy") is None:
            return None
        try:
            version = importlib.metadata.version("bpy")
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
        return Installation("bpy", version, python, "bpy")
    code = "import importlib.metadata as m; print(m.version('bpy'))"
    try:
        done = subprocess.run(
            [python, "-c", code], capture_output=True, text=True, timeout=PROBE_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    version = done.stdout.strip()
    return Installation("bpy", version, python, "bpy") if done.returncode == 0 and version else None


def resolve_executable(path: str) -> str | None:
    """``--blender`` as given: a file, a folder holding ``blender``/``blender.exe``, or a name
    on PATH."""
    if os.path.isdir(path):
        for name in ("blender", "blender.exe", "Blender", "Contents/MacOS/Blender"):
            candidate = os.path.join(path, name)
            if os.path.isfile(candidate):
                return candidate
        return None
    return shutil.which(path) or (path if os.path.isfile(path) else None)


async def discover(
    explicit: Sequence[str] = (),
    *,
    programs: bool = True,
    standard: bool = True,
    module: bool = True,
    python: str = sys.executable,
    system: str | None = None,
    env: Mapping[str, str] | None = None,
    home: str | None = None,
) -> list[Installation]:
    """Every Blender here, ascending (see ``sort_installs``).

    ``explicit``: each ``--blender PATH`` (a warning when one is not a working Blender);
    ``programs``: also the ``blender`` on PATH, and with ``standard`` the usual locations;
    ``module``: also ``bpy`` for ``python``.
    """
    env = os.environ if env is None else env
    candidates: list[tuple[str, str]] = []
    missing: list[str] = []
    for given in explicit:
        resolved = resolve_executable(given)
        if resolved is None:
            missing.append(given)
        else:
            candidates.append((resolved, "--blender"))
    if programs:
        if on_path := shutil.which("blender", path=env.get("PATH")):
            candidates.append((on_path, "PATH"))
        if standard:
            patterns = candidate_patterns(
                system or platform.system(), env, home or os.path.expanduser("~")
            )
            candidates += [(path, "standard") for path in expand_patterns(patterns)]
    for given in missing:
        log.warning("--blender %s: no such program", given)
    seen: dict[tuple[int, int] | str, tuple[str, str]] = {}
    for path, source in candidates:
        seen.setdefault(_same_file_key(path), (path, source))
    probed: list[Installation | None] = [None] * len(seen)

    async def probe(index: int, path: str, source: str) -> None:
        probed[index] = await probe_cli(path, source)

    async with trio.open_nursery() as nursery:
        for index, (path, source) in enumerate(seen.values()):
            nursery.start_soon(probe, index, path, source)
    for path, source in seen.values():
        if source == "--blender" and not any(i and i.path == path for i in probed):
            log.warning("--blender %s: not a working Blender (no version printed)", path)
    installs = [i for i in probed if i is not None]
    if module and (bpy := await trio.to_thread.run_sync(bpy_installation, python)):
        installs.append(bpy)
    return sort_installs(installs)
