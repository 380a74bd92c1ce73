"""Real ``peerfarm up`` processes on loopback for the operator tests, and the real CLI.

This module owns starting, watching and stopping those processes. Rules: everything binds
127.0.0.1 and runs with ``--no-mdns`` (nothing multicasts), each peer has its own temporary data
dir, peers share one key file (mode 0600), a peer may get extra environment (the protocol test
hook), and every process started here is stopped by its own id: SIGTERM, then SIGKILL of the
process group it leads.
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

#: Seconds a farm may take to start and see all its peers (the CPU is shared).
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


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``predicate`` until it returns something truthy; AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


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

    def get(self, path: str) -> httpx.Response:
        response = httpx.get(self.url + path, timeout=5.0)
        response.raise_for_status()
        return response

    def peers(self) -> list[dict[str, Any]]:
        return list(self.get("/api/peers").json()["peers"])

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


@dataclass
class Farm:
    """Real daemons under ``root``; use :func:`running_farm`."""

    root: Path
    key_file: Path
    peers: list[Peer] = field(default_factory=list)

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PEERFARM_")}
        env["PYTHONUNBUFFERED"] = "1"
        env.update(extra or {})
        return env

    def start_peer(
        self, name: str, join: Peer | None = None, env: dict[str, str] | None = None
    ) -> Peer:
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
                env=self.env(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.peers.append(peer)
        return peer

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.log()[-3000:]}" for p in self.peers)

    def check_running(self) -> None:
        for peer in self.peers:
            if peer.process is not None and peer.process.poll() is not None:
                raise AssertionError(f"peer {peer.name} exited\n{self.logs()}")

    def wait_ready(self, peer: Peer) -> None:
        def ready() -> bool:
            self.check_running()
            try:
                peer.get("/api/peers")
            except httpx.HTTPError:
                return False
            return True

        wait_until(ready, START_TIMEOUT_S, f"{peer.name}'s API")

    def wait_converged(self) -> None:
        names = {p.name for p in self.peers}

        def all_see_all() -> bool:
            self.check_running()
            for peer in self.peers:
                try:
                    seen = {p["name"] for p in peer.peers() if p["state"] == "alive"}
                except httpx.HTTPError:
                    return False
                if not names <= seen:
                    return False
            return True

        try:
            wait_until(all_see_all, START_TIMEOUT_S, "every peer to see every other peer")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.logs()}") from None

    def cli(
        self, peer: Peer, *args: str, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``peerfarm ARGS --data-dir <peer's>``: the real CLI, as an operator types it."""
        return subprocess.run(
            [sys.executable, "-m", "peerfarm", *args, "--data-dir", str(peer.data_dir)],
            env=self.env(),
            cwd=cwd or self.root,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def cli_json(self, peer: Peer, *args: str, cwd: Path | None = None) -> Any:
        done = self.cli(peer, *args, "--json", cwd=cwd)
        assert done.returncode == 0, f"{args} failed: {done.stderr}\n{self.logs()}"
        return json.loads(done.stdout)

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
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(peer.process.pid, signal.SIGKILL)  # renders it started


def write_key(root: Path) -> Path:
    key_file = root / "farm.key"
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(base64.b64encode(generate_key()).decode("ascii") + "\n")
    return key_file


@contextlib.contextmanager
def farm_in(root: Path) -> Iterator[Farm]:
    """An empty farm (start peers yourself); every peer is stopped on exit."""
    farm = Farm(root, write_key(root))
    try:
        yield farm
    finally:
        farm.stop()


@contextlib.contextmanager
def running_farm(root: Path, names: list[str]) -> Iterator[Farm]:
    """One peer per name (the first is everyone's seed), all seeing all."""
    with farm_in(root) as farm:
        seed = None
        for name in names:
            peer = farm.start_peer(name, seed)
            seed = seed or peer
        farm.wait_converged()
        yield farm


FRAME_SCRIPT = """#!/bin/sh
# one tiny output per frame (the command renderer's contract: PEERFARM_FRAME, PEERFARM_OUTPUT_DIR)
set -eu
printf 'frame %s\\n' "$PEERFARM_FRAME" > "$PEERFARM_OUTPUT_DIR/frame.txt"
"""


def frame_script(root: Path) -> Path:
    script = root / "tiny.sh"
    script.write_text(FRAME_SCRIPT)
    script.chmod(0o755)
    return script
