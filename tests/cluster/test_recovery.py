"""Real daemons in network namespaces through the crashes of issue 16: nothing lost.

* the submitter is killed (SIGKILL) right after ``submit`` returned, then restarted: the job it
  acknowledged is rendered and delivered to it (by the others while it is down when one of them
  fetched the scene in time; else it waits for the scene, and does not fail);
* the only peer that may render command jobs is killed mid-frame, then restarted: its old
  renderer is ended, its claims do not stay "rendering", and the job completes;
* a peer is frozen (SIGSTOP) longer than a lease, then continued (SIGCONT): no frame is
  rendered more than twice and only the frozen peer's own frame may be rendered twice.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from peerfarm.peer.worker import SET_ASIDE_S
from peerfarm.scheduler.eligibility import NO_SCENE_REASON
from tests.cluster.conftest import ClusterFactory, report
from tests.cluster.harness import FRAME_SCRIPT, Cluster, Host, completed_renders, duplicated_frames
from tests.cluster.test_scenarios import (
    _open_renders,
    all_alive,
    all_delivered,
    check_outputs,
    converged,
    frames_done,
    rendering_hosts,
)

pytestmark = [pytest.mark.slow, pytest.mark.mdns, pytest.mark.timeout(180)]


def submit(c: Cluster, host: Host, frames: int, name: str = "job") -> str:
    return c.submit(host, FRAME_SCRIPT, f"1-{frames}", name=name, renderer="command")


def test_submitter_killed_right_after_submit_gets_its_job_done(
    cluster: ClusterFactory, figures: dict[str, Any]
) -> None:
    c = cluster(3)
    h1, h2, h3 = c.hosts
    c.wait_until(lambda: all_alive(c, c.hosts), 20.0, "discovery")
    job = submit(c, h1, 12)
    c.kill(h1, signal.SIGKILL)  # moments after `submit` returned
    killed = time.monotonic()
    # The others render the job while h1 is down when one of them fetched its scene before the
    # kill, a race with it. Otherwise nobody can, and that fails neither the job nor the peers
    # that tried: they hand the frames back, leave the job a while (SET_ASIDE_S) and say why.
    no_scene = {h2.name: NO_SCENE_REASON, h3.name: NO_SCENE_REASON}

    def rendered_or_waiting_for_the_scene() -> bool:
        if frames_done(c, h2, job):
            return True
        retried = time.monotonic() - killed > SET_ASIDE_S + 1.0  # a set-aside has run out
        return retried and c.job_view(h2, job)["waiting"] == no_scene

    c.wait_until(rendered_or_waiting_for_the_scene, 60.0, "the job rendered or waiting")
    done_while_down = c.job_view(h2, job)["frames_done"]
    assert c.job_view(h2, job)["state"] != "failed"
    c.restart(h1)
    restarted = time.monotonic()
    c.wait_until(lambda: all_delivered(c, h1, job), 60.0, "every frame delivered to h1")
    c.wait_until(lambda: converged(c, c.hosts), 30.0, "equal ledgers")
    check_outputs(h1, "job", range(1, 13))
    report(
        figures,
        down_s=round(restarted - killed, 2),
        done_while_down=done_while_down,
        delivered_after_restart_s=round(time.monotonic() - restarted, 2),
        duplicates=len(duplicated_frames(c.renders(), job)),
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _renderer_pids(host: Host) -> list[int]:
    """frame.sh processes (renderers) whose environment names ``host``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if b"frame.sh" in cmdline and f"PF_CLUSTER_HOST={host.name}".encode() in environ:
            found.append(int(entry))
    return found


def test_only_capable_peer_killed_mid_frame_then_restarted_finishes_the_job(
    cluster: ClusterFactory, figures: dict[str, Any]
) -> None:
    c = cluster(0, frame_seconds=3.0)
    h1 = c.add_host(allow_command=False)  # submits, cannot render command jobs
    h2 = c.add_host()  # the only peer that can
    for host in (h1, h2):
        c.wait_ready(host)
    c.wait_until(lambda: all_alive(c, c.hosts), 20.0, "discovery")
    job = submit(c, h1, 3)
    c.wait_until(lambda: bool(rendering_hosts(c, job)), 20.0, "h2 rendering")
    old = _renderer_pids(h2)
    assert old, "the renderer process is visible"
    c.kill(h2, signal.SIGKILL)
    assert any(_alive(pid) for pid in old), "a SIGKILLed daemon leaves its renderer running"
    c.restart(h2)
    c.wait_until(lambda: not any(_alive(pid) for pid in old), 10.0, "the old renderer ended")
    c.wait_until(lambda: all_delivered(c, h1, job), 60.0, "every frame delivered")
    assert all(f["state"] == "done" for f in c.status(h1, job)["frames"])
    check_outputs(h1, "job", range(1, 4))
    report(figures, orphans_ended=len(old))


def test_a_peer_frozen_longer_than_a_lease_renders_nothing_three_times(
    cluster: ClusterFactory, figures: dict[str, Any]
) -> None:
    c = cluster(4, frame_seconds=1.0)
    h1 = c.hosts[0]
    c.wait_until(lambda: all_alive(c, c.hosts), 20.0, "discovery")
    job = submit(c, h1, 24)
    victim: Host | None = None

    def pick() -> bool:
        nonlocal victim
        busy = rendering_hosts(c, job, exclude=h1)
        victim = c.host(busy[0]) if busy else None
        return victim is not None

    c.wait_until(pick, 20.0, "a host other than the submitter rendering")
    assert victim is not None and victim.proc is not None
    held = {f for h, f in _open_renders(c, job) if h == victim.name}
    victim.proc.send_signal(signal.SIGSTOP)
    time.sleep(4.0)  # the fast preset's lease is 1 s
    victim.proc.send_signal(signal.SIGCONT)
    c.wait_until(lambda: all_delivered(c, h1, job), 60.0, "every frame delivered")
    c.wait_until(lambda: converged(c, c.hosts), 30.0, "equal ledgers")
    renders = completed_renders(c.renders(), job)
    counts = {frame: len(ends) for frame, ends in renders.items()}
    check_outputs(h1, "job", range(1, 25))
    twice = sorted(f for f, n in counts.items() if n > 1)
    report(figures, victim=victim.name, held=sorted(held), rendered_twice=twice)
    assert max(counts.values()) <= 2, counts
    assert set(twice) <= held, (twice, held)
