"""Real ``peerfarm up`` processes on loopback, for the tests, the benchmarks and the demo.

This module owns starting real daemons, knowing when they are ready, talking to them and
stopping them (what a daemon is started with, its port, key, environment and command line, is
:mod:`.launch`). Rules:

- Everything binds 127.0.0.1: gossip on a port free for TCP and UDP, the control API on an
  ephemeral port, the dashboard (``web=True``) on a free port. mDNS runs only with ``mdns=True``
  and then only on 127.0.0.1 (``--interface 127.0.0.1``); otherwise ``--no-mdns``.
- A :class:`LocalFarm` owns a root folder: one key file (mode 0600), one data dir and one log per
  daemon. A data dir is ``ROOT/peer NAME``: a space in every daemon's paths, as in macOS's
  default data dir (``~/Library/Application Support``), so every real test renders through
  one. Daemons run with this interpreter, the farm's own environment (no inherited
  ``PEERFARM_*``), in its data dir, and each in a process tree of its own, which can be killed
  whole.
- Ready means: ``control.json`` names this very process and the control API answers ``status``.
- Stopping is SIGTERM (a graceful leave; CTRL_BREAK on Windows), then the process tree is
  killed after ``STOP_TIMEOUT_S`` (``peerfarm.platform``); :meth:`Daemon.kill` (kill -9) also
  takes renders that run in trees of their own. Every open farm is in a registry:
  :func:`stop_all` (run at exit, and by the test suites after every test) stops whatever a
  failing test or an interrupted run left behind.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import psutil

from peerfarm import platform
from peerfarm.client import CONTROL_FILE, FarmClient, read_control_file
from peerfarm.control import SUMMARY_ONLY, FrameQuery, JobView, PeerView, StatusView, SubmitBody
from peerfarm.errors import PeerfarmError
from peerfarm.testing.http import StdlibTransport

from .launch import (
    CONVERGE_TIMEOUT_S,
    LOOPBACK,
    PEERFARM,
    PEERFARM_WITHOUT_BPY,
    READY_TIMEOUT_S,
    STOP_TIMEOUT_S,
    DaemonError,
    WaitTimeout,
    daemon_env,
    descendants,
    free_port,
    up_argv,
    wait_until,
    write_key,
)

#: What callers use; the small pieces are re-exported from :mod:`.launch`.
__all__ = [
    "CONVERGE_TIMEOUT_S",
    "LOOPBACK",
    "PEERFARM",
    "PEERFARM_WITHOUT_BPY",
    "READY_TIMEOUT_S",
    "STOP_TIMEOUT_S",
    "Daemon",
    "DaemonError",
    "LocalFarm",
    "WaitTimeout",
    "daemon_env",
    "descendants",
    "free_port",
    "stop_all",
    "up_argv",
    "wait_until",
    "write_key",
]


# --- one daemon ------------------------------------------------------------------------------


@dataclass(eq=False)
class Daemon:
    """One running ``peerfarm up`` process (see :meth:`LocalFarm.start`)."""

    name: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    gossip_port: int
    web_port: int | None  # None: started without a dashboard
    _client: FarmClient | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def address(self) -> str:
        """Its gossip address, what ``--join`` takes."""
        return f"{LOOPBACK}:{self.gossip_port}"

    @property
    def url(self) -> str:
        """The dashboard's base URL (started with ``web=True``)."""
        if self.web_port is None:
            raise DaemonError(f"{self.name} was started without a dashboard (web=False)")
        return f"http://{LOOPBACK}:{self.web_port}"

    def alive(self) -> bool:
        return self.process.poll() is None

    # --- talking to it --------------------------------------------------------------------

    def client(self) -> FarmClient:
        """A client of its control API (the token from its ``control.json``), as the CLI has."""
        if self._client is None:
            self._client = FarmClient.connect(self.data_dir)
        return self._client

    def status(self, job: str | None = None, frames: FrameQuery | None = None) -> StatusView:
        """As ``peerfarm status [JOB] --json`` (a job's frames: the daemon's default page, or
        the page ``frames`` asks for)."""
        return self.client().status(job, frames)

    def peers(self) -> list[PeerView]:
        return self.client().peers()["peers"]

    def job(self, job: str) -> JobView:
        return self.status(job, SUMMARY_ONLY)["jobs"][0]

    def alive_names(self) -> set[str]:
        """The names of the peers this daemon sees alive (itself included)."""
        return {p["name"] for p in self.status()["peers"] if p["state"] == "alive"}

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        """A GET on its dashboard as a browser on this machine makes it (no token, no login);
        ``httpx.HTTPStatusError`` for a 4xx or 5xx."""
        with httpx.Client(timeout=5.0, trust_env=False, transport=StdlibTransport()) as http:
            return http.get(self.url + path, **kwargs).raise_for_status()

    def cli(
        self, *args: str, check: bool = True, timeout: float = 60.0, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``peerfarm ARGS --data-dir <its data dir>``: the real CLI, as an operator types it in
        ``cwd`` (default: this process's working directory).

        With ``check``, a non-zero exit is a ``DaemonError`` with stderr and the daemon's log."""
        argv = [*PEERFARM, *args, "--data-dir", str(self.data_dir)]
        run = functools.partial(subprocess.run, capture_output=True, text=True, check=False)
        done = run(argv, timeout=timeout, cwd=cwd, env=daemon_env())
        if check and done.returncode != 0:
            raise DaemonError(
                f"peerfarm {' '.join(args)} exited {done.returncode}: {done.stderr}\n"
                f"--- {self.name} log ---\n{self.log_tail()}"
            )
        return done

    def cli_json(self, *args: str, cwd: Path | None = None) -> Any:
        """``peerfarm ARGS --json``, parsed (a non-zero exit is a ``DaemonError``)."""
        return json.loads(self.cli(*args, "--json", cwd=cwd).stdout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    # --- stopping it ----------------------------------------------------------------------

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(sig)  # a no-op once it has been reaped

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """Ask it to leave (SIGTERM; CTRL_BREAK on Windows); kill its process tree if it has
        not exited after ``timeout`` seconds. Returns its exit status."""
        self.signal(platform.stop_signal())
        return self.reap(timeout)

    def kill(self) -> int:
        """kill -9 of the daemon, its process tree and every descendant (renders run in
        process trees of their own). Returns its exit status."""
        children = descendants(self.pid) if self.alive() else []
        platform.signal_tree(self.pid, kill=True)
        for pid in children:
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()
        return self.reap(5.0)

    def reap(self, timeout: float) -> int:
        """Wait for it to exit, kill its process tree after ``timeout`` seconds; then its
        tree is killed anyway (what it started there) and its client closed."""
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            platform.signal_tree(self.pid, kill=True)
            code = self.process.wait(5.0)
        platform.signal_tree(self.pid, kill=True)  # whatever it started in its own group
        platform.release_tree(self.pid)
        self.close_client()
        return code

    def close_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


# --- a farm of them --------------------------------------------------------------------------

_OPEN: list[LocalFarm] = []


def stop_all() -> list[str]:
    """Close every farm still open (their daemons stop); returns the roots of those farms."""
    roots = []
    for farm in list(_OPEN):
        roots.append(str(farm.root))
        farm.close()
    return roots


atexit.register(stop_all)  # an interrupted run leaves no daemon behind


class LocalFarm:
    """Daemons on 127.0.0.1 sharing one key and a root folder. Use as a context manager.

    ``root`` None: a temporary folder, removed on close. ``preset`` is every daemon's default.
    """

    def __init__(
        self,
        root: Path | None = None,
        *,
        preset: str = "fast",
        ready_timeout: float = READY_TIMEOUT_S,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._tmp = None if root is not None else tempfile.mkdtemp(prefix="peerfarm-farm-")
        self.root = root if root is not None else Path(self._tmp or ".")
        self.root.mkdir(parents=True, exist_ok=True)
        self.preset = preset
        self.ready_timeout = ready_timeout
        self.env = dict(env or {})
        self.key_file = write_key(self.root / "farm.key")
        self.daemons: list[Daemon] = []
        _OPEN.append(self)

    def __enter__(self) -> LocalFarm:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(
        self,
        name: str,
        *extra: str,
        join: Daemon | None = None,
        mdns: bool = False,
        web: bool = False,
        allow_command: bool = False,
        slots: int | None = None,
        key: Path | None = None,
        preset: str | None = None,
        data_dir: Path | None = None,
        wait: bool = True,
        env: Mapping[str, str] | None = None,
        launcher: Sequence[str] = PEERFARM,
    ) -> Daemon:
        """Start one daemon (``extra``: more ``up`` flags); with ``wait``, until it is ready.

        ``data_dir`` may be an earlier daemon's, to restart it from its own files."""
        data_dir = data_dir or self.root / f"peer {name}"
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        platform.remove(data_dir / CONTROL_FILE)  # a dead daemon's must not count
        port = free_port()
        web_port = free_port() if web else None
        argv = up_argv(
            launcher, data_dir, name, port, key or self.key_file, preset=preset or self.preset,
            joins=[join.gossip_port] if join else [], mdns=mdns, web_port=web_port,
            allow_command=allow_command, slots=slots, extra=extra,
        )  # fmt: skip
        log_path = self.root / f"{name}.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                argv,
                cwd=data_dir,  # only its own files: nothing there shadows a module
                env=daemon_env({**self.env, **(env or {})}),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                **platform.tree_kwargs(),
            )
        platform.track_tree(process.pid)
        daemon = Daemon(name, data_dir, process, log_path, port, web_port)
        self.daemons.append(daemon)
        if wait:
            self.wait_ready(daemon)
        return daemon

    def start_all(self, names: Sequence[str], **options: Any) -> list[Daemon]:
        """One daemon per name, every one joined to the first; returns once all are ready and
        see each other alive."""
        first: Daemon | None = None
        started = []
        for name in names:
            daemon = self.start(name, join=first, wait=False, **options)
            first = first or daemon
            started.append(daemon)
        for daemon in started:
            self.wait_ready(daemon)
        self.wait_converged()
        return started

    def wait_ready(self, daemon: Daemon, timeout: float | None = None) -> None:
        """Until ``control.json`` names this process and its control API answers."""

        def ready() -> bool:
            if not daemon.alive():
                raise DaemonError(
                    f"{daemon.name} exited with status {daemon.process.returncode}:\n"
                    f"{daemon.log_tail()}"
                )
            try:
                if read_control_file(daemon.data_dir).pid != daemon.pid:
                    return False
                daemon.status()
            except PeerfarmError:
                daemon.close_client()
                return False
            return True

        try:
            wait_until(ready, timeout or self.ready_timeout, f"{daemon.name} to be ready")
        except WaitTimeout as exc:
            raise WaitTimeout(f"{exc}\n{daemon.log_tail()}") from None

    def wait_converged(self, timeout: float = CONVERGE_TIMEOUT_S) -> None:
        """Until every running daemon sees every running daemon alive."""
        names = {d.name for d in self.running()}

        def converged() -> bool:
            self.check_running(names)
            try:
                return all(names <= d.alive_names() for d in self.running())
            except PeerfarmError:
                return False

        try:
            wait_until(converged, timeout, "every peer to see every other peer alive")
        except WaitTimeout as exc:
            raise WaitTimeout(f"{exc}\n{self.logs()}") from None

    def running(self) -> list[Daemon]:
        return [d for d in self.daemons if d.alive()]

    def check_running(self, names: Iterable[str] | None = None) -> None:
        """``DaemonError`` naming the first daemon (of ``names``, default all) that exited."""
        wanted = set(names) if names is not None else None
        for daemon in self.daemons:
            if (wanted is None or daemon.name in wanted) and not daemon.alive():
                raise DaemonError(
                    f"{daemon.name} exited with status {daemon.process.returncode} "
                    f"(log: {daemon.log_path})\n{daemon.log_tail()}"
                )

    def logs(self, lines: int = 30) -> str:
        return "\n".join(f"--- {d.name} ---\n{d.log_tail(lines)}" for d in self.daemons)

    def close(self) -> None:
        """Stop every daemon: SIGTERM to all at once, then each is reaped (see ``stop``)."""
        for daemon in self.daemons:
            daemon.signal(platform.stop_signal())  # once: a second would cut its leave short
        for daemon in self.daemons:
            daemon.reap(STOP_TIMEOUT_S)
        with contextlib.suppress(ValueError):
            _OPEN.remove(self)
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    # --- jobs -----------------------------------------------------------------------------

    def script(self, name: str, body: str) -> Path:
        """An executable frame script for the command renderer, in the farm's root."""
        path = self.root / name
        path.write_text("#!/bin/sh\n" + body + "\n")
        path.chmod(0o755)
        return path

    def submit(self, on: Daemon, scene: Path, frames: str, **fields: Any) -> str:
        """Submit through ``on``'s control API (renderer from the scene unless given, output
        relative to the farm's root); returns the job id."""
        body = {"scene": str(scene), "frames": frames, "cwd": str(self.root), **fields}
        return on.client().submit(cast(SubmitBody, body))["job"]

    def wait_job(self, on: Daemon, job: str, timeout: float, *, interval: float = 0.02) -> float:
        """Until ``on`` sees every frame of ``job`` done; the monotonic time it saw that.
        ``DaemonError`` if the job failed or was cancelled."""

        def done() -> float | None:
            view = on.job(job)
            if view["state"] in ("failed", "cancelled"):
                raise DaemonError(f"job {job[:8]} ended {view['state']}: {view}")
            return time.monotonic() if view["frames_done"] == view["frames_total"] else None

        return wait_until(done, timeout, f"job {job[:8]} to finish", interval=interval)
