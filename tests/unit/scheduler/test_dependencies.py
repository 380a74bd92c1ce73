"""The dependency rule (``submit --after JOB [--per-frame]``), on real ledgers."""

from __future__ import annotations

from peerfarm.ledger import Ledger
from peerfarm.scheduler import dependencies
from peerfarm.scheduler.dependencies import Dependency, dependency_options, readiness
from peerfarm.scheduler.planner import Planner
from tests.support.ledger import NODES, make_job, output

A = NODES[0]


def finish(ledger: Ledger, job: str, frames: list[int], wall: int = 2_000) -> None:
    for frame in frames:
        (claim,) = ledger.claim(job, [frame], wall)
        record = claim[1]
        ledger.complete(job, frame, record, [output(frame)], 1.0)  # type: ignore[arg-type]


def fail(ledger: Ledger, job: str, frame: int, wall: int = 2_000) -> None:
    (claim,) = ledger.claim(job, [frame], wall)
    ledger.fail(job, frame, claim[1], "boom", "", 1.0, wall)  # type: ignore[arg-type]


def setup(per_frame: bool = False) -> tuple[Ledger, str, str]:
    ledger = Ledger(A)
    parent = make_job(ledger, frames=4, name="bake", retries=1)
    ledger.submit(parent)
    child = make_job(
        ledger,
        frames=4,
        name="render",
        options=dependency_options(parent.id, per_frame),
    )
    ledger.submit(child)
    return ledger, parent.id, child.id


def test_whole_job_waits_until_the_parent_is_done() -> None:
    ledger, parent, child = setup()
    spec = ledger.job(child)
    assert spec is not None and dependencies.dependency_of(spec) == Dependency(parent, False)
    ready = readiness(ledger, spec)
    assert ready.blocked and ready.reason == f"after bake ({parent[:8]}): 0 of 4 frames done"
    finish(ledger, parent, [1, 2, 3])
    assert readiness(ledger, spec).blocked
    finish(ledger, parent, [4])
    assert readiness(ledger, spec) == dependencies.READY


def test_a_failed_or_cancelled_parent_holds_the_child_with_the_reason() -> None:
    ledger, parent, child = setup()
    spec = ledger.job(child)
    assert spec is not None
    finish(ledger, parent, [1, 2, 3])
    fail(ledger, parent, 4)
    ready = readiness(ledger, spec)
    assert ready.blocked and ready.reason is not None and "it failed" in ready.reason
    other, parent2, child2 = setup()
    other.cancel(parent2, 3_000)
    spec2 = other.job(child2)
    assert spec2 is not None
    assert "it was cancelled" in (readiness(other, spec2).reason or "")


def test_per_frame_holds_only_frames_whose_parent_frame_is_not_done() -> None:
    ledger, parent, child = setup(per_frame=True)
    spec = ledger.job(child)
    assert spec is not None
    assert readiness(ledger, spec).held == frozenset({1, 2, 3, 4})
    finish(ledger, parent, [2])
    ready = readiness(ledger, spec)
    assert not ready.blocked and ready.held == frozenset({1, 3, 4})
    assert "frame by frame" in (ready.reason or "")
    finish(ledger, parent, [1, 3, 4])
    assert readiness(ledger, spec) == dependencies.READY


def test_an_unknown_parent_holds_the_job() -> None:
    ledger = Ledger(A)
    child = make_job(ledger, name="render", options=dependency_options("f" * 64, False))
    ledger.submit(child)
    ready = readiness(ledger, child)
    assert ready.blocked and "not known" in (ready.reason or "")


def test_the_planner_never_plans_held_frames() -> None:
    ledger, parent, child = setup(per_frame=True)
    finish(ledger, parent, [3])
    planner = Planner(A)
    held = {child: readiness(ledger, ledger.job(child)).held}  # type: ignore[arg-type]
    claims = planner.plan(ledger, free_slots=8, capable={child: [A]}, held=held, alive=[A])
    assert [c.frames for c in claims] == [(3,)]
