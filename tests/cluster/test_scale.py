"""A scale series of real hosts in network namespaces (issue 19 item 6, issue 16's 32-host run).

Opt-in (it starts up to 32 daemons):
``PEERFARM_SCALE=8,16,32 ./dev test tests/cluster/test_scale.py``.
For each size N, with mDNS alone (no ``--join``), the LAN preset and one slot per host:

- ``startup_s``: spawning the N daemons until every host lists every other as alive;
- ``listed_max_s``: ``submit`` returning until the last host lists the job, and
  ``finished_lag_s``: the submitter seeing the job finished until the last host does, both
  on a first job of one frame a host, every host polled;
- ``submit_cli_s``: the ``peerfarm submit`` process, start to exit (Python start-up included);
- ``efficiency``: a second job, 4xN one-second frames of a scene no host has yet, ideal 4 s /
  (``submit`` returning to every frame done on the submitter, as ``submit --wait`` learns it:
  one long poll at a time, nothing else asked of the farm meanwhile);
- ``first_frame_s`` / ``all_busy_s`` / ``renders_end_s`` (the second job): ``submit``
  returning until the first frame starts, until the last host starts its first frame, and
  until the last frame ends (the render log's wall clock); ``frames_per_host``: the fewest
  and most frames one host rendered (hosts that rendered none are not counted);
- ``duplicates``: frames rendered to completion more than once (render log), asserted 0;
- ``idle_cpu_pct`` / ``gossip_bps``: per daemon, mean over a quiet window starting 2 s after
  the job (once the writes its end left deferred are out);
- ``udp_drops``: the kernel's UDP receive errors summed over the namespaces.

Figures are printed and collected in the "cluster figures" summary; only correctness is
asserted (every frame done, no duplicate), never a time.
"""

from __future__ import annotations

import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import netns
from tests.cluster.conftest import ClusterFactory, report
from tests.cluster.harness import (
    FRAME_SCRIPT,
    Cluster,
    Host,
    completed_renders,
    duplicated_frames,
)
from tests.cluster.netns import ClusterError

SIZES = [int(n) for n in os.environ.get("PEERFARM_SCALE", "").replace(" ", "").split(",") if n]
QUIET_WINDOW_S = 10.0
QUIET_AFTER_S = 2.0  # between the job's end and the quiet window
FRAMES_PER_HOST = 4

pytestmark = [pytest.mark.slow, pytest.mark.mdns, pytest.mark.timeout(900)]


def _sweep(c: Cluster, hosts: list[Host], ask: Any) -> list[Any]:
    """``ask(host)`` on every host at once (each call enters its namespace on its own thread)."""
    with ThreadPoolExecutor(max_workers=min(16, len(hosts))) as pool:
        return list(pool.map(ask, hosts))


def _first_times(c: Cluster, hosts: list[Host], test: Any, timeout: float, what: str) -> float:
    """Seconds until ``test(host)`` held on every host (each host's first success counts)."""
    began = time.monotonic()
    seen: dict[str, float] = {}

    def ask(host: Host) -> None:
        if host.name in seen:
            return
        try:
            if test(host):
                seen[host.name] = time.monotonic() - began
        except ClusterError:
            pass

    while len(seen) < len(hosts):
        if time.monotonic() - began > timeout:
            missing = sorted({h.name for h in hosts} - set(seen))
            raise AssertionError(f"timed out waiting for {what} on {missing}\n{c.diagnostics(8)}")
        _sweep(c, hosts, ask)
        time.sleep(0.05)
    return max(seen.values())


def _wait_ended(c: Cluster, host: Host, job: str, timeout: float) -> dict[str, Any]:
    """``job``'s summary on ``host`` once it ended, asked as ``submit --wait`` asks: a long
    poll that the daemon answers when the job ends (or after 5 s, then asked again)."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        answer = c.api(host, "GET", "/api/status", params={"job": job, "limit": 0, "wait": 5})
        if answer.get("ended"):
            return dict(answer["jobs"][0])
    raise AssertionError(f"job {job[:12]} did not end within {timeout:g} s\n{c.diagnostics(8)}")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _gossip_bytes(c: Cluster, host: Host) -> float:
    text = c.api_text(host, "/metrics")
    return sum(
        float(m.group(1))
        for m in re.finditer(r"^peerfarm_gossip_bytes_total\{[^}]*\} (\S+)$", text, re.M)
    )


def _udp_errors(ns: str) -> int:
    out = netns.run(["ip", "netns", "exec", ns, "cat", "/proc/net/snmp"]).stdout
    rows = [line.split() for line in out.splitlines() if line.startswith("Udp:")]
    if len(rows) < 2:
        return 0
    values = dict(zip(rows[0][1:], rows[1][1:], strict=False))
    return int(values.get("InErrors", 0)) + int(values.get("RcvbufErrors", 0))


@pytest.mark.skipif(not SIZES, reason="opt-in: set PEERFARM_SCALE=8,16,32")
@pytest.mark.parametrize("n", SIZES or [0])
def test_scale_series(cluster: ClusterFactory, figures: dict[str, Any], n: int) -> None:
    c = cluster(0, preset="lan", frame_seconds=1.0)
    began = time.monotonic()
    hosts = [c.add_host() for _ in range(n)]
    for host in hosts:
        c.wait_ready(host, timeout=120.0)
    ids = {h.node_id for h in hosts}

    def sees_all(host: Host) -> bool:
        states = c.peer_states(host)
        return all(states.get(i) == "alive" for i in ids - {host.node_id})

    _first_times(c, hosts, sees_all, 180.0, "every host to see every other")
    startup_s = time.monotonic() - began

    submitter = hosts[0]
    # Listing and agreement: a job of one frame a host, every host polled until it lists the
    # job, then until it sees it finished.
    job = c.submit(submitter, FRAME_SCRIPT, f"1-{n}", name="listing", renderer="command")

    def lists_job(host: Host) -> bool:
        return any(j["id"] == job for j in c.status(host)["jobs"])

    listed_s = _first_times(c, hosts, lists_job, 60.0, "every host to list the job")

    def finished(host: Host) -> bool:
        view = c.job_view(host, job)
        return bool(view["frames_done"] == view["frames_total"])

    _wait_ended(c, submitter, job, 60.0 + n)
    lag_s = _first_times(c, hosts, finished, 60.0, "every host to see the job finished")

    # Efficiency: a scene no host has yet (every host fetches it, as for a user's new scene),
    # watched the way ``submit --wait`` watches it, one long poll of the submitter at a time:
    # polling 32 hosts at once took as much CPU as the farm's own start-up.
    scene = c.root / "scale-frame.sh"
    scene.write_text(FRAME_SCRIPT.read_text() + "# the efficiency job's own scene\n")
    scene.chmod(0o755)
    frames = FRAMES_PER_HOST * n
    submitted = time.monotonic()
    job = c.submit(submitter, scene, f"1-{frames}", name="scale", renderer="command")
    returned, returned_wall = time.monotonic(), time.time()
    view = _wait_ended(c, submitter, job, 60.0 + frames)
    done = time.monotonic()
    assert view["frames_done"] == frames, view

    # a quiet window after the job: CPU and gossip bytes per daemon, from when the writes the
    # job's end left deferred (push_defer_max: 1 s) are out
    time.sleep(QUIET_AFTER_S)
    before_cpu = {h.name: _cpu_seconds(h.proc.pid) for h in hosts if h.proc is not None}
    names = [h.name for h in hosts]
    before_bytes = dict(zip(names, _sweep(c, hosts, lambda h: _gossip_bytes(c, h)), strict=True))
    time.sleep(QUIET_WINDOW_S)
    after_cpu = {h.name: _cpu_seconds(h.proc.pid) for h in hosts if h.proc is not None}
    after_bytes = dict(zip(names, _sweep(c, hosts, lambda h: _gossip_bytes(c, h)), strict=True))
    idle_cpu = sum(after_cpu[k] - before_cpu[k] for k in after_cpu) / len(after_cpu)
    gossip = sum(after_bytes[k] - before_bytes[k] for k in after_bytes) / len(after_bytes)

    events = [e for e in c.renders() if e.job == job]
    duplicates = duplicated_frames(events, job)
    first_start: dict[str, float] = {}
    for e in events:
        if e.kind == "start":
            first_start[e.host] = min(first_start.get(e.host, e.at), e.at)
    per_host = [sum(1 for ends in completed_renders(events, job).values() if ends[0].host == h)
                for h in first_start]  # fmt: skip
    report(
        figures,
        hosts=n,
        startup_s=round(startup_s, 1),
        submit_cli_s=round(returned - submitted, 2),
        listed_max_s=round(listed_s, 2),
        efficiency=round(FRAMES_PER_HOST * 1.0 / (done - returned), 2),
        finished_lag_s=round(lag_s, 2),
        first_frame_s=round(min(first_start.values()) - returned_wall, 2),
        all_busy_s=round(max(first_start.values()) - returned_wall, 2),
        renders_end_s=round(max(e.at for e in events if e.kind == "end") - returned_wall, 2),
        frames_per_host=f"{min(per_host)}-{max(per_host)}",
        duplicates=len(duplicates),
        idle_cpu_pct=round(100 * idle_cpu / QUIET_WINDOW_S, 2),
        gossip_bps=round(gossip / QUIET_WINDOW_S),
        udp_drops=sum(_udp_errors(h.ns) for h in hosts),
    )
    assert duplicates == {}, f"frames rendered twice: {duplicates}"
