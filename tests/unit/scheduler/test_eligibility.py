"""Eligibility, pure: who takes a job, the reasons others give, and the one-line summary."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peerfarm.gossip.membership import Member, MemberState
from peerfarm.ledger import Ledger
from peerfarm.ledger.model import JobSpec
from peerfarm.scheduler import eligibility as el
from tests.support.ledger import NODES, scene

A, B, C, D = NODES[:4]


def job(renderer: str = "blender", **options: Any) -> JobSpec:
    return Ledger(A).new_job(
        name="shot",
        submitter_name="artist",
        renderer=renderer,
        options=options,
        scene=scene(),
        frames=range(1, 5),
        wall_ms=1_000,
    )


def member(
    node: str,
    renderers: dict[str, Any] | None = None,
    state: MemberState = MemberState.ALIVE,
    since: float = 0.0,
    **meta: Any,
) -> Member:
    base: dict[str, Any] = {"name": f"peer-{node[0]}", "slots": 1, "renderers": renderers or {}}
    return Member(node, ("127.0.0.1", 1), 1, state, {**base, **meta}, since, 1)


FIVE = job(blend_version="5.0")


# --- reasons ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("advertised", "reason"),
    [
        ("3.4.1", "blender 3.4.1 is older than the file (5.0)"),
        (["3.4.1"], "blender 3.4.1 is older than the file (5.0)"),
        (["3.4.1", "4.2.3"], "blender 3.4.1, 4.2.3 are older than the file (5.0)"),
        (["3.4.1", "5.0.1"], None),  # any installation that can open it is enough
        ("5.0.1", None),
        ("5.3.0", None),
        ("unknown", None),  # never refused for a version string the rule cannot read
        ([], None),
    ],
)
def test_blender_version_reasons_take_a_string_or_a_list(
    advertised: object, reason: str | None
) -> None:
    assert el.version_reason(FIVE, advertised) == reason


def test_a_job_without_a_file_version_or_of_another_renderer_has_no_version_rule() -> None:
    assert el.version_reason(job(), "3.4.1") is None
    assert el.version_reason(job("povray", blend_version="5.0"), "3.7") is None


def test_each_rule_gives_its_own_reason() -> None:
    def reason(spec: JobSpec, **meta: Any) -> str | None:
        return el.renderer_reason(spec, {"slots": 1, "renderers": {}, **meta})

    assert reason(FIVE, slots=0) == "slots 0 (submit-only peer)"
    assert reason(job(shared_scene="a.blend"), renderers={"blender": "5.0"}) == (
        "scene on shared storage not mounted (no --shared-root)"
    )
    assert reason(job("command"), renderers={"command": "1"}) == "not started with --allow-command"
    assert reason(job("command"), renderers={"command": "1"}, cmd=True) is None
    assert reason(job("povray"), renderers={"blender": "5.0"}) == "no povray"
    assert reason(FIVE, renderers="garbage") == "no blender"
    assert reason(FIVE, renderers={"blender": "3.4.1"}) == (
        "blender 3.4.1 is older than the file (5.0)"
    )


def test_passing_reasons_come_after_lasting_ones() -> None:
    meta = {"slots": 1, "renderers": {"blender": "5.0.1"}}
    assert el.peer_reason(FIVE, meta, paused=True) == "paused"
    assert el.peer_reason(FIVE, meta, busy_with=["other"]) == "its slot is busy"
    assert el.peer_reason(FIVE, meta, busy_with=[FIVE.id]) is None  # busy with this very job
    assert el.peer_reason(FIVE, {**meta, "slots": 2}, busy_with=["x"]) is None
    assert el.peer_reason(FIVE, {**meta, "slots": 2}, busy_with=["x", "y"]) == "all 2 slots busy"
    old = {"slots": 1, "renderers": {"blender": "3.4.1"}}
    assert el.peer_reason(FIVE, old, paused=True, busy_with=["x"]).startswith("blender 3.4.1")


def test_a_peer_that_cannot_get_the_scene_says_so_for_that_job_only() -> None:
    meta = {"slots": 1, "renderers": {"blender": "5.0.1"}, el.NO_SCENE: [FIVE.id[: el.JOB_PREFIX]]}
    assert el.peer_reason(FIVE, meta) == el.NO_SCENE_REASON
    assert el.peer_reason(FIVE, meta, busy_with=["other"]) == el.NO_SCENE_REASON
    assert el.peer_reason(FIVE, meta, paused=True) == "paused"
    assert el.peer_reason(FIVE, {**meta, el.NO_SCENE: ["0" * el.JOB_PREFIX]}) is None
    # What another peer sent may be anything: only a list of prefixes counts.
    for junk in (FIVE.id, {FIVE.id[: el.JOB_PREFIX]: 1}, 7, None, [None, 3]):
        assert el.peer_reason(FIVE, {**meta, el.NO_SCENE: junk}) is None


def test_a_ban_reads_as_the_failures_and_the_last_error() -> None:
    text = "failed 3 times on birch: blender exited with status 1"
    assert el.ban_reason(text) == "banned after 3 failures: blender exited with status 1"
    assert el.ban_reason("odd\nreason") == "banned: odd reason"
    assert len(el.ban_reason("failed 3 times on b: " + "x" * 500)) == el.MAX_ERROR_CHARS
    meta = {"slots": 1, "renderers": {"blender": "5.0.1"}}
    assert el.lasting_reason(FIVE, meta, text) == el.ban_reason(text)


# --- the home set (what Node.capable_peers returns) --------------------------------------------


def test_capable_peers_keeps_the_rules_of_the_home_set() -> None:
    members = [
        member(A, {"blender": ["3.4.1", "5.0.1"]}),
        member(B, {"blender": "3.4.1"}),
        member(C, {"blender": "5.0.1"}, state=MemberState.DEAD, since=0.0),
        member(D, {"blender": "5.0.1"}, state=MemberState.SUSPECT),
    ]
    common = {"banned": set(), "home_grace": 60.0}
    assert el.capable_peers(FIVE, members, now=10.0, **common) == [A, C, D]  # type: ignore[arg-type]
    # A peer dead for longer than the grace leaves the homes; LEFT leaves at once.
    assert el.capable_peers(FIVE, members, now=100.0, **common) == [A, D]  # type: ignore[arg-type]
    members[3] = member(D, {"blender": "5.0.1"}, state=MemberState.LEFT)
    assert el.capable_peers(FIVE, members, now=10.0, **common) == [A, C]  # type: ignore[arg-type]
    assert el.capable_peers(FIVE, members, banned={A}, now=10.0, home_grace=60.0) == [C]
    assert el.capable_peers(
        FIVE, members, banned=set(), now=10.0, home_grace=60.0, self_id=A, stopping=True
    ) == [C]


# --- waiting and the summary ----------------------------------------------------------------


def test_waiting_names_every_alive_peer_that_does_not_take_the_job() -> None:
    members = [
        member(A, {"blender": ["3.4.1", "5.0.1"]}),
        member(B, {"blender": "3.4.1"}),
        member(C, {"povray": "3.7"}, state=MemberState.SUSPECT),  # not alive: not listed
        member(D, {"blender": "5.0.1"}),
    ]
    reasons = el.waiting_reasons(
        FIVE, members, banned={D: "failed 3 times on d: boom"}, busy={A: ["other-job"]}
    )
    assert reasons == {
        A: "its slot is busy",
        B: "blender 3.4.1 is older than the file (5.0)",
        D: "banned after 3 failures: boom",
    }
    names = {A: "a", B: "b", C: "c", D: "d"}
    assert el.no_peer_summary(FIVE, members, banned={}, names=names) is None  # A can, later


def test_the_summary_groups_peers_by_reason() -> None:
    members = [
        member(A, {"blender": "3.4.1"}),
        member(B, {"blender": "3.4.1"}),
        member(C, {"povray": "3.7"}),
        member(D, {"blender": "5.0.1"}, state=MemberState.DEAD),
    ]
    names = {A: "a", B: "b", C: "c", D: "d"}
    assert el.no_peer_summary(FIVE, members, banned={}, names=names) == (
        "no peer can render it: a, b: blender 3.4.1 is older than the file (5.0); c: no blender"
    )
    assert el.no_peer_summary(FIVE, [], banned={}, names={}) == (
        "no peer can render it: no peer is alive"
    )


# --- properties -----------------------------------------------------------------------------

version_texts = st.builds(
    lambda a, b, c: f"{a}.{b}.{c}", st.integers(2, 6), st.integers(0, 9), st.integers(0, 3)
)
versions = st.lists(version_texts, max_size=4)
metas = st.fixed_dictionaries(
    {
        "slots": st.integers(0, 3),
        "renderers": st.dictionaries(
            st.sampled_from(["blender", "povray", "command"]),
            st.one_of(versions, versions.map(lambda v: v[0] if v else "")),
            max_size=3,
        ),
        "cmd": st.booleans(),
        "shared": st.booleans(),
    }
)
specs = st.builds(
    job,
    st.sampled_from(["blender", "povray", "command"]),
    blend_version=st.sampled_from(["3.4", "4.2", "5.0", "5.3"]),
)
states = st.sampled_from(list(MemberState))


@given(specs, st.lists(st.tuples(metas, states, st.booleans()), max_size=4), st.floats(0, 200))
def test_home_set_and_reasons_agree(
    spec: JobSpec, peers: list[tuple[dict[str, Any], MemberState, bool]], now: float
) -> None:
    members = [member(NODES[i], None, state, 0.0) for i, (_m, state, _b) in enumerate(peers)]
    for m, (meta, _state, _ban) in zip(members, peers, strict=True):
        m.meta = {"name": m.node_id[:4], **meta}
    banned = {
        m.node_id: "failed 3 times on x: e" for m, p in zip(members, peers, strict=True) if p[2]
    }
    homes = el.capable_peers(spec, members, banned=set(banned), now=now, home_grace=60.0)
    reasons = el.waiting_reasons(spec, members, banned=banned)
    for m in members:
        if m.state == MemberState.ALIVE:
            # An alive peer is a home exactly when it gives no reason (nothing is busy here).
            assert (m.node_id in homes) == (m.node_id not in reasons)
        if m.node_id in reasons:
            assert reasons[m.node_id] and "\n" not in reasons[m.node_id]
    summary = el.no_peer_summary(spec, members, banned=banned, names={})
    alive = [m.node_id for m in members if m.state == MemberState.ALIVE]
    assert (summary is not None) == all(a in reasons for a in alive)


@given(st.lists(versions.filter(bool), min_size=1, max_size=3), st.sampled_from(["4.2", "5.0"]))
def test_a_list_is_able_when_any_of_its_versions_is(lists: list[list[str]], need: str) -> None:
    spec = job(blend_version=need)
    merged = sorted({v for versions in lists for v in versions})
    able_any = any(el.version_reason(spec, [v]) is None for v in merged)
    assert (el.version_reason(spec, merged) is None) == able_any
    for v in merged:
        assert el.version_reason(spec, v) == el.version_reason(spec, [v])
