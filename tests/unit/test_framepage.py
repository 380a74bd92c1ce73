"""Pages of a job's frames (``status JOB --frames/--state/--limit``) and the frame-state map.

The page must hold exactly the frames a plain filter over every frame would pick, in rendering
order, with the whole job's match count and the first frame left out, whatever the query; the
map must say each frame's state at its position.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peerfarm.control import SUMMARY_ONLY, FrameQuery, frame_query
from peerfarm.errors import UsageError
from peerfarm.framepage import (
    STATE_CODES,
    FrameJournal,
    changed_states,
    page_view,
    select_frames,
    state_map,
)
from peerfarm.frames import format_frames, frame_position
from peerfarm.ledger import Ledger
from peerfarm.ledger.model import JobSpec
from peerfarm.status import frames_view
from tests.support.ledger import NODES, make_job, output, scene

A = NODES[0]
STATES = ("pending", "rendering", "done", "failed")


def job_of(ledger: Ledger, frames: Sequence[int], retries: int = 1) -> JobSpec:
    spec = ledger.new_job(
        name="shot",
        submitter_name="artist",
        renderer="command",
        options={},
        scene=scene(),
        frames=frames,
        wall_ms=1_000,
        retries=retries,
    )
    ledger.submit(spec)
    return spec


def set_states(ledger: Ledger, spec: JobSpec, states: dict[int, str]) -> None:
    """Drive frames through the ledger's real operations into the given states."""
    for frame, state in states.items():
        if state == "pending":
            continue
        claim = ledger.claim(spec.id, [frame], 2_000)[0][1]
        if state == "done":
            ledger.complete(spec.id, frame, claim, [output(frame)], 1.0)  # type: ignore[arg-type]
        elif state == "failed":
            ledger.fail(spec.id, frame, claim, "boom", "", 1.0, 3_000)  # type: ignore[arg-type]


def expected(spec: JobSpec, states: dict[int, str], query: FrameQuery) -> tuple[list[int], int]:
    """Every matching frame in rendering order, by brute force (and how many there are)."""
    asked = None
    if query.frames is not None:
        from peerfarm.frames import parse_frames

        asked = set(parse_frames(query.frames))
    matching = [
        f
        for f in spec.frames
        if (asked is None or f in asked)
        and (not query.states or states.get(f, "pending") in query.states)
    ]
    return matching, len(matching)


def test_the_default_page_is_the_first_frames_and_says_what_is_left_out() -> None:
    ledger = Ledger(A)
    spec = make_job(ledger, frames=2500)
    ledger.submit(spec)
    page = select_frames(ledger, spec, FrameQuery(limit=1000))
    assert page.frames == list(range(1, 1001))
    assert (page.matched, page.next) == (2500, 1001)
    whole = select_frames(ledger, spec, FrameQuery())
    assert whole.frames == list(spec.frames) and whole.next is None
    summary = select_frames(ledger, spec, SUMMARY_ONLY)
    assert (summary.frames, summary.matched, summary.next) == ([], 2500, 1)


def test_a_state_page_finds_failed_frames_anywhere_and_counts_the_whole_job() -> None:
    ledger = Ledger(A)
    spec = make_job(ledger, frames=5000, retries=1)
    ledger.submit(spec)
    failed = [7, 1234, 4999]
    set_states(ledger, spec, {f: "failed" for f in failed} | {1: "done", 2: "rendering"})
    page = select_frames(ledger, spec, frame_query(state="failed"))
    assert (page.frames, page.matched, page.next) == (failed, 3, None)
    first = select_frames(ledger, spec, frame_query(state="failed", limit=2))
    assert (first.frames, first.matched, first.next) == ([7, 1234], 3, 4999)
    rendering = select_frames(ledger, spec, frame_query(state="rendering"))
    assert (rendering.frames, rendering.matched) == ([2], 1)
    not_done = select_frames(ledger, spec, frame_query(state="pending,rendering,failed", limit=3))
    assert (not_done.frames, not_done.matched, not_done.next) == ([2, 3, 4], 4999, 5)
    # The frames themselves as status shows them: the page's states are what was asked.
    views = frames_view(ledger, spec, {}, page.frames)
    assert [(v["frame"], v["state"], v["failures"]) for v in views] == [
        (7, "failed", 1),
        (1234, "failed", 1),
        (4999, "failed", 1),
    ]


def test_a_range_page_keeps_only_the_jobs_frames_in_rendering_order() -> None:
    ledger = Ledger(A)
    spec = job_of(ledger, [10, 20, 30, 1, 2, 3])  # rendering order is not frame order
    set_states(ledger, spec, {20: "done", 2: "done"})
    page = select_frames(ledger, spec, frame_query(frames="1-25"))
    assert (page.frames, page.matched, page.next) == ([10, 20, 1, 2, 3], 5, None)
    done = select_frames(ledger, spec, frame_query(frames="1-25", state="done"))
    assert (done.frames, done.matched) == ([20, 2], 2)
    outside = select_frames(ledger, spec, frame_query(frames="100-200"))
    assert (outside.frames, outside.matched, outside.next) == ([], 0, None)
    two = frame_query(frames="1-25", limit=2)
    assert page_view(two, select_frames(ledger, spec, two)) == {
        "frames": "1-25",
        "states": [],
        "limit": 2,
        "matched": 5,
        "returned": 2,
        "next": 1,
    }


@settings(max_examples=60, deadline=None)
@given(
    frames=st.lists(st.integers(0, 60), min_size=1, max_size=40, unique=True),
    states=st.lists(st.sampled_from(STATES), min_size=40, max_size=40),
    wanted=st.none() | st.lists(st.integers(0, 70), min_size=1, max_size=10),
    asked=st.lists(st.sampled_from(STATES), max_size=3),
    limit=st.none() | st.integers(0, 12),
)
def test_any_page_is_the_plain_filter_over_every_frame(
    frames: list[int],
    states: list[str],
    wanted: list[int] | None,
    asked: list[str],
    limit: int | None,
) -> None:
    ledger = Ledger(A)
    spec = job_of(ledger, frames)
    truth = dict(zip(frames, states, strict=False))
    set_states(ledger, spec, truth)
    query = FrameQuery(
        frames=None if wanted is None else format_frames(sorted(set(wanted))),
        states=tuple(s for s in STATES if s in asked),
        limit=limit,
    )
    matching, matched = expected(spec, truth, query)
    page = select_frames(ledger, spec, query)
    cut = matching if limit is None else matching[:limit]
    assert page.frames == cut
    assert page.matched == matched
    assert page.next == (matching[len(cut)] if len(cut) < len(matching) else None)
    shown = {v["frame"]: v["state"] for v in frames_view(ledger, spec, {}, page.frames)}
    assert all(shown[f] == truth.get(f, "pending") for f in page.frames)
    # The map: one character per frame at its position in rendering order.
    states_text = state_map(ledger, spec)
    assert len(states_text) == spec.frame_count
    for frame in spec.frames:
        at = frame_position(spec.runs, frame)
        assert at is not None
        assert states_text[at] == STATE_CODES[truth.get(frame, "pending")]


def test_the_map_of_a_big_job_is_one_character_per_frame() -> None:
    ledger = Ledger(A)
    spec = make_job(ledger, frames=100_000, retries=1)
    ledger.submit(spec)
    set_states(ledger, spec, {1: "done", 50_000: "rendering", 100_000: "failed"})
    text = state_map(ledger, spec)
    assert len(text) == 100_000
    assert (text[0], text[49_999], text[99_999]) == ("d", "r", "f")
    assert text.count("p") == 99_997


def test_queries_are_checked_with_one_clear_line() -> None:
    assert frame_query(state="Failed, pending") == FrameQuery(states=("pending", "failed"))
    assert frame_query(state="pending,rendering,done,failed") == FrameQuery()  # every state
    with pytest.raises(UsageError, match="bad frame state 'broken'"):
        frame_query(state="broken")
    with pytest.raises(UsageError, match="bad frame state"):
        frame_query(state=",")
    with pytest.raises(UsageError, match="bad frame range"):
        frame_query(frames="1-x")
    with pytest.raises(UsageError, match="bad frame limit"):
        frame_query(limit=-1)


def test_the_journal_gives_the_frames_changed_since_a_seq_or_says_it_cannot() -> None:
    journal = FrameJournal(keep=4)
    assert journal.since(0, "j") == set()
    journal.note("j", 1)
    journal.note("k", 9)
    journal.note("j", 2)
    assert journal.seq == 3
    assert journal.since(0, "j") == {1, 2} and journal.since(1, "j") == {2}
    assert journal.since(3, "j") == set() and journal.since(4, "j") is None  # not a seq it gave
    journal.note("j", 3)
    journal.note("j", 4)  # the first change is forgotten now
    assert journal.since(0, "j") is None and journal.since(1, "j") == {2, 3, 4}


def test_changed_states_are_positions_in_rendering_order_with_their_state() -> None:
    ledger = Ledger(A)
    spec = job_of(ledger, [10, 20, 30, 1, 2, 3])
    set_states(ledger, spec, {2: "done", 20: "failed"})
    assert changed_states(ledger, spec, {2, 20, 30, 999}) == ([1, 2, 4], "fpd")
