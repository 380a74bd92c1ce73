"""Job dependencies: when a job (or one frame of it) may start after another job. Pure.

A dependency is part of the job's replicated spec, in its options (so every peer schedules it,
it survives restarts and splits, and a peer that predates this module still reads the spec):

* ``after`` — the parent job's id. The whole job waits until the parent is done (every frame
  done). If the parent fails or is cancelled the job keeps waiting, and says why: a user can
  retry the parent (the child then starts) or cancel the child.
* ``after_per_frame`` — ``True``: frame N waits only for frame N of the parent. A frame the
  parent does not have waits for the whole parent.

A parent archived after it ended counts by its tombstone's final state. A parent this replica
has not heard of yet (gossip brings the spec soon) holds the job.

:func:`readiness` is the one rule; the worker asks it which frames are held, the status views
ask it why a job waits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..ledger import Ledger
from ..ledger.model import JobSpec, JobState, Status

#: Spec option keys (wire names: never rename).
AFTER = "after"
PER_FRAME = "after_per_frame"
#: The key under which a dependency's reason appears in a job's ``waiting`` map.
WAITING_KEY = "every peer"


@dataclass(frozen=True, slots=True)
class Dependency:
    job: str
    per_frame: bool


@dataclass(frozen=True, slots=True)
class Readiness:
    """What a dependency allows now: ``blocked`` (no frame may start), else the ``held``
    frames that may not start yet; ``reason`` says why something waits (None: nothing does)."""

    blocked: bool
    held: frozenset[int]
    reason: str | None


READY = Readiness(False, frozenset(), None)


def dependency_of(spec: JobSpec) -> Dependency | None:
    return dependency_in(spec.options)


def dependency_in(options: Mapping[str, Any]) -> Dependency | None:
    parent = options.get(AFTER)
    if not isinstance(parent, str) or not parent:
        return None
    return Dependency(parent, bool(options.get(PER_FRAME)))


def dependency_options(parent: str, per_frame: bool) -> dict[str, Any]:
    """The spec options that say "after ``parent``" (``per_frame``: frame by frame)."""
    return {AFTER: parent, PER_FRAME: True} if per_frame else {AFTER: parent}


def _label(ledger: Ledger, job: str) -> str:
    spec = ledger.job(job)
    if spec is not None:
        return f"{spec.name} ({job[:8]})"
    archived = ledger.archived().get(job)
    if archived is not None:
        return f"{archived.get('name', '?')} ({job[:8]})"
    return job[:8]


def parent_state(ledger: Ledger, job: str) -> tuple[str, str | None]:
    """The parent's state ("done", "active", "paused", "failed", "cancelled" or "unknown") and,
    when it did not end well, why, in words."""
    spec = ledger.job(job)
    if spec is None:
        archived = ledger.archived().get(job)
        if archived is None:
            return "unknown", "not known on this peer yet"
        ended = str(archived.get("state", "unknown"))
        return ended, None if ended == "done" else f"it ended {ended}"
    state = ledger.job_state(job)
    if state == JobState.DONE:
        return "done", None
    if state == JobState.CANCELLED:
        return "cancelled", "it was cancelled"
    if state == JobState.FAILED:
        halted = ledger.halted(job)
        counts = ledger.counts(job)
        why = halted or f"{counts.failed} of {counts.total} frames failed"
        return "failed", f"it failed: {why}"
    counts = ledger.counts(job)
    if state == JobState.PAUSED:
        return "paused", f"it is paused ({counts.done} of {counts.total} frames done)"
    return "active", f"{counts.done} of {counts.total} frames done"


def readiness(ledger: Ledger, spec: JobSpec) -> Readiness:
    """Which of ``spec``'s frames its dependency lets start now."""
    dep = dependency_of(spec)
    if dep is None:
        return READY
    state, why = parent_state(ledger, dep.job)
    if state == "done":
        return READY
    label = _label(ledger, dep.job)
    if not dep.per_frame or ledger.job(dep.job) is None:
        return Readiness(True, frozenset(), f"after {label}: {why}")
    parent = ledger.job(dep.job)
    assert parent is not None
    parent_frames = set(parent.frames)
    held = frozenset(
        frame
        for frame in spec.frames
        if frame not in parent_frames or ledger.frame(dep.job, frame).status != Status.DONE
    )
    if not held:
        return READY
    return Readiness(False, held, f"after {label}, frame by frame: {why}")


def held_frames(ledger: Ledger, jobs: Mapping[str, JobSpec]) -> dict[str, frozenset[int] | None]:
    """For each job with a dependency that holds something: the held frames, or None when the
    whole job is held. Jobs free to run are left out."""
    out: dict[str, frozenset[int] | None] = {}
    for job, spec in jobs.items():
        ready = readiness(ledger, spec)
        if ready.blocked:
            out[job] = None
        elif ready.held:
            out[job] = ready.held
    return out


def chain(ledger: Ledger, spec: JobSpec, limit: int = 16) -> list[str]:
    """The job ids ``spec`` depends on, nearest first (stops at a cycle or ``limit``)."""
    out: list[str] = []
    current: JobSpec | None = spec
    while current is not None and len(out) < limit:
        dep = dependency_of(current)
        if dep is None or dep.job in out or dep.job == spec.id:
            break
        out.append(dep.job)
        current = ledger.job(dep.job)
    return out
