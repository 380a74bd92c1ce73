"""The small pieces of running ``peerfarm up`` on loopback, for :mod:`.daemons` and its users.

This module owns what a daemon is started *with*: how ``peerfarm`` is launched (with or without
bpy), the loopback address and the timeouts, a port free for TCP and UDP, polling until
something holds, the farm key file, the environment (no inherited ``PEERFARM_*``) and the
command line of one daemon, and the process tree under a pid (to kill renders that run in
their own groups). Starting, watching and stopping daemons is :mod:`.daemons`, which
re-exports these names.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import psutil

import peerfarm
from peerfarm.errors import PeerfarmError
from peerfarm.gossip.crypto import load_or_create_key_file

#: ``peerfarm`` run by this interpreter.
PEERFARM = [sys.executable, "-m", "peerfarm"]
#: ``peerfarm`` as run by a Python that cannot import bpy, like one with no bpy wheel (3.12):
#: ``importlib.util.find_spec`` answers None for a module whose sys.modules entry is None.
PEERFARM_WITHOUT_BPY = [
    sys.executable,
    "-c",
    "import sys; sys.modules['bpy'] = None; from peerfarm.console import run; sys.exit(run())",
]
LOOPBACK = "127.0.0.1"
#: Seconds a daemon may take to answer its control API (the CPU is shared with other tests).
READY_TIMEOUT_S = 30.0
#: Seconds a farm may take until every daemon sees every other alive.
CONVERGE_TIMEOUT_S = 30.0
#: Seconds a daemon gets to leave after SIGTERM before its process group is killed.
STOP_TIMEOUT_S = 10.0

T = TypeVar("T")

#: The source tree (or site-packages) holding the imported ``peerfarm``: daemons import the
#: same code as the process that starts them.
_SOURCE_ROOT = Path(peerfarm.__file__).resolve().parents[1]


class DaemonError(PeerfarmError):
    """A daemon did not start, exited, or did not answer (the message has its log's tail)."""


class WaitTimeout(DaemonError):
    """A condition did not hold in time."""


def free_port(host: str = LOOPBACK) -> int:
    """A port free for both TCP and UDP on ``host`` right now (gossip uses both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
                return port
    raise DaemonError(f"no port free for TCP and UDP on {host}")


def wait_until(
    check: Callable[[], T | None], timeout: float, what: str, *, interval: float = 0.1
) -> T:
    """Poll ``check`` until it returns something truthy, and return that; ``WaitTimeout``
    naming ``what`` (and the last answer) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def write_key(path: Path) -> Path:
    """A farm key file at ``path`` (created with mode 0600 if missing); returns ``path``."""
    load_or_create_key_file(path)
    return path


def daemon_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment for a daemon or a CLI run: no inherited ``PEERFARM_*``
    (a user's data dir or key must never leak in), unbuffered output, this ``peerfarm``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEERFARM_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_SOURCE_ROOT), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


def up_argv(
    launcher: Sequence[str],
    data_dir: Path,
    name: str,
    port: int,
    key_file: Path,
    *,
    preset: str = "fast",
    joins: Iterable[int] = (),
    mdns: bool = False,
    web_port: int | None = None,
    allow_command: bool = False,
    slots: int | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """The command line of one daemon, everything bound to loopback (pure)."""
    argv = [
        *launcher, "up", "--data-dir", str(data_dir), "--name", name,
        "--listen", f"{LOOPBACK}:{port}", "--key-file", str(key_file), "--preset", preset,
    ]  # fmt: skip
    argv += ["--interface", LOOPBACK] if mdns else ["--no-mdns"]
    argv += ["--web", f"{LOOPBACK}:{web_port}"] if web_port is not None else ["--no-web"]
    for join in joins:
        argv += ["--join", f"{LOOPBACK}:{join}"]
    if allow_command:
        argv.append("--allow-command")
    if slots is not None:
        argv += ["--slots", str(slots)]
    return [*argv, *extra]


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (through psutil, on every OS), children first."""
    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []
