"""How long the desktop of this machine has been idle: one small interface, platform backends.

:class:`IdleSource` answers ``idle_seconds()`` (``None``: this source cannot tell). Backends:

* Linux: the X11 screensaver's idle time through ``xprintidle`` when it is installed (it
  counts every key and mouse event); else logind's ``IdleHint`` of the graphical session
  (``loginctl show-session``), which desktops (GNOME, KDE, Wayland ones) set after their own
  idle delay;
* macOS: ``HIDIdleTime`` from ``ioreg -c IOHIDSystem`` (nanoseconds since the last input);
* Windows: ``GetLastInputInfo`` through ctypes.

:func:`detect_idle_source` picks the first that answers on this machine; when none does the
peer treats the desktop as idle and says so once in its log (a headless render node has no
user to wait for). :class:`DrivenIdle` is the source tests drive (user input at a time of the
trio clock). :func:`has_desktop_session` decides whether ``--nice`` is on by default.
"""

from __future__ import annotations

import ctypes
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from typing import Protocol

import trio

#: Seconds a platform command may take before the source counts as not answering.
COMMAND_TIMEOUT = 2.0
_HID_RE = re.compile(r'"HIDIdleTime"\s*=\s*(\d+)')


class IdleSource(Protocol):
    """Seconds since the last keyboard or mouse input on this machine's desktop."""

    name: str
    #: Whether ``idle_seconds`` blocks (runs a command): callers run it in a thread.
    blocking: bool

    def idle_seconds(self) -> float | None: ...


def _run(argv: list[str]) -> str | None:
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


class XPrintIdle:
    """X11: ``xprintidle`` prints the milliseconds since the last input."""

    name = "xprintidle"
    blocking = True

    def idle_seconds(self) -> float | None:
        out = _run(["xprintidle"])
        try:
            return int(out.strip()) / 1000.0 if out else None
        except ValueError:
            return None


class LogindIdle:
    """logind's idle hint of a session: idle since the hint was set, else 0 (in use)."""

    name = "logind"
    blocking = True

    def __init__(self, session: str) -> None:
        self.session = session

    def idle_seconds(self) -> float | None:
        out = _run(
            [
                "loginctl",
                "show-session",
                self.session,
                "-p",
                "IdleHint",
                "-p",
                "IdleSinceHintMonotonic",
            ]
        )
        if out is None:
            return None
        fields = dict(line.partition("=")[::2] for line in out.splitlines())
        return logind_idle(fields.get("IdleHint", ""), fields.get("IdleSinceHintMonotonic", ""))


def logind_idle(hint: str, since_us: str, now: float | None = None) -> float | None:
    """Seconds idle from loginctl's ``IdleHint`` and ``IdleSinceHintMonotonic`` (µs, the
    CLOCK_MONOTONIC of the machine); ``None`` when they do not parse."""
    if hint == "no":
        return 0.0
    if hint != "yes":
        return None
    try:
        since = int(since_us) / 1e6
    except ValueError:
        return None
    clock = time.monotonic() if now is None else now  # CLOCK_MONOTONIC, as logind's stamp
    return max(0.0, clock - since) if since > 0 else None


class MacIdle:
    """macOS: ``HIDIdleTime`` of IOHIDSystem, nanoseconds since the last input."""

    name = "ioreg"
    blocking = True

    def idle_seconds(self) -> float | None:
        out = _run(["ioreg", "-c", "IOHIDSystem"])
        match = _HID_RE.search(out or "")
        return int(match.group(1)) / 1e9 if match else None


class WindowsIdle:
    """Windows: ``GetLastInputInfo`` against ``GetTickCount`` (milliseconds)."""

    name = "GetLastInputInfo"
    blocking = False

    def idle_seconds(self) -> float | None:
        class LastInputInfo(ctypes.Structure):
            _fields_ = [("cbSize", ctypes.c_uint), ("dwTime", ctypes.c_uint)]

        info = LastInputInfo()
        info.cbSize = ctypes.sizeof(info)
        windll = getattr(ctypes, "windll", None)
        if windll is None or not windll.user32.GetLastInputInfo(ctypes.byref(info)):
            return None
        ticks = int(windll.kernel32.GetTickCount()) & 0xFFFFFFFF
        return float((ticks - info.dwTime) & 0xFFFFFFFF) / 1000.0


class UnknownIdle:
    """No way to tell on this machine: the desktop counts as idle (``None``)."""

    name = "unknown"
    blocking = False

    def idle_seconds(self) -> float | None:
        return None


class DrivenIdle:
    """For tests: the user touches the machine at times of the trio clock (MockClock)."""

    name = "driven"
    blocking = False

    def __init__(self, idle_since: float | None = None) -> None:
        #: trio time of the last input (None: idle since forever)
        self.last_input = idle_since

    def touch(self) -> None:
        """The user pressed a key now."""
        self.last_input = trio.current_time()

    def idle_seconds(self) -> float | None:
        if self.last_input is None:
            return float("inf")
        return max(0.0, trio.current_time() - self.last_input)


def graphical_session() -> str | None:
    """logind's session id for this process's desktop: ``$XDG_SESSION_ID``, or the user's
    display session as loginctl reports it."""
    session = os.environ.get("XDG_SESSION_ID")
    if session:
        return session
    if sys.platform == "win32":  # no logind there
        return None
    out = _run(["loginctl", "show-user", str(os.getuid()), "-p", "Display", "--value"])
    return out.strip() if out and out.strip() else None


def detect_idle_source() -> IdleSource:
    """The first source that answers here; :class:`UnknownIdle` when none does."""
    system = platform.system()
    candidates: list[IdleSource] = []
    if system == "Windows":
        candidates.append(WindowsIdle())
    elif system == "Darwin":
        candidates.append(MacIdle())
    else:
        if shutil.which("xprintidle") and os.environ.get("DISPLAY"):
            candidates.append(XPrintIdle())
        if shutil.which("loginctl") and (session := graphical_session()):
            candidates.append(LogindIdle(session))
    for source in candidates:
        if source.idle_seconds() is not None:
            return source
    return UnknownIdle()


def has_desktop_session() -> bool:
    """Whether someone may be working at this machine (``--nice`` is on by default then)."""
    system = platform.system()
    if system in ("Windows", "Darwin"):
        return True
    return bool(
        os.environ.get("DISPLAY")
        or os.environ.get("WAYLAND_DISPLAY")
        or os.environ.get("XDG_SESSION_TYPE") in ("x11", "wayland")
    )
