"""Real peerfarm daemons on real (namespaced) hosts, and the faults the tests inflict on them.

Owns the daemon processes of a test cluster: their command lines, environments, data dirs and
logs, starting, killing and restarting them, talking to them (the control API from inside their
namespace, or the real CLI through ``ip netns exec``), waiting for conditions, and the render
log the test renderer writes. The network itself is :mod:`tests.cluster.netns`.

Every cluster registers itself in :data:`LIVE` until closed, so an ``atexit`` hook (and the
fixtures' finalizers) can tear down whatever a failing or interrupted test left behind.
Daemons get ``PR_SET_PDEATHSIG``: if pytest itself is killed, its daemons die with it, and the
next session's :func:`tests.cluster.netns.sweep` deletes the namespaces.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from peerfarm.testing.daemons import PEERFARM, write_key
from peerfarm.testing.http import StdlibTransport
from tests.cluster import netns
from tests.cluster.netns import ClusterError, Net

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
FRAME_SCRIPT = HERE / "frame.sh"
POVRAY_SCENE = REPO / "examples" / "povray"
PORT = 7946
READY_TIMEOUT_S = 30.0

T = TypeVar("T")

LIVE: list[Cluster] = []


# ---------------------------------------------------------------------------------------------
# the render log


@dataclass(frozen=True, slots=True)
class RenderEvent:
    """One line of the shared render log: a frame render starting or ending on a host."""

    at: float  # wall clock, seconds
    host: str
    kind: str  # "start" | "end"
    job: str
    frame: int


def parse_render_log(text: str) -> list[RenderEvent]:
    events = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 5 or parts[2] not in ("start", "end"):
            continue
        events.append(RenderEvent(float(parts[0]), parts[1], parts[2], parts[3], int(parts[4])))
    return events


def completed_renders(events: Iterable[RenderEvent], job: str) -> dict[int, list[RenderEvent]]:
    """Every finished render of ``job``, by frame."""
    out: dict[int, list[RenderEvent]] = {}
    for event in events:
        if event.job == job and event.kind == "end":
            out.setdefault(event.frame, []).append(event)
    return out


def duplicated_frames(events: Iterable[RenderEvent], job: str) -> dict[int, list[str]]:
    """Frames of ``job`` whose render finished more than once, with the hosts that did it."""
    return {
        frame: [e.host for e in ends]
        for frame, ends in completed_renders(events, job).items()
        if len(ends) > 1
    }


# ---------------------------------------------------------------------------------------------
# hosts


@dataclass
class Host:
    """One namespaced machine running one daemon."""

    index: int
    ns: str
    address: str
    root: Path
    key_file: Path
    preset: str
    mdns: bool = True
    allow_command: bool = True
    joins: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0

    @property
    def name(self) -> str:
        return f"h{self.index}"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def out_dir(self) -> Path:
        return self.root / "out"

    @property
    def log_path(self) -> Path:
        return self.root / "daemon.log"

    @property
    def node_id(self) -> str:
        try:
            return (self.data_dir / "node_id").read_text().strip()
        except FileNotFoundError:
            raise ClusterError(f"{self.name} has no node id yet") from None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def up_argv(self) -> list[str]:
        argv = [
            *PEERFARM,
            "up",
            "--data-dir",
            str(self.data_dir),
            "--name",
            self.name,
            "--listen",
            f"{self.address}:{PORT}",
            "--interface",
            self.address,
            "--slots",
            "1",
            *(["--allow-command"] if self.allow_command else []),
            "--key-file",
            str(self.key_file),
            "--preset",
            self.preset,
            "--no-web",
        ]
        for seed in self.joins:
            argv += ["--join", seed]
        if not self.mdns:
            argv.append("--no-mdns")
        return argv

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


class Cluster:
    """N hosts on one bridge, each with a daemon, and the tools to break them."""

    def __init__(
        self,
        root: Path,
        run_id: int,
        *,
        preset: str = "fast",
        frame_seconds: float = 0.4,
    ) -> None:
        self.root = root
        self.preset = preset
        self.frame_seconds = frame_seconds
        self.net = Net(os.getpid(), run_id)
        self.hosts: list[Host] = []
        self.key_file = write_key(root / "farm.key")
        self.render_log = root / "renders.log"
        self.render_log.touch()
        self.figures: dict[str, Any] = {}
        self._closed = False
        LIVE.append(self)
        self.net.create()

    # --- building --------------------------------------------------------------------------

    def add_host(
        self,
        *,
        key_file: Path | None = None,
        preset: str | None = None,
        mdns: bool = True,
        joins: Sequence[str] = (),
        start: bool = True,
        allow_command: bool = True,
    ) -> Host:
        index = len(self.hosts) + 1
        ns = self.net.add_host(index)
        root = self.root / f"h{index}"
        root.mkdir()
        host = Host(
            index=index,
            ns=ns,
            address=netns.host_address(index),
            root=root,
            key_file=key_file or self.key_file,
            preset=preset or self.preset,
            mdns=mdns,
            allow_command=allow_command,
            joins=list(joins),
        )
        host.data_dir.mkdir(mode=0o700)
        host.out_dir.mkdir()
        self.hosts.append(host)
        if start:
            self.start(host)
        return host

    def host(self, ref: int | str | Host) -> Host:
        if isinstance(ref, Host):
            return ref
        if isinstance(ref, str):
            ref = int(ref.removeprefix("h"))
        return self.hosts[ref - 1]

    def start(self, ref: int | str | Host, *, wait: bool = False) -> Host:
        host = self.host(ref)
        if host.running:
            raise ClusterError(f"{host.name} is already running")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PEERFARM_")}
        env.update(
            PF_CLUSTER_LOG=str(self.render_log),
            PF_CLUSTER_HOST=host.name,
            PF_CLUSTER_SLEEP=f"{self.frame_seconds:g}",
            PYTHONUNBUFFERED="1",
        )
        with host.log_path.open("ab") as log:
            log.write(f"--- {time.strftime('%H:%M:%S')} starting {host.name}\n".encode())
            log.flush()
            host.proc = subprocess.Popen(
                ["ip", "netns", "exec", host.ns, *host.up_argv()],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                cwd=host.root,
                preexec_fn=netns.die_with_parent,
            )
        host.started_at = time.time()
        if wait:
            self.wait_ready(host)
        return host

    def wait_ready(self, ref: int | str | Host, timeout: float = READY_TIMEOUT_S) -> None:
        """Until the daemon of ``ref`` answers its control API."""
        host = self.host(ref)

        def answers() -> bool:
            if not host.running:
                raise ClusterError(f"{host.name} exited: see {host.log_path}\n{self._tail(host)}")
            info = self._control(host)
            if info is None:
                return False
            try:
                self.status(host)
            except ClusterError:
                return False
            return True

        self.wait_until(answers, timeout, f"{host.name} to answer its control API")

    def start_all(self, n: int) -> float:
        """Add and start ``n`` hosts; returns when all answer, with the seconds it took."""
        began = time.monotonic()
        hosts = [self.add_host() for _ in range(n)]
        for host in hosts:
            self.wait_ready(host)
        return time.monotonic() - began

    # --- faults ----------------------------------------------------------------------------

    def cut(self, ref: int | str | Host) -> None:
        self.net.cut(self.host(ref).index)

    def restore(self, ref: int | str | Host) -> None:
        self.net.restore(self.host(ref).index)

    def split(self, *groups: Sequence[int | str | Host]) -> None:
        self.net.split([[self.host(h).index for h in group] for group in groups])

    def heal(self) -> None:
        self.net.heal()

    def netem(self, loss: float = 0.0, delay: float = 0.0, seed: int = 0) -> None:
        """``loss`` percent and ``delay`` seconds on every host's link (see ``switch.py``)."""
        self.net.netem(loss, delay, seed)

    def clear_netem(self) -> str:
        """Back to a perfect network; returns the switch's counts (forwarded, dropped)."""
        return self.net.clear_netem()

    def kill(self, ref: int | str | Host, sig: int = signal.SIGKILL, timeout: float = 15.0) -> int:
        """Signal a daemon and reap it; returns its exit status."""
        host = self.host(ref)
        if host.proc is None:
            raise ClusterError(f"{host.name} was never started")
        with contextlib.suppress(ProcessLookupError):
            host.proc.send_signal(sig)
        try:
            return host.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            host.proc.kill()
            host.proc.wait(5)
            raise ClusterError(f"{host.name} ignored signal {sig} for {timeout:g} s") from None

    def stop_all(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> list[int]:
        """Signal every running daemon at once, then reap them all; their exit statuses."""
        hosts = self.running_hosts()
        for host in hosts:
            with contextlib.suppress(ProcessLookupError):
                host.proc.send_signal(sig)  # type: ignore[union-attr]
        codes = []
        for host in hosts:
            try:
                codes.append(host.proc.wait(timeout))  # type: ignore[union-attr]
            except subprocess.TimeoutExpired:
                host.proc.kill()  # type: ignore[union-attr]
                raise ClusterError(f"{host.name} ignored signal {sig} for {timeout:g} s") from None
        return codes

    def restart(self, ref: int | str | Host, sig: int | None = None) -> Host:
        """(Stop with ``sig`` if running, then) start again with the same data dir."""
        host = self.host(ref)
        if host.running:
            self.kill(host, sig or signal.SIGTERM)
        return self.start(host, wait=True)

    # --- talking to daemons ----------------------------------------------------------------

    def _control(self, host: Host) -> dict[str, Any] | None:
        try:
            info = json.loads((host.data_dir / "control.json").read_text())
        except (FileNotFoundError, ValueError):
            return None
        if host.proc is None or info.get("pid") != host.proc.pid:
            return None  # a stale file from before a kill
        return dict(info)

    def api(self, ref: int | str | Host, method: str, path: str, **kwargs: Any) -> Any:
        """One control-API request, made from inside the host's namespace."""
        host = self.host(ref)
        info = self._control(host)
        if info is None:
            raise ClusterError(f"{host.name} has no running daemon")

        def call() -> Any:
            headers = {"Authorization": f"Bearer {info['token']}", "X-Peerfarm": "1"}
            with httpx.Client(
                base_url=info["url"],
                headers=headers,
                timeout=10.0,
                trust_env=False,
                transport=StdlibTransport(),  # httpx's own costs ~40 ms of CPU per client
            ) as client:
                response = client.request(method, path, **kwargs)
            if response.status_code >= 400:
                raise ClusterError(
                    f"{host.name} {method} {path}: {response.status_code} {response.text[:300]}"
                )
            return response.json()

        try:
            return netns.call_in_netns(host.ns, call)
        except httpx.HTTPError as exc:
            raise ClusterError(f"{host.name} {method} {path}: {exc}") from None

    def api_text(self, ref: int | str | Host, path: str) -> str:
        """A GET of a non-JSON route (``/metrics``), from inside the host's namespace."""
        host = self.host(ref)
        info = self._control(host)
        if info is None:
            raise ClusterError(f"{host.name} has no running daemon")

        def call() -> str:
            headers = {"Authorization": f"Bearer {info['token']}", "X-Peerfarm": "1"}
            with httpx.Client(
                base_url=info["url"],
                headers=headers,
                timeout=10.0,
                trust_env=False,
                transport=StdlibTransport(),  # httpx's own costs ~40 ms of CPU per client
            ) as client:
                return client.get(path).raise_for_status().text

        try:
            return netns.call_in_netns(host.ns, call)
        except httpx.HTTPError as exc:
            raise ClusterError(f"{host.name} GET {path}: {exc}") from None

    def status(self, ref: int | str | Host, job: str | None = None) -> dict[str, Any]:
        params = {"job": job} if job else {}
        result: dict[str, Any] = self.api(ref, "GET", "/api/status", params=params)
        return result

    def cli(self, ref: int | str | Host, *args: str, check: bool = True) -> Any:
        """Run ``peerfarm ARGS --data-dir D --json`` inside the host's namespace: parsed JSON."""
        host = self.host(ref)
        argv = [
            "ip",
            "netns",
            "exec",
            host.ns,
            *PEERFARM,
            *args,
            "--data-dir",
            str(host.data_dir),
            "--json",
        ]
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=host.root,
            env={k: v for k, v in os.environ.items() if not k.startswith("PEERFARM_")},
        )
        if check and done.returncode != 0:
            raise ClusterError(
                f"`{shlex.join(args)}` on {host.name} exited {done.returncode}: "
                f"{done.stderr.strip()}"
            )
        try:
            return json.loads(done.stdout) if done.stdout.strip() else None
        except ValueError:
            raise ClusterError(
                f"`{shlex.join(args)}` on {host.name} printed no JSON: {done.stdout[:300]!r}"
            ) from None

    def submit(self, ref: int | str | Host, scene: Path, frames: str, **options: str) -> str:
        """Submit from a host; the output goes to that host's ``out/<name>``. Returns the id."""
        host = self.host(ref)
        name = options.pop("name", "job")
        args = ["submit", str(scene), frames, "--name", name, "--output", str(host.out_dir / name)]
        for key, value in options.items():
            args += [f"--{key}", value]
        result = self.cli(host, *args)
        return str(result["job"])

    # --- observing -------------------------------------------------------------------------

    def running_hosts(self) -> list[Host]:
        return [h for h in self.hosts if h.running]

    def renders(self) -> list[RenderEvent]:
        return parse_render_log(self.render_log.read_text())

    def peer_states(self, ref: int | str | Host) -> dict[str, str]:
        """What one host thinks of every peer: node id -> state."""
        return {p["id"]: p["state"] for p in self.status(ref)["peers"]}

    def digests(self, hosts: Sequence[Host] | None = None) -> dict[str, str]:
        return {h.name: self.status(h)["node"]["digest"] for h in hosts or self.running_hosts()}

    def job_view(self, ref: int | str | Host, job: str) -> dict[str, Any]:
        jobs = self.status(ref)["jobs"]
        for view in jobs:
            if view["id"] == job:
                return dict(view)
        raise ClusterError(f"{self.host(ref).name} does not know job {job[:12]}")

    def wait_until(
        self,
        predicate: Callable[[], T],
        timeout: float,
        what: str,
        *,
        interval: float = 0.1,
    ) -> float:
        """Poll until ``predicate()`` is truthy; returns the seconds it took.

        A ``ClusterError`` raised by the predicate counts as "not yet"; the last one is shown if
        time runs out.
        """
        began = time.monotonic()
        last: object = None
        while True:
            try:
                value = predicate()
                if value:
                    return time.monotonic() - began
                last = value
            except ClusterError as exc:
                last = exc
            if time.monotonic() - began > timeout:
                raise AssertionError(
                    f"timed out after {timeout:g} s waiting for {what} "
                    f"(last: {last!r})\n{self.diagnostics()}"
                )
            time.sleep(interval)

    def diagnostics(self, lines: int = 25) -> str:
        return "\n".join(f"--- {h.name} log tail ---\n{self._tail(h, lines)}" for h in self.hosts)

    @staticmethod
    def _tail(host: Host, lines: int = 25) -> str:
        return "\n".join(host.log_text().splitlines()[-lines:])

    # --- teardown --------------------------------------------------------------------------

    def close(self) -> None:
        """Kill every daemon, delete every namespace. Idempotent; never raises."""
        if self._closed:
            return
        self._closed = True
        for host in self.hosts:
            if host.proc is not None and host.proc.poll() is None:
                with contextlib.suppress(OSError):
                    host.proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    host.proc.wait(5)
        self.net.destroy()
        with contextlib.suppress(ValueError):
            LIVE.remove(self)


def close_all() -> None:
    """Tear down every cluster still alive (atexit, interrupts)."""
    for cluster in list(LIVE):
        cluster.close()
