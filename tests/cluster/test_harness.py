"""The harness's pure parts: names, sweep decisions, command lines, render log, lossy switch.

These run anywhere (no root, no namespaces), so a broken harness shows up before the slow
scenarios do.
"""

from __future__ import annotations

import pytest

from tests.cluster import netns
from tests.cluster.harness import RenderEvent, duplicated_frames, parse_render_log
from tests.cluster.netns import ClusterError
from tests.cluster.switch import VNET_HDR_LEN, Switch

HDR = bytes(VNET_HDR_LEN)
MAC = {n: bytes([2, 0, 0, 0, 0, n]) for n in range(1, 5)}
BROADCAST = b"\xff" * 6


def frame(dst: bytes, src: bytes) -> bytes:
    return HDR + dst + src + b"\x08\x00" + b"payload"


def test_namespace_names_carry_their_owner() -> None:
    name = netns.namespace_name(4242, 3, "h2")
    assert name == "pf-4242-3-h2"
    assert netns.owner_pid(name) == 4242
    assert netns.owner_pid(netns.namespace_name(7, 1, "br")) == 7
    assert netns.owner_pid("pf-old") is None
    assert netns.owner_pid("someone-else") is None
    with pytest.raises(ClusterError):
        netns.namespace_name(1, 1, "eth0")


def test_parse_netns_list() -> None:
    text = "pf-1-1-h1 (id: 3)\npf-1-1-br (id: 2)\nother\n\n"
    assert netns.parse_netns_list(text) == ["pf-1-1-h1", "pf-1-1-br", "other"]


def test_sweep_spares_live_owners_and_foreign_namespaces(monkeypatch: pytest.MonkeyPatch) -> None:
    present = ["pf-10-1-h1", "pf-10-1-br", "pf-20-1-h1", "docker-ns", "pf-x"]
    deleted: list[str] = []
    monkeypatch.setattr(netns, "list_namespaces", lambda: list(present))
    monkeypatch.setattr(netns, "delete_namespace", deleted.append)
    removed = netns.sweep(alive=lambda pid: pid == 20)
    assert removed == deleted == ["pf-10-1-h1", "pf-10-1-br"]


def test_commands_only_ever_name_our_namespaces() -> None:
    commands = [
        *netns.bridge_setup_argv("pf-1-1-br"),
        *netns.host_setup_argv("pf-1-1-br", "pf-1-1-h2", 2),
        netns.port_master_argv("pf-1-1-br", 2, None),
        netns.port_master_argv("pf-1-1-br", 2, "br1"),
        netns.switch_argv("pf-1-1-br", ["v1", "v2"], 10, 0.05, 1),
    ]
    for argv in commands:
        assert argv[0] == "ip"
        named = argv[argv.index("-n") + 1] if "-n" in argv else argv[3]
        assert named.startswith("pf-1-1-"), argv
    assert ["ip", "-n", "pf-1-1-h2", "addr", "add", "10.77.0.12/24", "dev", "eth0"] in commands
    assert netns.port_master_argv("pf-1-1-br", 2, None)[-1] == "nomaster"
    with pytest.raises(ClusterError):
        netns.switch_argv("pf-1-1-br", ["v1"], 101, 0, 1)
    with pytest.raises(ClusterError):
        netns.host_address(0)


def test_render_log_and_duplicates() -> None:
    text = (
        "1.0 h1 start J 1\n1.4 h1 end J 1\n"
        "1.1 h2 start J 2\ngarbage line\n1.5 h2 end J 2\n"
        "2.0 h3 start J 1\n2.4 h3 end J 1\n"
        "2.0 h4 start K 1\n2.4 h4 end K 1\n"
        "3.0 h2 start J 3\n"
    )
    events = parse_render_log(text)
    assert events[0] == RenderEvent(1.0, "h1", "start", "J", 1)
    assert len(events) == 9
    assert duplicated_frames(events, "J") == {1: ["h1", "h3"]}
    assert duplicated_frames(events, "K") == {}


def test_switch_learns_floods_and_forwards() -> None:
    switch = Switch(["v1", "v2", "v3"], loss=0, delay=0.05, seed=1)
    flood = switch.receive("v1", frame(BROADCAST, MAC[1]), now=10.0)
    assert sorted(s.port for s in flood) == ["v2", "v3"]
    assert all(s.at == pytest.approx(10.05) for s in flood)
    unknown = switch.receive("v2", frame(MAC[3], MAC[2]), now=10.1)
    assert sorted(s.port for s in unknown) == ["v1", "v3"]  # not learned yet: flooded
    reply = switch.receive("v3", frame(MAC[1], MAC[3]), now=10.2)
    assert [s.port for s in reply] == ["v1"]  # learned from the broadcast
    assert switch.receive("v1", frame(MAC[1], MAC[1]), now=10.3) == []  # never back out


def test_switch_loss_is_seeded_and_near_its_rate() -> None:
    def run(seed: int) -> list[int]:
        switch = Switch(["v1", "v2"], loss=10, delay=0, seed=seed)
        return [len(switch.receive("v1", frame(BROADCAST, MAC[1]), now=i)) for i in range(2000)]

    first = run(8)
    assert first == run(8)
    assert first != run(9)
    lost = first.count(0) / len(first)
    assert 0.08 < lost < 0.12
    with pytest.raises(ValueError):
        Switch(["v1"], loss=-1, delay=0, seed=0)
