"""What differs between Linux, macOS and Windows: every OS-specific call peerfarm makes is here.

No other module calls ``os.killpg``, ``os.fchmod``, ``os.kill(pid, 0)`` or names a POSIX-only
signal; they ask this module. It owns:

- Process trees. A renderer (and a test's daemon) starts as the head of a tree of its own
  (``tree_kwargs``): a new session, so a process group, on POSIX; a new process group on
  Windows, plus a job object (``track_tree``) whose handle kills every process of the job when
  it is closed. ``signal_tree`` asks a tree to leave (SIGTERM; CTRL_BREAK on Windows) or ends it
  (SIGKILL; TerminateJobObject), ``tree_alive`` tells whether any of it still runs,
  ``release_tree`` forgets it. Where neither groups nor a job are available (the simulated
  Windows of the tests) the tree is the leader and its descendants as psutil sees them.
- A child's exit as a file descriptor (``exit_fd``: a pidfd on Linux), so a renderer is waited
  for by the event loop without a thread.
- Liveness of a pid (``pid_alive``): ``os.kill(pid, 0)`` on POSIX; never on Windows, where
  signal 0 is CTRL_C_EVENT and would interrupt the process it asks about.
- The signals that mean "leave gracefully" (``graceful_signals``): SIGINT and SIGTERM, plus
  SIGBREAK (Ctrl-Break, a console closing) on Windows; and the one a parent sends for it
  (``stop_signal``).
- Files: ``replace`` and ``remove`` retry while another process holds the file open on Windows
  (sharing violations, antivirus scanners, the search indexer) and clear the read-only attribute
  a blob carries; ``set_mode`` sets permission bits without ``os.fchmod`` (absent before Python
  3.13 on Windows, where only the read-only bit means anything); ``make_private`` makes a folder
  its owner's alone on POSIX (on Windows the user profile's ACL already does).
- The machine's name (``host_name``: ``os.uname`` does not exist on Windows).

``WINDOWS`` is read at every call, so the tests' simulated-Windows layer can set it on Linux
and exercise the Windows rules (retries, read-only files, trees without groups).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peerfarm.errors import PeerfarmError

if TYPE_CHECKING:
    import psutil

#: True on native Windows. The simulated-Windows test layer sets it on Linux.
WINDOWS = sys.platform == "win32"

#: Seconds slept between attempts of a file operation another process blocks (Windows only):
#: about 2.5 s in all, longer than a virus scanner or the indexer holds a fresh file.
RETRY_DELAYS_S = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.6, 0.7)

#: Windows error numbers that mean "someone else has it open right now": worth a retry.
#: ERROR_ACCESS_DENIED (5, also a pending delete), ERROR_SHARING_VIOLATION, ERROR_LOCK_VIOLATION.
SHARING_ERRORS = frozenset({5, 32, 33})


#: What a file system without permission bits (FAT through FUSE, some SMB mounts) answers to
#: chmod: the mode is a safeguard there, not a requirement.
NO_MODES = frozenset({errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM})


class FileBusy(PeerfarmError, PermissionError):
    """Windows kept refusing to replace or delete a file another program holds open (after
    ``RETRY_DELAYS_S``); an ``OSError`` too, so callers that turn OS errors into their own
    keep working. The message names the file and what to do."""

    def __init__(self, action: str, path: Path | str, exc: OSError) -> None:
        super().__init__(
            exc.errno,
            f"cannot {action} {path}: another program holds it open (an image viewer, a "
            "virus scanner, the search indexer); close it and try again",
            os.fspath(path),
        )


# --- signals ---------------------------------------------------------------------------------


def graceful_signals() -> tuple[int, ...]:
    """The signals after which the daemon leaves the farm gracefully: Ctrl-C (SIGINT), SIGTERM
    (systemd, launchd, kill), and on Windows SIGBREAK (Ctrl-Break, the console closing)."""
    names = ("SIGINT", "SIGTERM", "SIGBREAK")
    return tuple(int(getattr(signal, name)) for name in names if hasattr(signal, name))


def signal_name(signum: int) -> str:
    """``SIGTERM`` for 15; the number when this platform has no name for it."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)


def stop_signal() -> int:
    """What a parent sends a child it started with ``tree_kwargs`` to ask it to leave:
    SIGTERM on POSIX, CTRL_BREAK_EVENT (seen as SIGBREAK) on Windows."""
    if sys.platform == "win32":
        return int(signal.CTRL_BREAK_EVENT)
    return int(signal.SIGTERM)


# --- liveness --------------------------------------------------------------------------------


def pid_alive(pid: int) -> bool:
    """Whether a process with ``pid`` exists (one of another user counts as alive)."""
    if pid <= 0:
        return False
    if sys.platform != "win32" and not WINDOWS:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        except OSError:
            return False
        return True
    import psutil  # here: a short command checking its daemon's pid does not load it

    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


_EXIT_FDS: list[bool] = []  # whether exit_fd works here, once probed


def exit_fd(pid: int) -> int | None:
    """A file descriptor that becomes readable when our child ``pid`` exits (a pidfd: Linux
    5.3 and later), or None where there is none (macOS, Windows, older kernels, sandboxes that
    refuse the call). The caller closes it."""
    opener = getattr(os, "pidfd_open", None)
    if opener is None or WINDOWS or sys.platform != "linux":
        return None
    try:
        fd: int = opener(pid)
    except OSError:
        return None
    return fd


def exit_fds_work() -> bool:
    """Whether :func:`exit_fd` gives a descriptor on this machine (probed once, on ourselves)."""
    if not _EXIT_FDS:
        fd = exit_fd(os.getpid())
        if fd is not None:
            os.close(fd)
        _EXIT_FDS.append(fd is not None)
    return _EXIT_FDS[0] and not WINDOWS


# --- process trees ---------------------------------------------------------------------------


def tree_kwargs() -> dict[str, Any]:
    """Keyword arguments for ``subprocess.Popen`` / ``trio.lowlevel.open_process`` that start
    a child as the head of its own tree: a new session on POSIX, a new process group on
    Windows (so CTRL_BREAK reaches it and not us)."""
    if sys.platform == "win32":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


class _Jobs:
    """Windows job objects by leader pid; closing one kills every process in it."""

    def __init__(self) -> None:
        self._handles: dict[int, int] = {}
        self._lock = threading.Lock()

    def add(self, pid: int) -> None:
        if sys.platform == "win32":
            handle = _win_job_for(pid)
            if handle:
                with self._lock:
                    self._handles[pid] = handle

    def get(self, pid: int) -> int | None:
        with self._lock:
            return self._handles.get(pid)

    def close(self, pid: int) -> None:
        with self._lock:
            handle = self._handles.pop(pid, None)
        if handle is not None and sys.platform == "win32":
            _KERNEL32.CloseHandle(handle)


_JOBS = _Jobs()


def track_tree(pid: int) -> None:
    """Right after ``pid`` started with ``tree_kwargs``: on Windows put it into a job object
    that ends the whole tree when it is closed (children it starts later join the job). A
    child started in the instant before this call is outside the job; POSIX needs nothing."""
    _JOBS.add(pid)


def release_tree(pid: int) -> None:
    """The tree of ``pid`` is finished with: close its job object (ending what is left of it)."""
    _JOBS.close(pid)


def signal_tree(pid: int, *, kill: bool) -> bool:
    """Ask the tree led by ``pid`` to leave (``kill=False``) or end it now (``kill=True``).

    POSIX: SIGTERM or SIGKILL to its process group. Windows: CTRL_BREAK_EVENT to its process
    group, or TerminateJobObject. False when nothing of the tree was found.
    """
    if sys.platform != "win32" and not WINDOWS:
        try:
            os.killpg(pid, signal.SIGKILL if kill else signal.SIGTERM)
        except ProcessLookupError:
            return False
        except PermissionError:  # pragma: no cover - a recycled id owned by someone else
            return False
        return True
    if sys.platform == "win32":
        job = _JOBS.get(pid)
        if kill and job is not None:
            _KERNEL32.TerminateJobObject(job, 1)
            return True
        if not kill:
            try:
                os.kill(pid, signal.CTRL_BREAK_EVENT)
            except OSError:
                return tree_alive(pid)
            return True
    import psutil

    members = _tree_members(pid)
    for process in members:
        with contextlib.suppress(psutil.Error):
            process.kill() if kill else process.terminate()
    return bool(members)


def tree_alive(pid: int) -> bool:
    """Whether any process of the tree led by ``pid`` still runs (zombies do not count)."""
    if sys.platform != "win32" and not WINDOWS:
        return _group_has_live_members(pid)
    if sys.platform == "win32":
        job = _JOBS.get(pid)
        if job is not None:
            return _win_job_active(job) > 0
    return any(_running(p) for p in _tree_members(pid))


def _running(process: psutil.Process) -> bool:
    import psutil

    try:
        return bool(process.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _tree_members(pid: int) -> list[psutil.Process]:
    import psutil

    try:
        leader = psutil.Process(pid)
        return [leader, *leader.children(recursive=True)]
    except psutil.Error:
        return []


def tree_processes(pid: int) -> list[psutil.Process]:
    """The process ``pid`` and every process below it ([] when it is gone), for sampling a
    render's memory and CPU.

    On Linux the tree is walked down from ``pid`` through ``/proc/PID/task/TID/children``,
    which costs the tree's size; psutil's ``children`` reads every process of the machine
    (1.8 ms with 68 processes, several times a frame). Elsewhere, or on a kernel without
    those files, psutil's walk."""
    import psutil

    pids = _proc_tree_pids(pid)
    if pids is None:
        return _tree_members(pid)
    members = []
    for member in pids:
        with contextlib.suppress(psutil.Error):
            members.append(psutil.Process(member))
    return members


@functools.cache
def _proc_children_files() -> bool:
    """Whether this kernel lists a thread's children in /proc (CONFIG_PROC_CHILDREN)."""
    me = f"/proc/{os.getpid()}/task/{threading.get_native_id()}/children"
    return sys.platform == "linux" and os.path.exists(me)


def _proc_tree_pids(pid: int) -> list[int] | None:
    """``pid`` and its descendants from /proc (None: no children files here; [] when gone).
    A process that exits meanwhile is skipped, as psutil skips it."""
    if not _proc_children_files():
        return None
    if not os.path.isdir(f"/proc/{pid}/task"):
        return []
    found = [pid]
    index = 0
    while index < len(found):
        parent = found[index]
        index += 1
        try:
            threads = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue  # exited meanwhile
        for thread in threads:
            try:
                with open(f"/proc/{parent}/task/{thread}/children", "rb") as f:
                    found.extend(int(child) for child in f.read().split())
            except (OSError, ValueError):
                continue
    return found


def _group_has_live_members(pgid: int) -> bool:
    """Whether any process of group ``pgid`` still runs. Reads /proc on Linux (zombies waiting
    for a reaper do not count); elsewhere (macOS) any member, zombie or not, counts."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        if sys.platform == "win32":
            return False
        try:
            os.killpg(pgid, 0)
        except OSError:
            return False
        return True
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"{entry.path}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


def kill_tree_of(process: psutil.Process) -> None:
    """End ``process``'s group (POSIX) and every descendant psutil can see (all platforms):
    for a tree left behind by an earlier run of the daemon, whose job object is gone."""
    import psutil

    members = [process]
    with contextlib.suppress(psutil.Error):
        members += process.children(recursive=True)
    if sys.platform != "win32" and not WINDOWS:
        with contextlib.suppress(OSError):
            os.killpg(process.pid, signal.SIGKILL)
    for member in members:
        with contextlib.suppress(psutil.Error):
            member.kill()


if sys.platform == "win32":
    import ctypes
    from ctypes import wintypes

    _KERNEL32 = ctypes.WinDLL("kernel32", use_last_error=True)
    # Handles are pointer-sized: declare them, or ctypes would cut them to a C int.
    _HANDLE, _DWORD, _PTR = wintypes.HANDLE, wintypes.DWORD, ctypes.c_void_p
    _KERNEL32.CreateJobObjectW.restype = _HANDLE
    _KERNEL32.CreateJobObjectW.argtypes = [_PTR, wintypes.LPCWSTR]
    _KERNEL32.OpenProcess.restype = _HANDLE
    _KERNEL32.OpenProcess.argtypes = [_DWORD, wintypes.BOOL, _DWORD]
    _KERNEL32.SetInformationJobObject.argtypes = [_HANDLE, ctypes.c_int, _PTR, _DWORD]
    _KERNEL32.QueryInformationJobObject.argtypes = [_HANDLE, ctypes.c_int, _PTR, _DWORD, _PTR]
    _KERNEL32.AssignProcessToJobObject.argtypes = [_HANDLE, _HANDLE]
    _KERNEL32.TerminateJobObject.argtypes = [_HANDLE, wintypes.UINT]
    _KERNEL32.CloseHandle.argtypes = [_HANDLE]
    _JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE = 0x2000
    _JOB_OBJECT_EXTENDED_LIMIT_INFORMATION = 9
    _JOB_OBJECT_BASIC_ACCOUNTING_INFORMATION = 1
    _PROCESS_SET_QUOTA = 0x0100
    _PROCESS_TERMINATE = 0x0001

    class _IoCounters(ctypes.Structure):
        _fields_ = [
            (name, ctypes.c_ulonglong)
            for name in (
                "ReadOperationCount", "WriteOperationCount", "OtherOperationCount",
                "ReadTransferCount", "WriteTransferCount", "OtherTransferCount",
            )
        ]  # fmt: skip

    class _BasicLimits(ctypes.Structure):
        _fields_ = [
            ("PerProcessUserTimeLimit", ctypes.c_int64),
            ("PerJobUserTimeLimit", ctypes.c_int64),
            ("LimitFlags", wintypes.DWORD),
            ("MinimumWorkingSetSize", ctypes.c_size_t),
            ("MaximumWorkingSetSize", ctypes.c_size_t),
            ("ActiveProcessLimit", wintypes.DWORD),
            ("Affinity", ctypes.c_size_t),
            ("PriorityClass", wintypes.DWORD),
            ("SchedulingClass", wintypes.DWORD),
        ]

    class _ExtendedLimits(ctypes.Structure):
        _fields_ = [
            ("BasicLimitInformation", _BasicLimits),
            ("IoInfo", _IoCounters),
            ("ProcessMemoryLimit", ctypes.c_size_t),
            ("JobMemoryLimit", ctypes.c_size_t),
            ("PeakProcessMemoryUsed", ctypes.c_size_t),
            ("PeakJobMemoryUsed", ctypes.c_size_t),
        ]

    class _Accounting(ctypes.Structure):
        _fields_ = [
            ("TotalUserTime", ctypes.c_int64),
            ("TotalKernelTime", ctypes.c_int64),
            ("ThisPeriodTotalUserTime", ctypes.c_int64),
            ("ThisPeriodTotalKernelTime", ctypes.c_int64),
            ("TotalPageFaultCount", wintypes.DWORD),
            ("TotalProcesses", wintypes.DWORD),
            ("ActiveProcesses", wintypes.DWORD),
            ("TotalTerminatedProcesses", wintypes.DWORD),
        ]

    def _win_job_for(pid: int) -> int:
        """A kill-on-close job object holding ``pid``; 0 when Windows refused one."""
        job = _KERNEL32.CreateJobObjectW(None, None)
        if not job:
            return 0
        limits = _ExtendedLimits()
        limits.BasicLimitInformation.LimitFlags = _JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
        process = _KERNEL32.OpenProcess(_PROCESS_SET_QUOTA | _PROCESS_TERMINATE, False, pid)
        ok = (
            process
            and _KERNEL32.SetInformationJobObject(
                job,
                _JOB_OBJECT_EXTENDED_LIMIT_INFORMATION,
                ctypes.byref(limits),
                ctypes.sizeof(limits),
            )
            and _KERNEL32.AssignProcessToJobObject(job, process)
        )
        if process:
            _KERNEL32.CloseHandle(process)
        if not ok:
            _KERNEL32.CloseHandle(job)
            return 0
        return int(job)

    def _win_job_active(job: int) -> int:
        info = _Accounting()
        ok = _KERNEL32.QueryInformationJobObject(
            job,
            _JOB_OBJECT_BASIC_ACCOUNTING_INFORMATION,
            ctypes.byref(info),
            ctypes.sizeof(info),
            None,
        )
        return int(info.ActiveProcesses) if ok else 0


# --- files -----------------------------------------------------------------------------------


def _blocked(exc: OSError) -> bool:
    """A Windows refusal that goes away when the other holder closes the file."""
    if not WINDOWS or not isinstance(exc, PermissionError):
        return False
    return getattr(exc, "winerror", 32) in SHARING_ERRORS


def _clear_read_only(path: Path | str) -> bool:
    """Windows refuses to delete or replace a read-only file: clear the bit; True if it was set."""
    try:
        mode = os.stat(path, follow_symlinks=False).st_mode
    except OSError:
        return False
    if mode & stat.S_IWRITE or stat.S_ISLNK(mode):
        return False
    with contextlib.suppress(OSError):
        os.chmod(path, mode | stat.S_IWRITE)
        return True
    return False


def replace(source: Path | str, target: Path | str) -> None:
    """``os.replace`` that, on Windows, retries while another process holds either file
    and replaces a read-only target. The caller has closed ``source`` already."""
    for delay in (*RETRY_DELAYS_S, None):
        try:
            os.replace(source, target)
            return
        except PermissionError as exc:
            if not _blocked(exc):
                raise
            if delay is None:
                raise FileBusy("replace", target, exc) from exc
            _clear_read_only(target)
        time.sleep(delay)


def rename(source: Path | str, target: Path | str) -> None:
    """``os.rename`` (a file or a folder, never over an existing one) that, on Windows,
    retries while another process holds something inside ``source`` open."""
    for delay in (*RETRY_DELAYS_S, None):
        try:
            os.rename(source, target)
            return
        except PermissionError as exc:
            if not _blocked(exc):
                raise
            if delay is None:
                raise FileBusy("rename", source, exc) from exc
        time.sleep(delay)


def remove(path: Path | str, *, missing_ok: bool = True) -> None:
    """Delete a file: on Windows clear its read-only bit first and retry while another process
    holds it open. A missing file is fine with ``missing_ok``."""
    for delay in (*RETRY_DELAYS_S, None):
        try:
            os.unlink(path)
            return
        except FileNotFoundError:
            if missing_ok:
                return
            raise
        except PermissionError as exc:
            if not _blocked(exc):
                raise
            if delay is None:
                raise FileBusy("delete", path, exc) from exc
            if _clear_read_only(path):
                continue
        time.sleep(delay)


def remove_tree(folder: Path | str) -> None:
    """Delete a folder and what it holds, ignoring what cannot be deleted; on Windows a
    read-only file (a hard link to a blob) is made writable first, a held one retried."""

    def again(function: Any, path: str, _exc: Any) -> None:
        if WINDOWS and function in (os.unlink, os.remove, os.rmdir):
            with contextlib.suppress(OSError):
                if function is os.rmdir:
                    os.rmdir(path)
                else:
                    remove(path)

    if sys.version_info >= (3, 12):
        shutil.rmtree(folder, onexc=again)
    else:
        shutil.rmtree(folder, onerror=again)


def on_disk_case(path: Path) -> Path:
    """``path`` (absolute) with each existing component spelled as the folder lists it.

    On a case-insensitive disk (macOS, Windows, an SMB share, vfat) ``/Volumes/NAS/Shot``
    opens ``/Volumes/nas/shot`` as well, and ``Path.resolve`` keeps the case as typed; a path
    recorded for other peers must be the one on disk. Components past the first missing one
    stay as given; where two entries differ only in case (a case-sensitive disk) the exact
    name wins."""
    parts = path.parts
    if not parts:
        return path
    current = Path(parts[0])
    for index, part in enumerate(parts[1:], 1):
        try:
            names = os.listdir(current)
        except OSError:
            return current.joinpath(*parts[index:])
        if part not in names:
            folded = [name for name in names if name.casefold() == part.casefold()]
            if len(folded) != 1:
                return current.joinpath(*parts[index:])
            part = folded[0]
        current = current / part
    return current


def set_mode(path: Path | str, mode: int, fd: int | None = None) -> None:
    """Set ``path``'s permission bits (through ``fd`` where ``os.fchmod`` exists). On Windows
    only the owner's write bit means something: without it the file is read-only. A file
    system that has no permission bits leaves the file as it is."""
    fchmod = getattr(os, "fchmod", None)
    try:
        if fd is not None and fchmod is not None and not WINDOWS:
            fchmod(fd, mode)
        else:
            os.chmod(path, mode)
    except OSError as exc:
        if exc.errno not in NO_MODES:
            raise  # a disk without permission bits (FAT, some shares) keeps what it has


def make_private(folder: Path) -> None:
    """Make ``folder`` readable by its owner alone (0700) on POSIX. On Windows folders under the
    user profile (the default data dir) are private by their inherited ACL; mode bits are not."""
    if not WINDOWS:
        os.chmod(folder, 0o700)


def symlinks_work(folder: Path) -> bool:
    """Whether this process can make a symlink in ``folder`` (Windows needs Developer Mode or
    an administrator); peerfarm itself never needs one."""
    probe = folder / f".symlink-probe-{os.getpid()}"
    try:
        probe.symlink_to(folder)
    except (OSError, NotImplementedError):
        return False
    remove(probe)
    return True


def host_name() -> str:
    """This machine's name, as the network knows it."""
    return socket.gethostname()
