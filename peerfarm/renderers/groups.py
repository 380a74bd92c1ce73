"""Renderer process groups a daemon started, remembered on disk, so none outlives a kill -9.

Every renderer runs in its own process group (``run_logged``, the Blender worker), and a
daemon that stops normally ends each group. A daemon killed with SIGKILL cannot: its renderers
keep running, holding the CPU and writing into scratch folders nobody reads. So each group is
written down when it starts (pid and the moment it was spawned, one JSON line appended to a
file in the data dir) and crossed out when it ends (another line); the next start of the
daemon ends every group of the file still open whose leader started then, give or take two
seconds (a recycled pid is another program: left alone). Appending a line to the file, kept
open, costs microseconds, so a frame of a no-op job pays nearly nothing for it; the file is
rewritten small now and then.

A known limit: a renderer child that calls ``setsid`` itself leaves the group and is not found
(on Windows the job object of a killed daemon is gone: its renderers' descendants are found
through psutil while their leader runs).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from pathlib import Path
from typing import TextIO

import psutil

from peerfarm import platform

log = logging.getLogger("peerfarm")

#: Lines appended before the file is rewritten with only the groups still running.
COMPACT_AFTER = 2000
#: How far a group's recorded spawn time may be from its leader's start time as the OS gives
#: it (on Linux the boot time it is counted from is whole seconds). A pid the OS gave again to
#: another program would have to be reused within this time of the first start: the pid space
#: does not wrap in two seconds.
SPAWNED_TOLERANCE_S = 2.0


class ProcessGroups:
    """The renderer process groups of this daemon (a file in its data dir, or in memory)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._live: dict[int, float] = {}
        self._lines = 0
        self._lock = threading.Lock()
        self._file: TextIO | None = None  # kept open: a no-op frame appends two lines

    def started(self, pid: int) -> None:
        """A renderer group led by ``pid`` started just now: write it down, with this moment
        as its start time (reading the process's own from /proc waits while the child is still
        in ``exec``: a twentieth of a no-op frame's time on a busy peer)."""
        spawned = time.time()
        with self._lock:
            self._live[pid] = spawned
            self._append({"pid": pid, "spawned": spawned})

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
        text = "".join(json.dumps({"pid": p, "spawned": t}) + "\n" for p, t in self._live.items())
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
        open_groups: dict[int, tuple[float, float]] = {}  # pid -> (start time, tolerance)
        for line in lines:
            try:
                entry = json.loads(line)
                pid = int(entry["pid"])
                if entry.get("ended"):
                    open_groups.pop(pid, None)
                elif "spawned" in entry:
                    open_groups[pid] = (float(entry["spawned"]), SPAWNED_TOLERANCE_S)
                else:  # written by an older version: the process's own start time
                    open_groups[pid] = (float(entry["created"]), 0.01)
            except (ValueError, KeyError, TypeError):
                continue
        reaped = sum(
            1
            for pid, (when, within) in open_groups.items()
            if kill_group_if_same(pid, when, within)
        )
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


def kill_group_if_same(pid: int, created: float, within: float = SPAWNED_TOLERANCE_S) -> bool:
    """Kill the process group led by ``pid`` if that process still runs and started at
    ``created``, give or take ``within`` seconds (the same program, not a recycled pid). True
    when a group was killed."""
    try:
        leader = psutil.Process(pid)
        if abs(leader.create_time() - created) > within:
            return False
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
