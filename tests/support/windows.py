"""A simulated Windows on Linux: what a Windows peer's OS refuses, refused here too.

``simulate_windows(monkeypatch)`` sets ``peerfarm.platform.WINDOWS`` and then makes this process
behave as a Windows one does toward peerfarm's code:

- POSIX-only calls are gone: ``os.killpg``, ``os.getpgid``, ``os.fchmod``, ``os.uname``,
  ``os.setsid``; ``os.kill(pid, 0)`` is an error (on Windows signal 0 is CTRL_C_EVENT: it
  interrupts the process instead of asking about it);
- ``os.replace``/``os.rename``/``os.unlink`` fail with a sharing violation (winerror 32) while
  this process holds the file open (Python opens files without FILE_SHARE_DELETE), fail on a
  read-only file (winerror 5), and the first attempt on each path fails as if a virus scanner
  had it open for an instant; ``os.rename`` onto an existing file fails (winerror 183);
- ``os.symlink`` called by peerfarm fails as it does without Developer Mode (winerror 1314).

It cannot simulate job objects, CTRL_BREAK, ACLs or the file system's case rules: those are
checked by ``mypy --platform win32`` and, for case, a real case-insensitive mount. The unit and
simulation layers run under it with ``pytest --simulate-windows`` (``./dev test`` does);
tests that need a POSIX-only thing themselves are marked ``posix_only`` and skipped there.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable
from typing import Any

import pytest

from peerfarm import platform

#: POSIX-only functions of ``os`` that a Windows Python does not have.
POSIX_ONLY = ("killpg", "getpgid", "fchmod", "uname", "setsid")


class NotOnWindows(AssertionError):
    """Code under the simulated Windows called something Windows does not do that way."""


def _win_error(exc_type: type[OSError], err: int, winerror: int, text: str, path: Any) -> OSError:
    exc = exc_type(err, text, os.fspath(path) if path is not None else None)
    exc.winerror = winerror  # type: ignore[attr-defined]
    return exc


def _open_paths() -> set[str]:
    """Real paths of every file this process holds open (Linux /proc/self/fd)."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            found.add(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
    return found


#: Modules between a caller and ``os``: the caller is the first frame outside them.
_PLUMBING = ("os", "pathlib", "shutil", "tempfile", "tests.support.windows")


def _caller_is_peerfarm() -> bool:
    """Whether the code that asked for this file operation is peerfarm's (not a test's)."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__", "") in _PLUMBING:
        frame = frame.f_back  # type: ignore[assignment]
    name = frame.f_globals.get("__name__", "") if frame is not None else ""
    return str(name).startswith("peerfarm")


def _real(path: Any) -> str:
    return os.path.realpath(os.fspath(path))


def _read_only(path: Any) -> bool:
    try:
        return not os.stat(path, follow_symlinks=False).st_mode & 0o200
    except OSError:
        return False


class _Files:
    """The Windows rules for renames and deletes, wrapped around the real calls."""

    def __init__(self) -> None:
        self.real_replace = os.replace
        self.real_rename = os.rename
        self.real_unlink = os.unlink
        self.seen: set[str] = set()
        self.refusals = 0

    def _check(self, *paths: Any, action: str) -> None:
        held = _open_paths()
        for path in paths:
            real = _real(path)
            if real in held:
                self.refusals += 1
                raise _win_error(
                    PermissionError, errno.EACCES, 32,
                    f"{action}: the process cannot access the file because it is being used "
                    "by another process", path,
                )  # fmt: skip
        first = _real(paths[-1])
        if first not in self.seen and os.path.lexists(paths[0]) and _caller_is_peerfarm():
            self.seen.add(first)  # a scanner held it for an instant: the next try works
            self.refusals += 1
            raise _win_error(
                PermissionError, errno.EACCES, 32, f"{action}: briefly in use (scanner)", path
            )

    def replace(self, src: Any, dst: Any, **kwargs: Any) -> None:
        self._check(src, dst, action="replace")
        if os.path.lexists(dst) and _read_only(dst) and not os.path.islink(dst):
            raise _win_error(PermissionError, errno.EACCES, 5, "Access is denied", dst)
        self.real_replace(src, dst, **kwargs)

    def rename(self, src: Any, dst: Any, **kwargs: Any) -> None:
        if os.path.lexists(dst):
            raise _win_error(
                FileExistsError, errno.EEXIST, 183,
                "Cannot create a file when that file already exists", dst,
            )  # fmt: skip
        self._check(src, action="rename")
        self.real_rename(src, dst, **kwargs)

    def unlink(self, path: Any, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("dir_fd") is None and os.path.lexists(path):
            self._check(path, action="delete")
            if _read_only(path) and not os.path.islink(path):
                raise _win_error(PermissionError, errno.EACCES, 5, "Access is denied", path)
        self.real_unlink(path, *args, **kwargs)


def _no_symlinks(real: Callable[..., None]) -> Callable[..., None]:
    """peerfarm may not need a symlink (a test may still plant one: an attacker with
    Developer Mode can)."""

    def symlink(*args: Any, **kwargs: Any) -> None:
        if _caller_is_peerfarm():
            raise _win_error(
                PermissionError, errno.EPERM, 1314,
                "A required privilege is not held by the client", None,
            )  # fmt: skip
        real(*args, **kwargs)

    return symlink


def _kill(real: Callable[[int, int], None]) -> Callable[[int, int], None]:
    def kill(pid: int, sig: int) -> None:
        if sig == 0:
            raise NotOnWindows(
                "os.kill(pid, 0) sends CTRL_C_EVENT on Windows: use peerfarm.platform.pid_alive"
            )
        real(pid, sig)

    return kill


def simulate_windows(monkeypatch: pytest.MonkeyPatch) -> _Files:
    """Make this process behave as a Windows one toward peerfarm (see the module docstring);
    undone by ``monkeypatch`` at the end of the test. Returns the file rules (``refusals``
    counts what they refused)."""
    files = _Files()
    monkeypatch.setattr(platform, "WINDOWS", True)
    for name in POSIX_ONLY:
        monkeypatch.delattr(os, name, raising=False)
    monkeypatch.setattr(os, "kill", _kill(os.kill))
    monkeypatch.setattr(os, "replace", files.replace)
    monkeypatch.setattr(os, "rename", files.rename)
    monkeypatch.setattr(os, "unlink", files.unlink)
    monkeypatch.setattr(os, "remove", files.unlink)
    monkeypatch.setattr(os, "symlink", _no_symlinks(os.symlink))
    return files
