"""Network namespaces for test hosts: names, ip command lines, the links, and cleanup.

Owns everything this suite does to the kernel's network state, and nothing else:

- A cluster is one *bridge namespace* (``pf-<pid>-<run>-br``) holding the bridges, plus one
  namespace per host (``pf-<pid>-<run>-h<i>``). Each host has ``eth0`` (10.77.0.<10+i>/24,
  a multicast route for mDNS, ``lo`` up) whose veth peer ``v<i>`` is a port of a bridge in the
  bridge namespace. The machine's own interfaces are never touched: every command names a
  namespace (``ip -n NS``), and 10.x addresses exist only inside them.
- A cut host's port leaves its bridge; a split gives each group its own bridge; heal puts every
  port back on ``br0``. Loss and delay: the ports move to a userspace switch (``switch.py``)
  that drops and delays each copy it forwards (these kernels lack ``sch_netem``), so a datagram
  between two hosts crosses exactly one lossy, delayed link.
- The pid in a namespace's name is the pytest process that owns it: :func:`sweep` deletes the
  namespaces (and kills their processes) of owners that are gone, and never a live run's.

The command builders are pure (they return argv lists); :class:`Net` runs them.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from peerfarm.errors import PeerfarmError

PREFIX = "pf-"
NAME_RE = re.compile(r"^pf-(?P<pid>\d+)-(?P<run>\d+)-(?P<role>h\d+|br)$")
SUBNET = "10.77.0"
NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
SWITCH = Path(__file__).resolve().parent / "switch.py"
COMMAND_TIMEOUT_S = 20.0

T = TypeVar("T")



@functools.cache
def _libc() -> ctypes.CDLL:
    """The C library, loaded on first use: ``ctypes.CDLL(None)`` fails where there is no
    process-wide C library (Windows), and importing this module must not."""
    return ctypes.CDLL(None, use_errno=True)


class ClusterError(PeerfarmError):
    """The test cluster could not be built, changed or reached."""


# ---------------------------------------------------------------------------------------------
# names (pure)


def namespace_name(pid: int, run: int, role: str) -> str:
    """``pf-<pid>-<run>-<role>``; role is ``br`` or ``h<i>``."""
    name = f"{PREFIX}{pid}-{run}-{role}"
    if NAME_RE.match(name) is None:
        raise ClusterError(f"bad namespace role {role!r}")
    return name


def owner_pid(name: str) -> int | None:
    """The pid of the run that owns a namespace of ours, or None for any other name."""
    match = NAME_RE.match(name)
    return None if match is None else int(match["pid"])


def host_address(index: int) -> str:
    """Host ``index`` (1-based)'s address inside its namespace."""
    if not 1 <= index <= 200:
        raise ClusterError(f"host index {index} out of range 1..200")
    return f"{SUBNET}.{10 + index}"


def parse_netns_list(text: str) -> list[str]:
    """Names from ``ip netns list`` (lines like ``pf-1-1-h1 (id: 3)``)."""
    return [line.split()[0] for line in text.splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------
# command lines (pure)


def bridge_setup_argv(br_ns: str) -> list[list[str]]:
    return [
        ["ip", "netns", "add", br_ns],
        ["ip", "-n", br_ns, "link", "set", "lo", "up"],
        *bridge_argv(br_ns, "br0"),
    ]


def bridge_argv(br_ns: str, bridge: str) -> list[list[str]]:
    """A bridge that floods everything at once (no snooping, no STP forwarding delay)."""
    return [
        [
            "ip",
            "-n",
            br_ns,
            "link",
            "add",
            bridge,
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
            "mcast_snooping",
            "0",
        ],
        ["ip", "-n", br_ns, "link", "set", bridge, "up"],
    ]


def host_setup_argv(br_ns: str, host_ns: str, index: int) -> list[list[str]]:
    port = f"v{index}"
    return [
        ["ip", "netns", "add", host_ns],
        [
            "ip",
            "-n",
            br_ns,
            "link",
            "add",
            port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            host_ns,
        ],
        ["ip", "-n", br_ns, "link", "set", port, "master", "br0"],
        ["ip", "-n", br_ns, "link", "set", port, "up"],
        ["ip", "-n", host_ns, "link", "set", "lo", "up"],
        ["ip", "-n", host_ns, "addr", "add", f"{host_address(index)}/24", "dev", "eth0"],
        ["ip", "-n", host_ns, "link", "set", "eth0", "up"],
        ["ip", "-n", host_ns, "route", "add", "224.0.0.0/4", "dev", "eth0"],
    ]


def port_master_argv(br_ns: str, index: int, bridge: str | None) -> list[str]:
    """Attach host ``index``'s port to ``bridge``, or detach it (None: the host is cut off)."""
    tail = ["nomaster"] if bridge is None else ["master", bridge]
    return ["ip", "-n", br_ns, "link", "set", f"v{index}", *tail]


def switch_argv(
    br_ns: str, ports: Sequence[str], loss: float, delay: float, seed: int
) -> list[str]:
    """The userspace lossy switch (``switch.py``) on ``ports``, inside the bridge namespace."""
    if not 0 <= loss <= 100 or delay < 0:
        raise ClusterError(f"bad netem loss={loss} delay={delay}")
    return [
        "ip",
        "netns",
        "exec",
        br_ns,
        sys.executable,
        str(SWITCH),
        "--loss",
        f"{loss:g}",
        "--delay",
        f"{delay:g}",
        "--seed",
        str(seed),
        *ports,
    ]


# ---------------------------------------------------------------------------------------------
# running commands


def run(argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ClusterError(f"`{' '.join(argv)}` failed: {exc}") from None
    if check and done.returncode != 0:
        raise ClusterError(f"`{' '.join(argv)}` exited {done.returncode}: {done.stderr.strip()}")
    return done


def missing_requirements() -> str | None:
    """Why the cluster tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "cluster tests need root (network namespaces, veth, tc)"
    for tool in ("ip", "tc", "unshare"):
        if shutil.which(tool) is None:
            return f"cluster tests need `{tool}` (apt-get install iproute2 util-linux)"
    probe = namespace_name(os.getpid(), 0, "br")
    try:
        run(["ip", "netns", "add", probe])
    except ClusterError as exc:
        return f"cannot create a network namespace: {exc}"
    try:
        run(["ip", "-n", probe, "link", "add", "pfprobe", "type", "bridge"])
    except ClusterError as exc:
        return f"cannot create a bridge in a namespace: {exc}"
    finally:
        run(["ip", "netns", "del", probe], check=False)
    return None


def list_namespaces() -> list[str]:
    return parse_netns_list(run(["ip", "netns", "list"]).stdout)


def namespace_pids(ns: str) -> list[int]:
    done = run(["ip", "netns", "pids", ns], check=False)
    return [int(p) for p in done.stdout.split() if p.isdigit()]


def _kill_pids(pids: Sequence[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def delete_namespace(ns: str) -> None:
    """Kill every process inside ``ns``, then delete it (its veths go with it)."""
    for _ in range(20):
        pids = namespace_pids(ns)
        if not pids:
            break
        _kill_pids(pids, signal.SIGKILL)
        time.sleep(0.05)
    run(["ip", "netns", "del", ns], check=False)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep(alive: Callable[[int], bool] = pid_alive) -> list[str]:
    """Delete the namespaces (and processes) left by runs whose pytest process is gone."""
    removed = []
    for ns in list_namespaces():
        owner = owner_pid(ns)
        if owner is None or alive(owner):
            continue
        delete_namespace(ns)
        removed.append(ns)
    return removed


def die_with_parent() -> None:
    """In a child before exec: SIGKILL it when this (pytest) process goes away."""
    _libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


# ---------------------------------------------------------------------------------------------
# entering a namespace from this process


def call_in_netns(ns: str, fn: Callable[[], T], *, timeout: float = 30.0) -> T:
    """Run ``fn`` on a fresh thread that joined ``ns`` (setns is per thread): sockets it opens
    live in the namespace, so ``127.0.0.1`` there is the host's own loopback."""
    box: dict[str, object] = {}

    def target() -> None:
        try:
            with open(NETNS_DIR / ns, "rb") as handle:
                if _libc().setns(handle.fileno(), CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise ClusterError(f"setns({ns}) failed: {os.strerror(err)}")
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"netns-{ns}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise ClusterError(f"a call inside {ns} did not return within {timeout:g} s")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# one cluster's network


class Net:
    """The bridge namespace and the host namespaces of one cluster."""

    def __init__(self, pid: int, run_id: int) -> None:
        self.pid = pid
        self.run_id = run_id
        self.bridge_ns = namespace_name(pid, run_id, "br")
        self.hosts: dict[int, str] = {}
        self._bridges = {"br0"}
        self._created: list[str] = []
        self._switch: subprocess.Popen[str] | None = None

    def host_ns(self, index: int) -> str:
        return namespace_name(self.pid, self.run_id, f"h{index}")

    def create(self) -> None:
        self._run_all(bridge_setup_argv(self.bridge_ns), self.bridge_ns)

    def add_host(self, index: int) -> str:
        ns = self.host_ns(index)
        self._run_all(host_setup_argv(self.bridge_ns, ns, index), ns)
        self.hosts[index] = ns
        return ns

    def _run_all(self, commands: list[list[str]], created: str) -> None:
        for argv in commands:
            run(argv)
            if argv[:3] == ["ip", "netns", "add"]:
                self._created.append(created)

    def cut(self, index: int) -> None:
        self._check_bridged()
        run(port_master_argv(self.bridge_ns, index, None))

    def restore(self, index: int) -> None:
        run(port_master_argv(self.bridge_ns, index, "br0"))

    def split(self, groups: Sequence[Sequence[int]]) -> None:
        """Each group on a bridge of its own; hosts in no group are cut off."""
        grouped = [i for group in groups for i in group]
        if len(grouped) != len(set(grouped)) or not set(grouped) <= set(self.hosts):
            raise ClusterError(f"bad split {groups!r} of hosts {sorted(self.hosts)}")
        self._check_bridged()
        for number, group in enumerate(groups):
            bridge = f"br{number}"
            if bridge not in self._bridges:
                for argv in bridge_argv(self.bridge_ns, bridge):
                    run(argv)
                self._bridges.add(bridge)
            for index in group:
                run(port_master_argv(self.bridge_ns, index, bridge))
        for index in set(self.hosts) - set(grouped):
            self.cut(index)

    def heal(self) -> None:
        for index in self.hosts:
            self.restore(index)

    def netem(self, loss: float = 0.0, delay: float = 0.0, seed: int = 0) -> None:
        """``loss`` percent and ``delay`` seconds on every host's link, until :meth:`clear_netem`.

        The ports leave the kernel bridge for the userspace switch (``switch.py``): these
        kernels may have no ``sch_netem``. Cut and split need the kernel bridge: clear first.
        """
        self.clear_netem()
        ports = [f"v{i}" for i in sorted(self.hosts)]
        for index in sorted(self.hosts):
            run(port_master_argv(self.bridge_ns, index, None))
        proc = subprocess.Popen(
            switch_argv(self.bridge_ns, ports, loss, delay, seed),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=die_with_parent,
        )
        self._switch = proc
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != "switch ready":
            self.clear_netem()
            raise ClusterError(f"the lossy switch did not start: {line.strip()!r}")

    def clear_netem(self) -> str:
        """Stop the lossy switch (if any) and put every port back on ``br0``; its last words."""
        proc, self._switch = self._switch, None
        if proc is None:
            return ""
        proc.terminate()
        try:
            tail, _ = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            tail, _ = proc.communicate()
        self.heal()
        return str(tail).strip()

    def _check_bridged(self) -> None:
        if self._switch is not None:
            raise ClusterError("links are on the lossy switch: clear_netem() before cut/split")

    def destroy(self) -> None:
        """Delete every namespace this cluster made (hosts first); never raises."""
        if self._switch is not None:
            self._switch.kill()
            self._switch.wait()
            self._switch = None
        for ns in reversed(self._created):
            with contextlib.suppress(ClusterError):
                delete_namespace(ns)
        self._created.clear()
        self.hosts.clear()
