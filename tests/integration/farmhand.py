"""Real daemons for integration tests: `peerfarm up` processes on loopback.

Each daemon is a separate process with its own data dir, talking over real UDP/TCP sockets on
127.0.0.1 (and real mDNS bound to 127.0.0.1 when asked). Every process is stopped at the end,
even when a test fails.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PEERFARM = [sys.executable, "-m", "peerfarm"]
#: ``peerfarm`` as run by a Python that cannot import bpy, like one with no bpy wheel (3.12):
#: ``importlib.util.find_spec`` answers None for a module whose sys.modules entry is None.
PEERFARM_WITHOUT_BPY = [
    sys.executable,
    "-c",
    "import sys; sys.modules['bpy'] = None; from peerfarm.cli import main; sys.exit(main())",
]


def make_key(path: Path) -> Path:
    from peerfarm.gossip.crypto import load_or_create_key_file

    load_or_create_key_file(path)
    return path


@dataclass
class Daemon:
    name: str
    data_dir: Path
    proc: subprocess.Popen[bytes]
    log_path: Path
    address: str = ""

    def cli(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*PEERFARM, *args, "--data-dir", str(self.data_dir)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"peerfarm {' '.join(args)} failed ({result.returncode}): {result.stderr}\n"
                f"--- {self.name} log ---\n{self.log()}"
            )
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json").stdout)

    def status(self, job: str | None = None) -> dict[str, Any]:
        return self.json("status", *([job] if job else []))  # type: ignore[no-any-return]

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except FileNotFoundError:
            return ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.proc.pid, sig)

    def stop(self, timeout: float = 10) -> int:
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=5)


@dataclass
class Farmhand:
    root: Path
    key: Path
    daemons: list[Daemon] = field(default_factory=list)

    def start(
        self,
        name: str,
        *extra: str,
        join: Daemon | None = None,
        mdns: bool = False,
        key: Path | None = None,
        preset: str = "fast",
        data_dir: Path | None = None,
        wait: bool = True,
        env: dict[str, str] | None = None,
        launcher: list[str] | None = None,
    ) -> Daemon:
        data_dir = data_dir or self.root / name
        args = [
            "up",
            "--data-dir",
            str(data_dir),
            "--name",
            name,
            "--listen",
            "127.0.0.1:0",
            "--no-web",
            "--key-file",
            str(key or self.key),
            "--preset",
            preset,
            *extra,
        ]
        if mdns:
            args += ["--interface", "127.0.0.1"]
        else:
            args += ["--no-mdns"]
        if join is not None:
            args += ["--join", join.address]
        log_path = self.root / f"{name}.log"
        data_dir.mkdir(parents=True, exist_ok=True)
        (data_dir / "control.json").unlink(missing_ok=True)
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                [*(launcher or PEERFARM), *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )
        daemon = Daemon(name, data_dir, proc, log_path)
        self.daemons.append(daemon)
        if wait:
            self.wait_ready(daemon)
        return daemon

    def wait_ready(self, daemon: Daemon, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not daemon.alive():
                raise AssertionError(f"{daemon.name} exited early:\n{daemon.log()}")
            if (daemon.data_dir / "control.json").exists():
                result = daemon.cli("status", "--json", check=False, timeout=10)
                if result.returncode == 0:
                    daemon.address = json.loads(result.stdout)["node"]["address"]
                    return
            time.sleep(0.1)
        raise AssertionError(f"{daemon.name} not ready in {timeout} s:\n{daemon.log()}")

    def close(self) -> None:
        for daemon in self.daemons:
            if daemon.alive():
                daemon.signal(signal.SIGTERM)
        for daemon in self.daemons:
            try:
                daemon.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.proc.pid, signal.SIGKILL)
                daemon.proc.wait(timeout=5)


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def alive_names(daemon: Daemon) -> set[str]:
    return {p["name"] for p in daemon.status()["peers"] if p["state"] == "alive"}


def farmhand_fixture(tmp_path: Path) -> Iterator[Farmhand]:
    hand = Farmhand(tmp_path, make_key(tmp_path / "farm.key"))
    try:
        yield hand
    finally:
        hand.close()
