"""``peerfarm.testing.daemons`` itself, with real processes: ports, readiness, and that a
stopped or killed daemon leaves nothing running."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from peerfarm.testing import daemons
from peerfarm.testing.daemons import LocalFarm, descendants, free_port
from tests.support.renderers import pid_running


def test_free_port_is_free_for_tcp_and_udp() -> None:
    port = free_port()
    with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        tcp.bind(("127.0.0.1", port))
        udp.bind(("127.0.0.1", port))


def test_a_farm_starts_ready_daemons_and_closing_it_stops_every_one(tmp_path: Path) -> None:
    with LocalFarm(tmp_path) as farm:
        assert farm in daemons._OPEN
        a, b = farm.start_all(["a", "b"], allow_command=True)
        assert a.alive_names() == b.alive_names() == {"a", "b"}
        assert a.status()["node"]["address"] == a.address
        assert (tmp_path / "farm.key").stat().st_mode & 0o777 == 0o600
        # kill -9 takes the daemon and its children; the farm notices it is gone
        script = farm.script("long.sh", 'sleep 60\n: > "$PEERFARM_OUTPUT_DIR/out"')
        job = farm.submit(b, script, "1")
        daemons.wait_until(lambda: b.job(job)["frames_rendering"] == 1, 30, "a claim")
        rendering = daemons.wait_until(
            lambda: next((d for d in (a, b) if descendants(d.pid)), None), 30, "a render process"
        )
        renders = descendants(rendering.pid)
        rendering.kill()
        assert not rendering.alive()
        gone = lambda: not any(_alive(pid) for pid in renders)  # noqa: E731
        daemons.wait_until(gone, 5, "the killed daemon's renders to be gone")
    assert farm not in daemons._OPEN
    assert not a.alive() and not b.alive() and descendants(os.getpid()) == []


def test_stop_all_closes_what_a_test_left_open(tmp_path: Path) -> None:
    farm = LocalFarm(tmp_path)
    solo = farm.start("solo")
    assert str(tmp_path) in daemons.stop_all()
    assert not solo.alive() and farm not in daemons._OPEN


def _alive(pid: int) -> bool:
    return pid_running(pid)
