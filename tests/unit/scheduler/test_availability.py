"""Availability rules, pure: the schedule language, idle and memory reasons, host holds."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peerfarm.errors import UsageError
from peerfarm.gossip.membership import Member, MemberState
from peerfarm.ledger import Ledger, codec
from peerfarm.peer.idle import logind_idle
from peerfarm.peer.render import capped_threads
from peerfarm.scheduler import eligibility as el
from peerfarm.scheduler.availability import Schedule, away_reasons, memory_reason
from tests.support.ledger import NODES, make_job, output

A, B = NODES[:2]
MONDAY = datetime(2026, 11, 30)  # a Monday, 00:00


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return MONDAY + timedelta(days=day, hours=hour, minutes=minute)


def test_weeknights_and_weekends() -> None:
    s = Schedule.parse("Mon-Fri 19:00-08:00, Sat-Sun")
    assert not s.allows(at(0, 12))  # Monday noon
    assert s.allows(at(0, 19))  # Monday 19:00
    assert s.allows(at(1, 7, 59))  # Tuesday morning: Monday's night
    assert not s.allows(at(1, 8))
    assert s.allows(at(4, 23))  # Friday night
    assert s.allows(at(5, 7))  # Saturday (both the night and the day)
    assert s.allows(at(6, 23, 59))  # Sunday
    assert not s.allows(at(0, 3))  # Monday 03:00 belongs to Sunday's night: not listed


def test_every_day_window_single_days_and_full_names() -> None:
    assert Schedule.parse("22:00-06:00").allows(at(2, 23))
    assert not Schedule.parse("22:00-06:00").allows(at(2, 12))
    s = Schedule.parse("monday Wed FRI")
    assert [s.allows(at(d, 12)) for d in range(7)] == [1, 0, 1, 0, 1, 0, 0]
    wrap = Schedule.parse("Sat-Mon")
    assert [wrap.allows(at(d, 12)) for d in range(7)] == [1, 0, 0, 0, 0, 1, 1]
    assert Schedule.parse("daily 00:00-24:00").allows(at(3, 23, 59))


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("", "expected e.g."),
        ("Mon-Fri,", "expected e.g."),
        ("Moon 10:00-12:00", "'Moon' is not a day"),
        ("Mon 25:00-08:00", "no such time"),
        ("Mon 10:00-10:00", "empty window"),
        ("10:00-12:00 Mon", "days come before the time"),
        ("Mon 10:00-11:00 12:00-13:00", "one time window per entry"),
    ],
)
def test_a_bad_schedule_is_one_line(spec: str, words: str) -> None:
    with pytest.raises(UsageError) as error:
        Schedule.parse(spec)
    assert words in str(error.value) and "\n" not in str(error.value)


@given(st.integers(0, 6), st.integers(0, 23), st.integers(0, 59))
def test_a_window_and_its_complement_cover_the_week_once(day: int, hour: int, minute: int) -> None:
    night = Schedule.parse("19:00-08:00")
    day_time = Schedule.parse("08:00-19:00")
    when = at(day, hour, minute)
    assert night.allows(when) != day_time.allows(when)


def test_away_reasons() -> None:
    s = Schedule.parse("Sat-Sun")
    assert away_reasons(schedule=None, local_now=at(0, 1), when_idle=None, idle_seconds=0) == {}
    out = away_reasons(schedule=s, local_now=at(0, 12), when_idle=600, idle_seconds=30)
    assert out == {
        "schedule": "outside its schedule (Sat-Sun)",
        "idle": "its user is at the machine (idle 30 s of 10 min)",
    }
    # unknown idle time counts as idle; long enough idle is fine
    assert away_reasons(schedule=None, local_now=at(5, 1), when_idle=600, idle_seconds=None) == {}
    assert away_reasons(schedule=s, local_now=at(5, 1), when_idle=600, idle_seconds=601) == {}


def test_logind_idle_hint() -> None:
    assert logind_idle("no", "0") == 0.0
    assert logind_idle("yes", "5000000", now=65.0) == 60.0
    assert logind_idle("", "") is None
    assert logind_idle("yes", "x") is None


def test_thread_cap() -> None:
    assert capped_threads(None, None) == {}
    assert capped_threads(0, 2) == {"threads": 2}
    assert capped_threads(8, 2) == {"threads": 2}
    assert capped_threads(1, 2) == {"threads": 1}
    assert capped_threads("x", 3) == {"threads": 3}


def test_memory_reason() -> None:
    gib = 1024**3
    assert memory_reason(0, gib) is None
    assert memory_reason(2 * gib, None) is None
    assert memory_reason(2 * gib, "8G") is None  # not a number of bytes: ignored
    assert memory_reason(gib // 2, gib) is None
    assert memory_reason(3 * gib // 2, gib) == (
        "frames peaked at 1.5 GiB, over its --max-memory 1.0 GiB"
    )


def member(node: str, **meta: Any) -> Member:
    base: dict[str, Any] = {"name": f"peer-{node[0]}", "slots": 1, "renderers": {"command": "1"}}
    base["cmd"] = True
    return Member(node, ("127.0.0.1", 1), 1, MemberState.ALIVE, {**base, **meta}, 0.0, 1)


def test_held_away_and_memory_peers_leave_home_sets_and_say_why() -> None:
    spec = make_job(Ledger(A))
    members = [member(A, away="outside its schedule (Sat-Sun)"), member(B, maxmem=1000)]
    holds = {B: {"mode": "drain", "by": "ana"}}
    common: dict[str, Any] = {"banned": {}, "now": 0.0, "home_grace": 10.0}
    assert el.capable_peers(spec, members, **common) == [B]
    assert el.capable_peers(spec, members, **common, holds=holds) == []
    assert el.capable_peers(spec, members, **common, troubled=True, holds=holds) == [A, B]
    assert el.capable_peers(spec, members, **common, troubled=True, peak_memory=2000) == [A]
    reasons = el.waiting_reasons(spec, members, banned={}, holds=holds)
    assert reasons == {A: "outside its schedule (Sat-Sun)", B: "drained by ana"}
    reasons = el.waiting_reasons(spec, members, banned={}, peak_memory=2000)
    assert reasons[B] == "frames peaked at 2.0 KiB, over its --max-memory 1000 B"
    summary = el.no_peer_summary(spec, [members[1]], banned={}, names={B: "b"}, peak_memory=2000)
    assert summary is not None and "over its --max-memory" in summary


def test_host_hold_register_round_trips_and_merges() -> None:
    a, b = Ledger(A), Ledger(B)
    deltas = a.hold_host(B, "hold", "ana", 1_000)
    assert a.hold_host(B, "hold", "ana", 1_001) == []  # already so
    wire = codec.decode_deltas(codec.unpackb(codec.packb(codec.encode_deltas(deltas))))
    b.merge(wire, 2_000)
    assert b.host_hold(B) == {"mode": "hold", "by": "ana"}
    assert b.host_holds() == {B: {"mode": "hold", "by": "ana"}}
    b.merge(a.release_host(B, 3_000), 3_000)
    assert b.host_hold(B) is None and b.host_holds() == {}
    assert a.state_digest() == b.state_digest()
    with pytest.raises(codec.DecodeError):
        codec.decode_register(codec.Kind.HOST, [{"mode": "nap", "by": "x"}, 1, A, 0])


def test_peak_memory_rides_the_done_record_and_old_records_still_decode() -> None:
    a = Ledger(A)
    spec = make_job(a, frames=3)
    a.submit(spec)
    claim = a.claim(spec.id, [1], 2_000)[0][1]
    done = a.complete(spec.id, 1, claim, [output(1)], 0.5, memory=123_456)  # type: ignore[arg-type]
    claim2 = a.claim(spec.id, [2], 2_001)[0][1]
    a.complete(spec.id, 2, claim2, [output(2)], 0.5)  # type: ignore[arg-type]
    encoded = codec.encode_delta(done[0])
    assert len(encoded[5]) == 10 and encoded[5][9] == 123_456
    assert len(codec.encode_delta(a.all_deltas()[-1])[5]) in (9, 10)
    b = Ledger(B)
    b.merge(codec.decode_deltas(codec.encode_deltas(a.all_deltas())), 3_000)
    assert b.frame(spec.id, 1).memory == 123_456 and b.frame(spec.id, 2).memory == 0
    assert b.peak_memory(spec.id) == 123_456
    assert b.state_digest() == a.state_digest()


def test_idle_sources_parse_what_the_platform_prints(monkeypatch: pytest.MonkeyPatch) -> None:
    from peerfarm.peer import idle

    answers = {
        "xprintidle": "61500\n",
        "ioreg": '  | |   "HIDIdleTime" = 2500000000\n',
        "loginctl": "IdleHint=no\nIdleSinceHintMonotonic=0\n",
    }
    monkeypatch.setattr(idle, "_run", lambda argv: answers.get(argv[0]))
    assert idle.XPrintIdle().idle_seconds() == 61.5
    assert idle.MacIdle().idle_seconds() == 2.5
    assert idle.LogindIdle("3").idle_seconds() == 0.0
    monkeypatch.setattr(idle, "_run", lambda argv: None)
    assert idle.XPrintIdle().idle_seconds() is None
    assert idle.MacIdle().idle_seconds() is None
    assert idle.LogindIdle("3").idle_seconds() is None
    monkeypatch.setattr(idle.platform, "system", lambda: "Linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("XDG_SESSION_ID", raising=False)
    assert isinstance(idle.detect_idle_source(), idle.UnknownIdle)  # nothing answers: idle
    assert idle.UnknownIdle().idle_seconds() is None
