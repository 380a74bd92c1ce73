"""Real peerfarm daemons on loopback for the benchmarks: start, drive, measure, stop.

This module owns the benchmark's local farms. A :class:`LocalFarm` starts N daemons as separate
processes (each in its own session, so a SIGKILL of the group also takes its renders), all bound
to 127.0.0.1 with ``--no-mdns`` (nothing multicasts) and joined to the first by ``--join``, one
shared farm key (``PEERFARM_KEY``), data dirs in a temporary folder. It talks to each daemon
through its local control API (``control.json`` + :class:`peerfarm.client.FarmClient`, the same
API ``peerfarm status --json`` uses). Every process it started is stopped on exit.

Launch: ``peerfarm up`` when the CLI is installed (``launcher="cli"``), otherwise the daemon's
library entry point (:func:`peerfarm.daemon.run_daemon` with :class:`NodeOptions`) through
``python -c`` (``launcher="python"``, the default until the CLI lands).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar

from peerfarm.client import FarmClient, read_control_file
from peerfarm.errors import PeerfarmError
from peerfarm.gossip.crypto import encode_key, generate_key

ROOT = Path(__file__).resolve().parents[1]
Launcher = Literal["cli", "python"]
T = TypeVar("T")

_PYTHON_LAUNCH = """
import sys
from pathlib import Path
from peerfarm.daemon import NodeOptions, run_daemon
data, host, port, slots, preset = sys.argv[1:6]
joins = [(h, int(p)) for h, p in (j.rsplit(":", 1) for j in sys.argv[6:])]
sys.exit(run_daemon(NodeOptions(
    data_dir=Path(data), name=Path(data).name, listen=(host, int(port)), joins=joins,
    mdns=False, slots=int(slots), web=None, allow_command=True, preset=preset)))
"""


class BenchError(PeerfarmError):
    """A benchmark could not run (a daemon did not start, a wait timed out)."""


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (gossip uses both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        other = socket.SOCK_STREAM if kind == socket.SOCK_DGRAM else socket.SOCK_DGRAM
        with socket.socket(socket.AF_INET, other) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise BenchError("no free port on 127.0.0.1")


def wait_for(what: str, check: Callable[[], T | None], timeout: float, poll: float = 0.02) -> T:
    """Poll ``check`` until it returns something other than None/False; BenchError on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


def default_launcher() -> Launcher:
    return "cli" if importlib.util.find_spec("peerfarm.cli") is not None else "python"


@dataclass
class Daemon:
    """One running daemon process."""

    name: str
    data_dir: Path
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    client: FarmClient | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def api(self) -> FarmClient:
        if self.client is None:
            self.client = FarmClient.connect(self.data_dir, timeout=30.0)
        return self.client

    def status(self, job: str | None = None) -> dict[str, Any]:
        return self.api().status(job)

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the daemon and everything it started (its process group, and renders that
        run in process groups of their own)."""
        children = descendants(self.process.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        for pid in children:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait()
        if self.client is not None:
            self.client.close()
            self.client = None

    def stop(self, timeout: float = 8.0) -> None:
        """SIGTERM (graceful leave), then SIGKILL if it does not exit in time."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        self.kill()

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class LocalFarm:
    """N daemons on 127.0.0.1 joined by ``--join`` to the first. Use as a context manager."""

    def __init__(
        self,
        peers: int,
        *,
        slots: int = 1,
        preset: str = "lan",
        launcher: Launcher | None = None,
        root: Path | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        self.count = peers
        self.slots = slots
        self.preset = preset
        self.launcher: Launcher = launcher or default_launcher()
        self.start_timeout = start_timeout
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._root = root
        self.root = Path()
        self.daemons: list[Daemon] = []
        self.key = encode_key(generate_key())
        self.extra_args: list[str] = []

    def __enter__(self) -> LocalFarm:
        if self._root is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="peerfarm-bench-")
            self.root = Path(self._tmp.name)
        else:
            self.root = self._root
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PEERFARM_KEY"] = self.key
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        env.pop("PEERFARM_DATA_DIR", None)
        return env

    def argv(self, data_dir: Path, port: int, joins: list[str]) -> list[str]:
        if self.launcher == "cli":
            argv = [
                sys.executable, "-m", "peerfarm", "up", "--data-dir", str(data_dir),
                "--listen", f"127.0.0.1:{port}", "--no-mdns", "--no-web",
                "--preset", self.preset, "--slots", str(self.slots), "--allow-command",
                "--name", data_dir.name, *self.extra_args,
            ]
            for join in joins:
                argv += ["--join", join]
            return argv
        return [
            sys.executable, "-c", _PYTHON_LAUNCH, str(data_dir), "127.0.0.1", str(port),
            str(self.slots), self.preset, *joins,
        ]

    def spawn(self, name: str, joins: list[str]) -> Daemon:
        data_dir = self.root / name
        data_dir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        log_path = self.root / f"{name}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                self.argv(data_dir, port, joins),
                cwd=self.root,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        daemon = Daemon(name, data_dir, port, process, log_path)
        self.daemons.append(daemon)
        return daemon

    def start(self) -> None:
        first: Daemon | None = None
        for i in range(self.count):
            joins = [first.address] if first is not None else []
            daemon = self.spawn(f"peer{i + 1}", joins)
            first = first or daemon
        for daemon in self.daemons:
            self.wait_ready(daemon)
        self.wait_converged()

    def wait_ready(self, daemon: Daemon) -> None:
        def ready() -> bool:
            if not daemon.alive():
                raise BenchError(f"{daemon.name} exited:\n{daemon.log_tail()}")
            try:
                read_control_file(daemon.data_dir)
                daemon.status()
            except PeerfarmError:
                return False
            return True

        wait_for(f"{daemon.name} to start", ready, self.start_timeout, poll=0.05)

    def wait_converged(self, timeout: float = 30.0) -> None:
        """Until every live daemon lists every live daemon as alive."""
        live = [d for d in self.daemons if d.alive()]

        def converged() -> bool:
            for daemon in live:
                peers = daemon.api().peers()["peers"]
                if sum(1 for p in peers if p["state"] == "alive") < len(live):
                    return False
            return True

        wait_for("the farm to converge", converged, timeout, poll=0.05)

    def close(self) -> None:
        for daemon in self.daemons:
            if daemon.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(daemon.pid, signal.SIGTERM)
        for daemon in self.daemons:
            daemon.stop()
        self.daemons = []
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # --- jobs ---------------------------------------------------------------------------------

    def script(self, name: str, body: str) -> Path:
        """A frame script (command renderer) in the farm's root."""
        path = self.root / name
        path.write_text("#!/bin/sh\n" + body + "\n")
        path.chmod(0o755)
        return path

    def submit(self, on: Daemon, scene: Path, frames: str, **fields: Any) -> str:
        body = {"scene": str(scene), "frames": frames, "renderer": "command",
                "cwd": str(self.root), **fields}
        result = on.api().submit(body)
        return str(result["job"])

    def job_view(self, on: Daemon, job: str) -> dict[str, Any] | None:
        for view in on.status()["jobs"]:
            if view["id"] == job:
                return dict(view)
        return None

    def wait_job(self, on: Daemon, job: str, timeout: float, poll: float = 0.02) -> float:
        """Block until ``job`` is done on ``on``; returns the monotonic time it was seen done."""

        def done() -> float | None:
            view = self.job_view(on, job)
            if view is not None and view["state"] in ("failed", "cancelled"):
                raise BenchError(f"job {job[:8]} ended {view['state']}: {view}")
            if view is not None and view["frames_done"] == view["frames_total"]:
                return time.monotonic()
            return None

        return wait_for(f"job {job[:8]} to finish", done, timeout, poll)


@contextlib.contextmanager
def local_farm(peers: int, **kwargs: Any) -> Iterator[LocalFarm]:
    with LocalFarm(peers, **kwargs) as farm:
        yield farm


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (Linux /proc), children first."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def proc_cpu_seconds(pid: int) -> float:
    """User+system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return ticks / os.sysconf("SC_CLK_TCK")


def proc_rss_bytes(pid: int) -> int:
    """Resident set size of a process (Linux /proc; pid 0 is this process)."""
    for line in Path(f"/proc/{pid or 'self'}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS for pid {pid}")
