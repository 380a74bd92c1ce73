"""Real daemons for browser tests: a few ``peerfarm up`` processes on loopback, and their CLI.

This module owns starting, watching and stopping those processes. Rules: everything binds
127.0.0.1 (no mDNS at all: ``--no-mdns``), each peer has its own temporary data dir, the peers
share one key file (mode 0600), and every process started here is stopped by its own id
(SIGTERM, then SIGKILL of the process group it leads) when the farm closes.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from peerfarm.gossip.crypto import generate_key

#: Seconds a farm may take to start and see all its peers alive (CPU is shared).
START_TIMEOUT_S = 30.0


def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 (gossip uses both on one port)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port on 127.0.0.1")


def wait_until(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Peer:
    name: str
    data_dir: Path
    gossip_port: int
    web_port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def get(self, path: str) -> Any:
        response = httpx.get(self.url + path, timeout=5.0)
        response.raise_for_status()
        return response.json()

    def status(self, job: str | None = None) -> dict[str, Any]:
        return dict(self.get("/api/status" + (f"?job={job}" if job else "")))

    def job(self, job: str) -> dict[str, Any]:
        return dict(self.status(job)["jobs"][0])

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Farm:
    """A farm of real daemons in ``root``; use :func:`running_farm` to get one."""

    root: Path
    key_file: Path
    peers: list[Peer] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("PEERFARM_KEY", None)
        env.pop("PEERFARM_DATA_DIR", None)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def start_peer(self, name: str, join: Peer | None) -> Peer:
        data_dir = self.root / name
        data_dir.mkdir(mode=0o700)
        peer = Peer(name, data_dir, free_port(), free_port(), self.root / f"{name}.log")
        argv = [
            sys.executable, "-m", "peerfarm", "up", "--data-dir", str(data_dir),
            "--name", name, "--listen", f"127.0.0.1:{peer.gossip_port}", "--no-mdns",
            "--preset", "fast", "--allow-command", "--key-file", str(self.key_file),
            "--web", f"127.0.0.1:{peer.web_port}",
        ]  # fmt: skip
        if join is not None:
            argv += ["--join", f"127.0.0.1:{join.gossip_port}"]
        with peer.log_path.open("wb") as log:
            peer.process = subprocess.Popen(
                argv,
                cwd=data_dir,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.peers.append(peer)
        return peer

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.log_tail()}" for p in self.peers)

    def wait_converged(self) -> None:
        names = {p.name for p in self.peers}

        def all_see_all() -> bool:
            for peer in self.peers:
                if peer.process is not None and peer.process.poll() is not None:
                    raise AssertionError(f"peer {peer.name} exited\n{self.logs()}")
                try:
                    seen = {p["name"] for p in peer.status()["peers"] if p["state"] == "alive"}
                except httpx.HTTPError:
                    return False
                if not names <= seen:
                    return False
            return True

        try:
            wait_until(all_see_all, START_TIMEOUT_S, "every peer to see every other peer")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.logs()}") from None

    def cli(self, peer: Peer, *args: str) -> subprocess.CompletedProcess[str]:
        """``peerfarm ARGS --data-dir <peer's>`` (the real CLI)."""
        return subprocess.run(
            [sys.executable, "-m", "peerfarm", *args, "--data-dir", str(peer.data_dir)],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def submit(self, peer: Peer, scene: Path, frames: str, *extra: str) -> str:
        """``peerfarm submit SCENE FRAMES`` on ``peer``; returns the job id."""
        done = self.cli(peer, "submit", str(scene), frames, *extra, "--json")
        assert done.returncode == 0, f"submit failed: {done.stderr}\n{self.logs()}"
        return str(json.loads(done.stdout)["job"])

    def stop(self) -> None:
        for peer in self.peers:
            if peer.process is not None and peer.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    peer.process.send_signal(signal.SIGTERM)
        for peer in self.peers:
            if peer.process is None:
                continue
            try:
                peer.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(peer.process.pid, signal.SIGKILL)
                peer.process.wait(timeout=5)
            # renders it started (their own children) must not outlive it
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(peer.process.pid, signal.SIGKILL)


@contextlib.contextmanager
def running_farm(root: Path, names: list[str]) -> Iterator[Farm]:
    """Start one peer per name (the first is everyone's seed) and wait until all see all."""
    key_file = root / "farm.key"
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(base64.b64encode(generate_key()).decode("ascii") + "\n")
    farm = Farm(root, key_file)
    try:
        seed = None
        for name in names:
            peer = farm.start_peer(name, seed)
            seed = seed or peer
        farm.wait_converged()
        yield farm
    finally:
        farm.stop()
