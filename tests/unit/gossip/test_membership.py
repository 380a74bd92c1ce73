"""The SWIM/Lifeguard membership core, one rule at a time, with hand-delivered messages."""

from __future__ import annotations

import contextlib
import random
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peerfarm.errors import DecodeError, MessageTooLarge
from peerfarm.gossip.config import GossipConfig, suspicion_bounds
from peerfarm.gossip.membership import (
    Address,
    MemberAlive,
    MemberDied,
    MemberJoined,
    MemberLeft,
    Membership,
    MemberState,
    MemberSuspected,
    MemberUpdated,
    Message,
    Outgoing,
    UserBroadcast,
)
from peerfarm.gossip.swim_wire import MAX_HOST_BYTES, MAX_NODE_ID_BYTES, max_item_size
from tests.support.depth import examples

CFG = GossipConfig.fast()


def addr(i: int) -> Address:
    return ("127.0.0.1", 9000 + i)


def make(i: int = 0, now: float = 0.0, cfg: GossipConfig = CFG, **kw: Any) -> Membership:
    return Membership(f"n{i}", addr(i), {"slots": 1}, cfg, random.Random(i), now, **kw)


def alive(i: int, inc: int = 0, meta: dict[str, Any] | None = None) -> Message:
    return {
        "t": "alive",
        "n": f"n{i}",
        "i": inc,
        "a": list(addr(i)),
        "m": {"slots": 1} if meta is None else meta,
        "p": 1,
    }


def gossip(sender: int, items: list[Message], inc: int = 0) -> Message:
    return {"t": "gossip", "f": f"n{sender}", "i": inc, "b": items}


def wire(out: list[Outgoing], cfg: GossipConfig = CFG) -> list[Outgoing]:
    """Round-trip through msgpack, asserting every message fits the datagram budget."""
    result = []
    for dst, msg in out:
        data = msgpack.packb(msg)
        assert len(data) <= cfg.message_budget, len(data)
        result.append((tuple(dst), msgpack.unpackb(data)))
    return result  # type: ignore[return-value]


def items(out: list[Outgoing], kind: str) -> list[Message]:
    return [it for _, msg in out for it in msg.get("b", []) if it["t"] == kind]


def of_type(out: list[Outgoing], kind: str) -> list[Outgoing]:
    return [(dst, msg) for dst, msg in out if msg["t"] == kind]


def with_members(m: Membership, ids: list[int], now: float = 0.0) -> Membership:
    m.receive(addr(ids[0]), gossip(ids[0], [alive(i) for i in ids]), now)
    m.drain_events()
    return m


def run_until(m: Membership, t: float, start: float = 0.0) -> list[Outgoing]:
    """Tick ``m`` at each of its deadlines up to ``t``; everything it sent."""
    out: list[Outgoing] = []
    now = start
    while (due := m.next_deadline()) <= t:
        now = max(now, due)
        out.extend(wire(m.tick(now)))
    return out


# --- basics ----------------------------------------------------------------------------


def test_new_node_lists_only_itself() -> None:
    m = make(1, incarnation=7)
    [me] = m.members()
    assert (me.node_id, me.state, me.incarnation, me.address) == (
        "n1",
        MemberState.ALIVE,
        7,
        addr(1),
    )
    assert m.alive_members() == [] and m.get("n2") is None
    assert (m.node_id, m.incarnation) == ("n1", 7)


def test_constructor_rejects_oversized_meta_and_bad_ids() -> None:
    with pytest.raises(MessageTooLarge):
        Membership("n1", addr(1), {"x": "y" * 700}, CFG, random.Random(1), 0.0)
    with pytest.raises(ValueError):
        Membership("", addr(1), {}, CFG, random.Random(1), 0.0)
    with pytest.raises(ValueError):
        Membership("x" * (MAX_NODE_ID_BYTES + 1), addr(1), {}, CFG, random.Random(1), 0.0)


def test_join_announces_us_and_the_seed_answers_with_its_view() -> None:
    seed = with_members(make(0), [2, 3])
    joiner = make(1)
    out = wire(joiner.join([addr(0), addr(1)], 0.0))  # our own address is not a seed
    assert [dst for dst, _ in out] == [addr(0)]
    assert out[0][1]["t"] == "join" and items(out, "alive")[0]["n"] == "n1"
    answer = wire(seed.receive(addr(1), out[0][1], 0.01))
    assert [type(e) for e in seed.drain_events()] == [MemberJoined]
    assert {a["n"] for a in items(answer, "alive")} == {"n0", "n2", "n3"}
    joiner.receive(addr(0), answer[0][1], 0.02)
    joined = {e.member.node_id for e in joiner.drain_events() if isinstance(e, MemberJoined)}
    assert joined == {"n0", "n2", "n3"}


def test_join_is_retried_until_a_member_is_known() -> None:
    joiner = make(1)
    joiner.join([addr(0)], 0.0)
    retries = of_type(run_until(joiner, 3 * CFG.join_retry_interval + 0.001), "join")
    assert len(retries) == 3
    joiner.receive(addr(0), gossip(0, [alive(0)]), 0.31)
    later = run_until(joiner, 1.0, start=0.31)
    assert of_type(later, "join") == []


def test_ping_is_acked_with_its_sequence_and_misaddressed_pings_are_ignored() -> None:
    m = make(1)
    out = wire(m.receive(addr(2), {"t": "ping", "f": "n2", "i": 0, "s": 41, "to": "n1"}, 0.0))
    assert [(dst, msg["t"], msg["s"]) for dst, msg in out] == [(addr(2), "ack", 41)]
    assert m.receive(addr(2), {"t": "ping", "f": "n2", "i": 0, "s": 42, "to": "n9"}, 0.0) == []


# --- probing -----------------------------------------------------------------------------


def first_ping(m: Membership) -> tuple[float, Outgoing]:
    """Tick at each deadline until ``m`` starts a probe; (time, the ping)."""
    while True:
        t = m.next_deadline()
        pings = of_type(wire(m.tick(t)), "ping")
        if pings:
            [ping] = pings
            return t, ping


def test_probes_go_round_robin_over_every_member() -> None:
    m = with_members(make(0), list(range(1, 8)))
    targets = []
    for _ in range(14):
        t, (dst, ping) = first_ping(m)
        targets.append(ping["to"])
        m.receive(dst, {"t": "ack", "f": ping["to"], "i": 0, "s": ping["s"]}, t + 0.001)
    expected = [f"n{i}" for i in range(1, 8)]
    assert sorted(targets[:7]) == expected and sorted(targets[7:]) == expected
    assert targets[:7] != targets[7:]  # reshuffled for the next round
    assert m.awareness == 0


def test_acked_probe_raises_no_suspicion() -> None:
    m = with_members(make(0), [1, 2, 3, 4])
    t, (dst, ping) = first_ping(m)
    target = ping["to"]
    m.receive(dst, {"t": "ack", "f": target, "i": 0, "s": ping["s"]}, t + 0.01)
    out = run_until(m, t + CFG.probe_interval - 0.001, start=t)
    assert of_type(out, "preq") == []
    assert m.get(target).state is MemberState.ALIVE  # type: ignore[union-attr]
    assert m.drain_events() == []


def test_silent_member_gets_indirect_probes_then_is_suspected() -> None:
    m = with_members(make(0), [1, 2, 3, 4, 5])
    t, (dst, ping) = first_ping(m)
    target = ping["to"]
    preqs = of_type(wire(m.tick(t + CFG.probe_timeout)), "preq")
    assert len(preqs) == CFG.indirect_checks
    assert all(
        msg["to"] == target
        and msg["s"] == ping["s"]
        and msg["n"] is True
        and tuple(msg["a"]) == dst
        for _, msg in preqs
    )
    assert target not in {f"n{d[1] - 9000}" for d, _ in preqs}
    out = wire(m.tick(t + CFG.probe_interval))
    [event] = m.drain_events()
    assert isinstance(event, MemberSuspected) and event.member.node_id == target
    assert m.awareness == CFG.indirect_checks  # Lifeguard: every missing nack counts
    out += run_until(m, t + CFG.probe_interval + CFG.gossip_interval, start=t)
    assert any(s["n"] == target and s["by"] == "n0" for s in items(out, "suspect"))


def test_indirect_ack_is_relayed_and_saves_the_member() -> None:
    origin = with_members(make(0), [1, 2])
    t, (_, ping) = first_ping(origin)
    t_i = int(ping["to"][1:])
    h_i = 3 - t_i  # the other member is the only possible helper
    helper, target = with_members(make(h_i), [0, t_i]), with_members(make(t_i), [0, h_i])
    [(dst, preq)] = of_type(wire(origin.tick(t + CFG.probe_timeout)), "preq")
    assert dst == addr(h_i)
    [(dst, hping)] = of_type(wire(helper.receive(addr(0), preq, t + 0.06)), "ping")
    assert dst == addr(t_i) and hping["to"] == f"n{t_i}"
    [(_, ack)] = of_type(wire(target.receive(addr(h_i), hping, t + 0.065)), "ack")
    [(dst, fwd)] = of_type(wire(helper.receive(addr(t_i), ack, t + 0.07)), "ack")
    assert dst == addr(0) and fwd["s"] == ping["s"]
    origin.receive(addr(h_i), fwd, t + 0.075)
    origin.tick(t + CFG.probe_interval)
    assert origin.get(f"n{t_i}").state is MemberState.ALIVE  # type: ignore[union-attr]
    assert origin.awareness == 0
    assert of_type(wire(helper.tick(t + 1.0)), "nack") == []  # relay settled: no nack


def test_helper_nacks_when_the_target_stays_silent() -> None:
    helper = make(1)
    preq = {"t": "preq", "f": "n0", "i": 0, "s": 77, "to": "n2", "a": list(addr(2)), "n": True}
    [(dst, _)] = helper.receive(addr(0), preq, 1.0)
    assert dst == addr(2)
    assert helper.tick(1.0 + CFG.probe_timeout - 0.001) == []
    nacks = of_type(wire(helper.tick(1.0 + CFG.probe_timeout)), "nack")
    assert [(dst, msg["s"]) for dst, msg in nacks] == [(addr(0), 77)]


def test_nacks_spare_the_prober_awareness() -> None:
    m = with_members(make(0), [1, 2, 3, 4, 5])
    t, (_, ping) = first_ping(m)
    preqs = of_type(wire(m.tick(t + CFG.probe_timeout)), "preq")
    for dst, _ in preqs:
        m.receive(dst, {"t": "nack", "f": f"n{dst[1] - 9000}", "i": 0, "s": ping["s"]}, t + 0.08)
    m.tick(t + CFG.probe_interval)
    assert m.awareness == 0  # everyone answered: we are healthy, the target is not
    assert m.get(ping["to"]).state is MemberState.SUSPECT  # type: ignore[union-attr]


def test_low_awareness_slows_probing() -> None:
    m = with_members(make(0), [1, 2, 3, 4, 5])
    t, _ = first_ping(m)
    m.tick(t + CFG.probe_timeout)
    m.tick(t + CFG.probe_interval)  # failed probe: awareness 3 -> multiplier 4
    assert m.awareness == 3
    m.tick(t + CFG.probe_interval)  # starts the next probe
    assert m.next_deadline() == pytest.approx(t + CFG.probe_interval + 4 * CFG.probe_timeout)


# --- suspicion, death, refutation ----------------------------------------------------------


def suspect(target: int, by: int, inc: int = 0) -> Message:
    return {"t": "suspect", "n": f"n{target}", "i": inc, "by": f"n{by}"}


def test_lone_suspicion_expires_at_the_lifeguard_maximum() -> None:
    m = with_members(make(0), list(range(1, 10)))
    m.receive(addr(1), gossip(1, [suspect(5, by=1)]), 1.0)
    _, high = suspicion_bounds(CFG, 10)
    m.receive(addr(1), gossip(1, [suspect(5, by=1)]), 1.1)  # same accuser: no confirmation
    assert m.get("n5").state is MemberState.SUSPECT  # type: ignore[union-attr]
    m.tick(1.0 + high - 0.001)
    assert m.get("n5").state is MemberState.SUSPECT  # type: ignore[union-attr]
    m.tick(1.0 + high)
    assert m.get("n5").state is MemberState.DEAD  # type: ignore[union-attr]
    kinds = [type(e) for e in m.drain_events()]
    assert kinds == [MemberSuspected, MemberDied]


def test_independent_confirmations_shrink_the_timeout_to_the_minimum() -> None:
    m = with_members(make(0), list(range(1, 10)))
    for by in (1, 2, 3):
        m.receive(addr(by), gossip(by, [suspect(5, by=by)]), 1.0)
    low, _ = suspicion_bounds(CFG, 10)
    m.tick(1.0 + low - 0.001)
    assert m.get("n5").state is MemberState.SUSPECT  # type: ignore[union-attr]
    m.tick(1.0 + low)
    assert m.get("n5").state is MemberState.DEAD  # type: ignore[union-attr]


@pytest.mark.parametrize("kind", ["suspect", "dead", "left"])
def test_accused_member_refutes_with_a_higher_incarnation(kind: str) -> None:
    m = with_members(make(0, incarnation=3), [1])
    accusation = {"t": kind, "n": "n0", "i": 3, "by": "n1"}
    if kind == "left":
        del accusation["by"]
    out = wire(m.receive(addr(1), gossip(1, [accusation]), 1.0))
    assert m.incarnation == 4
    assert any(a["n"] == "n0" and a["i"] == 4 for a in items(out, "alive"))
    assert m.members()[0].state is MemberState.ALIVE
    # an accusation about an older incarnation is ignored
    accusation["i"] = 2
    m.receive(addr(1), gossip(1, [accusation]), 1.1)
    assert m.incarnation == 4


def test_refuting_alive_clears_suspicion_but_same_incarnation_does_not() -> None:
    m = with_members(make(0), [1, 2])
    m.receive(addr(1), gossip(1, [suspect(2, by=1)]), 1.0)
    m.receive(addr(2), gossip(1, [alive(2, inc=0)]), 1.1)
    assert m.get("n2").state is MemberState.SUSPECT  # type: ignore[union-attr]
    m.receive(addr(2), gossip(1, [alive(2, inc=1)]), 1.2)
    assert m.get("n2").state is MemberState.ALIVE  # type: ignore[union-attr]
    assert [type(e) for e in m.drain_events()] == [MemberSuspected, MemberAlive]
    m.tick(100.0)  # the cancelled suspicion never fires
    assert m.get("n2").state is MemberState.ALIVE  # type: ignore[union-attr]


def test_dead_member_comes_back_only_with_a_newer_incarnation() -> None:
    m = with_members(make(0), [1, 2])
    m.receive(addr(1), gossip(1, [{"t": "dead", "n": "n2", "i": 0, "by": "n1"}]), 1.0)
    m.receive(addr(1), gossip(1, [alive(2, inc=0)]), 1.1)
    assert m.get("n2").state is MemberState.DEAD  # type: ignore[union-attr]
    m.receive(addr(1), gossip(1, [alive(2, inc=5)]), 1.2)  # restarted: wall-time incarnation
    assert m.get("n2").state is MemberState.ALIVE  # type: ignore[union-attr]
    assert [type(e) for e in m.drain_events()] == [MemberDied, MemberAlive]


def test_restart_with_a_lower_incarnation_recovers_through_refutation() -> None:
    old_view = with_members(make(0), [1])
    old_view.receive(addr(1), gossip(1, [alive(1, inc=9)]), 0.5)
    old_view.receive(addr(1), gossip(1, [{"t": "dead", "n": "n1", "i": 9, "by": "n0"}]), 1.0)
    restarted = make(1, now=2.0, incarnation=0)
    out = wire(restarted.join([addr(0)], 2.0))
    answer = wire(old_view.receive(addr(1), out[0][1], 2.01))  # includes "you are dead at 9"
    replies: list[Outgoing] = []
    for _, msg in answer:
        replies.extend(wire(restarted.receive(addr(0), msg, 2.02)))
    assert restarted.incarnation == 10
    for _, msg in replies:
        old_view.receive(addr(1), msg, 2.03)
    member = old_view.get("n1")
    assert member is not None and member.state is MemberState.ALIVE and member.incarnation == 10


def test_stale_view_of_the_sender_is_reported_to_it() -> None:
    m = with_members(make(0), [1])
    m.receive(addr(2), gossip(2, [{"t": "dead", "n": "n1", "i": 0, "by": "n2"}]), 1.0)
    out = wire(m.receive(addr(1), {"t": "ping", "f": "n1", "i": 0, "s": 1, "to": "n0"}, 1.1))
    assert any(d["n"] == "n1" and d["i"] == 0 for d in items(out, "dead"))
    assert of_type(out, "ack")
    out = wire(m.receive(addr(1), {"t": "ping", "f": "n1", "i": 1, "s": 2, "to": "n0"}, 1.2))
    assert of_type(out, "gossip") == []  # it already moved past our view: no notice


# --- metadata, leave, reclaim ---------------------------------------------------------------


def test_update_meta_bumps_incarnation_and_peers_see_the_update() -> None:
    a = with_members(make(0), [1])
    b = with_members(make(1), [0])
    a.update_meta({"slots": 4}, 1.0)
    assert a.incarnation == 1
    out = run_until(a, 1.0 + CFG.gossip_interval)
    for _, msg in out:
        b.receive(addr(0), msg, 1.1)
    [event] = [e for e in b.drain_events() if isinstance(e, MemberUpdated)]
    assert event.member.meta == {"slots": 4} and event.member.incarnation == 1
    with pytest.raises(MessageTooLarge):
        a.update_meta({"x": "y" * 700}, 2.0)


def test_leave_tells_everyone_at_once_and_stops_probing() -> None:
    m = with_members(make(0), [1, 2, 3])
    out = wire(m.leave(1.0))
    assert sorted(dst for dst, _ in out) == [addr(1), addr(2), addr(3)]
    assert all(items([o], "left") == [{"t": "left", "n": "n0", "i": 0}] for o in out)
    assert m.members()[0].state is MemberState.LEFT
    assert m.leave(1.1) == []
    later = run_until(m, 5.0, start=1.0)
    assert of_type(later, "ping") == []
    m.receive(addr(1), gossip(1, [{"t": "dead", "n": "n0", "i": 0, "by": "n1"}]), 5.0)
    assert m.incarnation == 0  # a leaving node does not refute
    peer = with_members(make(1), [0])
    peer.receive(addr(0), out[0][1], 1.01)
    assert [type(e) for e in peer.drain_events()] == [MemberLeft]


def test_dead_members_stay_listed_until_reclaimed() -> None:
    m = with_members(make(0), [1, 2])
    m.receive(addr(2), gossip(2, [{"t": "dead", "n": "n1", "i": 0, "by": "n2"}]), 1.0)
    m.tick(1.0 + CFG.dead_node_reclaim - 0.01)
    gone = m.get("n1")
    assert gone is not None and gone.state is MemberState.DEAD and gone.state_since == 1.0
    m.tick(1.0 + CFG.dead_node_reclaim)
    assert m.get("n1") is None and m.get("n2") is not None


# --- user broadcasts and the byte budget -----------------------------------------------------


def test_user_broadcast_is_piggybacked_delivered_once_and_relayed() -> None:
    a = with_members(make(0), [1])
    b = with_members(make(1), [0, 2])
    a.queue_broadcast("job:1", {"frames": [1, 2]})
    out = wire(a.tick(a.next_deadline()))
    carried = [msg for _, msg in out if items([(addr(1), msg)], "user")]
    assert carried
    b.receive(addr(0), carried[0], 1.0)
    b.receive(addr(0), carried[0], 1.1)  # duplicate
    events = [e for e in b.drain_events() if isinstance(e, UserBroadcast)]
    assert events == [UserBroadcast({"frames": [1, 2]}, "n0")]
    assert not items(run_until(b, 1.2, start=1.1), "user")  # news only once the app says so
    b.relay(events[0])
    relayed = run_until(b, 1.3, start=1.2)
    assert any(u["d"] == {"frames": [1, 2]} for u in items(relayed, "user"))
    assert [e for e in a.drain_events() if isinstance(e, UserBroadcast)] == []


def test_a_relay_replaces_what_was_queued_under_its_key() -> None:
    """The application relays only news, so the newest relay of a key is the one that rides."""
    b = with_members(make(1), [0, 2, 3])
    c = with_members(make(3), [1])
    for value in (1, 2):
        c.queue_broadcast("frame:7", {"v": value})
        carried = [m for _, m in wire(c.tick(c.next_deadline())) if items([(addr(1), m)], "user")]
        b.receive(addr(3), carried[0], float(value))
    events = [e for e in b.drain_events() if isinstance(e, UserBroadcast)]
    assert [e.payload for e in events] == [{"v": 1}, {"v": 2}]
    for event in events:
        b.relay(event)
    relayed = [u["d"] for u in items(run_until(b, 3.0, start=2.0), "user")]
    assert relayed and set(map(str, relayed)) == {str({"v": 2})}


def test_queue_broadcast_rejects_what_cannot_fit_a_datagram() -> None:
    m = make(0)
    with pytest.raises(MessageTooLarge):
        m.queue_broadcast("k", b"x" * max_item_size(CFG))
    with pytest.raises(ValueError):
        m.queue_broadcast("", 1)


def test_every_outgoing_message_fits_the_budget_under_pressure() -> None:
    big_meta = {"blob": "m" * 560}
    long_id = "x" * MAX_NODE_ID_BYTES
    host = "h" * MAX_HOST_BYTES
    m = Membership(long_id, (host, 1), big_meta, CFG, random.Random(3), 0.0)
    ids = [f"{i:0128d}" for i in range(30)]
    roster = [
        {"t": "alive", "n": nid, "i": 0, "a": [host, 2000 + k], "m": big_meta, "p": 1}
        for k, nid in enumerate(ids)
    ]
    for chunk in range(0, 30, 1):
        m.receive(
            (host, 2000), {"t": "gossip", "f": ids[0], "i": 0, "b": roster[chunk : chunk + 1]}, 0.0
        )
    for k in range(40):
        m.queue_broadcast(f"job:{k}", b"p" * (200 + 20 * k))
    out = run_until(m, 3.0)
    for k, nid in enumerate(ids[:5]):
        out += wire(
            m.receive(
                (host, 2000 + k),
                {
                    "t": "preq",
                    "f": nid,
                    "i": 0,
                    "s": k,
                    "to": ids[k + 1],
                    "a": [host, 3000],
                    "n": True,
                },
                3.0,
            )
        )
        out += wire(m.receive((host, 2000 + k), {"t": "join", "f": nid, "i": 0}, 3.0))
    out += wire(m.leave(3.5))
    assert len(out) > 100
    assert sum(len(msg.get("b", [])) for _, msg in out) > 100  # piggybacking really happened


# --- push-pull --------------------------------------------------------------------------------


def test_push_pull_merges_members_and_treats_remote_dead_as_suspect() -> None:
    a = with_members(make(0), [1, 2, 3])
    a.receive(addr(1), gossip(1, [{"t": "dead", "n": "n3", "i": 0, "by": "n1"}]), 1.0)
    a.receive(addr(1), gossip(1, [{"t": "left", "n": "n2", "i": 0}]), 1.0)
    b = with_members(make(4), [5])
    b.receive(addr(5), gossip(5, [alive(1), alive(2), alive(3)]), 0.5)
    b.drain_events()
    b.merge_push_pull(msgpack.unpackb(msgpack.packb(a.push_pull_state())), 2.0)
    assert b.get("n0").state is MemberState.ALIVE  # type: ignore[union-attr]
    assert b.get("n2").state is MemberState.LEFT  # type: ignore[union-attr]
    assert b.get("n3").state is MemberState.SUSPECT  # type: ignore[union-attr]
    a.merge_push_pull(b.push_pull_state(), 2.0)
    assert {m.node_id for m in a.alive_members()} == {"n1", "n4", "n5"}


def test_push_pull_naming_us_dead_makes_us_refute() -> None:
    a = make(0, incarnation=2)
    state = {"t": "pp", "f": "n1", "m": [["n0", 2, 2, list(addr(0)), {}, 1]]}
    a.merge_push_pull(state, 1.0)
    assert a.incarnation == 3


def test_malformed_push_pull_raises_decode_error_and_changes_nothing() -> None:
    a = with_members(make(0), [1])
    bad = {"t": "pp", "f": "n1", "m": [["n7", 0, 0, list(addr(7)), {}, 1], ["n8", 0, 9]]}
    with pytest.raises(DecodeError):
        a.merge_push_pull(bad, 1.0)
    assert a.get("n7") is None


# --- decoding: only DecodeError, never KeyError/TypeError ----------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**65), 2**65),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=20),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
)
fields = ("t", "f", "i", "s", "to", "a", "n", "b", "m", "p", "by", "o", "id", "k", "d")
types = st.sampled_from(
    [
        "ping",
        "ack",
        "nack",
        "preq",
        "gossip",
        "join",
        "alive",
        "suspect",
        "dead",
        "left",
        "user",
        "pp",
        "nope",
    ]
)


def near_valid() -> st.SearchStrategy[Any]:
    item = st.fixed_dictionaries(
        {"t": types, "n": st.sampled_from(["n1", "", 3]), "i": st.sampled_from([0, -1, "0"])},
        optional={key: values for key in ("a", "m", "p", "by", "o", "id", "k", "d")},
    )
    return st.fixed_dictionaries(
        {"t": types},
        optional={
            "f": st.sampled_from(["n1", "n0", "", 5]),
            "i": st.sampled_from([0, 1, True]),
            "s": values,
            "to": st.sampled_from(["n0", None]),
            "a": values,
            "n": values,
            "b": st.one_of(values, st.lists(item, max_size=3)),
        },
    )


@settings(max_examples=examples(300))
@given(st.one_of(values, near_valid(), st.dictionaries(st.sampled_from(fields), values)))
def test_receive_raises_only_decode_error(message: Any) -> None:
    m = with_members(make(0), [1, 2])
    before = [(x.node_id, x.state, x.incarnation) for x in m.members()]
    try:
        out = m.receive(addr(1), message, 1.0)
    except DecodeError as exc:
        assert str(exc)
        assert [(x.node_id, x.state, x.incarnation) for x in m.members()] == before
    else:
        wire(out)


@settings(max_examples=examples(100))
@given(
    st.one_of(
        values,
        st.fixed_dictionaries(
            {"t": st.just("pp"), "f": st.just("n1"), "m": st.lists(st.lists(values, max_size=7))}
        ),
    )
)
def test_merge_push_pull_raises_only_decode_error(state: Any) -> None:
    m = make(0)
    with contextlib.suppress(DecodeError):
        m.merge_push_pull(state, 1.0)


def test_decode_error_messages_name_the_problem() -> None:
    m = make(0)
    with pytest.raises(DecodeError, match="unknown gossip message type 'zzz'"):
        m.receive(addr(1), {"t": "zzz"}, 0.0)
    with pytest.raises(DecodeError, match="missing field 's'"):
        m.receive(addr(1), {"t": "ping", "f": "n1", "i": 0, "to": "n0"}, 0.0)
    with pytest.raises(DecodeError, match="metadata of"):
        m.receive(addr(1), gossip(1, [alive(1, meta={"x": "y" * 700})]), 0.0)
