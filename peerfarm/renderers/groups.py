"""Renderer process groups a daemon started, remembered on disk, so none outlives a kill -9.

Every renderer runs in its own process group (``run_logged``, the Blender worker), and a
daemon that stops normally ends each group. A daemon killed with SIGKILL cannot: its renderers
keep running, holding the CPU and writing into scratch folders nobody reads. So each group is
written down when it starts (pid and the process's start time, one JSON line appended to a
file in the data dir) and crossed out when it ends (another line); the next start of the daemon
ends every group of the file still open whose leader runs with the same start time (a recycled
pid is another program: left alone). Appending a line to the file, kept open, costs
microseconds, so a frame of a no-op job pays nearly nothing for it; the file is rewritten small
now and then.

A known limit: a renderer child that calls ``setsid`` itself leaves the group and is not found
(on Windows the job object of a killed daemon is gone: its renderers' descendants are found
through psutil while their leader runs).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from pathlib import Path
from typing import TextIO

import psutil

from peerfarm import platform

log = logging.getLogger("peerfarm")

#: Lines appended before the file is rewritten with only the groups still running.
COMPACT_AFTER = 2000


class ProcessGroups:
    """The renderer process groups of this daemon (a file in its data dir, or in memory)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._live: dict[int, float] = {}
        self._lines = 0
        self._lock = threading.Lock()
        self._file: TextIO | None = None  # kept open: a no-op frame appends two lines

    def started(self, pid: int) -> None:
        """A renderer group led by ``pid`` started: write it down."""
        created = platform.process_created(pid)
        if created is None:
            return  # gone already
        with self._lock:
            self._live[pid] = created
            self._append({"pid": pid, "created": created})

    def ended(self, pid: int) -> None:
        with self._lock:
            if self._live.pop(pid, None) is not None:
                self._append({"pid": pid, "ended": True})

    def _append(self, entry: dict[str, object]) -> None:
        if self.path is None:
            return
        self._lines += 1
        if self._lines > COMPACT_AFTER:
            self._rewrite()
            return
        try:
            if self._file is None:
                # Line-buffered: each line reaches the file (the kernel) as it is written, so
                # a kill -9 of the daemon right after a render started loses nothing.
                self._file = self.path.open("a", buffering=1)
            self._file.write(json.dumps(entry) + "\n")
        except OSError as exc:
            self._close_file()
            log.debug("cannot record renderer processes in %s: %s", self.path, exc)

    def _close_file(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None

    def _rewrite(self) -> None:
        assert self.path is not None
        self._close_file()  # the rewritten file replaces the one it appends to
        text = "".join(json.dumps({"pid": p, "created": c}) + "\n" for p, c in self._live.items())
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text(text)
            platform.replace(tmp, self.path)
            self._lines = len(self._live)
        except OSError as exc:
            log.debug("cannot record renderer processes in %s: %s", self.path, exc)

    def reap_previous(self) -> int:
        """End the groups a previous life of this daemon left running; returns how many."""
        if self.path is None:
            return 0
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return 0
        except OSError as exc:
            log.warning("cannot read %s: %s", self.path, exc)
            return 0
        open_groups: dict[int, float] = {}
        for line in lines:
            try:
                entry = json.loads(line)
                pid = int(entry["pid"])
                if entry.get("ended"):
                    open_groups.pop(pid, None)
                else:
                    open_groups[pid] = float(entry["created"])
            except (ValueError, KeyError, TypeError):
                continue
        reaped = sum(1 for pid, created in open_groups.items() if kill_group_if_same(pid, created))
        with self._lock:
            self._live.clear()
            self._rewrite()
        if reaped:
            log.warning(
                "ended %d renderer process group%s left running by a previous run",
                reaped,
                "" if reaped == 1 else "s",
            )
        return reaped


def kill_group_if_same(pid: int, created: float) -> bool:
    """Kill the process group led by ``pid`` if that process still runs and started at
    ``created`` (the same program, not a recycled pid). True when a group was killed."""
    started = platform.process_created(pid)
    if started is None or abs(started - created) > 0.01:
        return False
    try:
        leader = psutil.Process(pid)
    except psutil.Error:
        return False
    platform.kill_tree_of(leader)
    return True


#: The registry the renderer plumbing writes to; the daemon points it at its data dir.
REGISTRY = ProcessGroups()


def configure(path: Path | None) -> ProcessGroups:
    """Point the registry at ``path`` (the daemon's data dir file) and return it."""
    with REGISTRY._lock:
        REGISTRY._close_file()
        REGISTRY.path = path
    return REGISTRY
