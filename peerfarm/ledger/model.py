"""The ledger's values and their merge rules. Every frame transition lives here.

A replica is a map ``key -> value``. Every value type here has a merge that is commutative,
associative and idempotent: the merge of two values is the greater of them under a total order,
so delivery order, duplicates and replays never matter.

Keys (the first element says what the key holds; wire values, append-only):

====  ======================================  ===========================================
kind  key                                     value
====  ======================================  ===========================================
J     (J, job)                                :class:`JobSpec` (immutable, id = content hash)
P     (P, job)                                :class:`Register` priority (last writer wins)
Z     (Z, job)                                :class:`Register` paused (last writer wins)
C     (C, job)                                :class:`Register` cancelled (True is final)
F     (F, job, frame)                         :class:`FrameRecord`
A     (A, job, frame, epoch, attempt, node)   :class:`Attempt` (a failed attempt; grow-only)
B     (B, job, node)                          :class:`Register` why ``node`` stopped taking job
D     (D, job, frame)                         :class:`Register` epoch delivered to the submitter
X     (X, job)                                :class:`Register` archived job summary (tombstone)
H     (H, job)                                :class:`Register` why the job was halted farm-wide
N     (N, job, event)                         :class:`Register` [state, phase] of a job-end notice
====  ======================================  ===========================================

Frame order (the greatest wins): ``(epoch, terminal rank, attempt, phase, earliest claim,
lowest node id, highest renewal seq)``. ``epoch`` opens when a user retries a frame; DONE beats
FAILED beats anything live within an epoch; within the live states a later attempt beats an older
one (a fencing token), and within one attempt the earliest claim wins, ties by node id.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from typing import Any


class Status(enum.IntEnum):
    """A frame's state. Wire values: append-only, never renumber."""

    PENDING = 0
    CLAIMED = 1
    RELEASED = 2  # handed back by a stopping peer; does not count as a failure
    RETRYING = 3  # an attempt failed and the retry limit is not reached
    FAILED = 4  # terminal for this epoch: the retry limit was reached
    DONE = 5  # terminal for this epoch: outputs recorded by content hash


TERMINAL_RANK = {Status.DONE: 2, Status.FAILED: 1}
PHASE_RANK = {
    Status.PENDING: 0,
    Status.CLAIMED: 1,
    Status.RELEASED: 2,
    Status.RETRYING: 3,
    Status.FAILED: 0,
    Status.DONE: 0,
}
#: States from which a frame may be claimed.
OPEN = frozenset({Status.PENDING, Status.RELEASED, Status.RETRYING})


class Event(enum.Enum):
    """What can happen to a frame."""

    CLAIM = "claim"  # a free frame is taken: attempt + 1
    TAKEOVER = "takeover"  # an expired or dead owner's claim is taken: attempt + 1
    RENEW = "renew"  # the owner extends its lease
    RELEASE = "release"  # the owner hands the frame back (graceful stop, lost job)
    FAIL = "fail"  # the owner's render failed
    COMPLETE = "complete"  # the owner's render succeeded
    RETRY = "retry"  # a user asks to render the frame again: epoch + 1


#: The legal moves, as a table (h11 style): (state, event) -> possible next states.
TRANSITIONS: dict[tuple[Status, Event], frozenset[Status]] = {
    (Status.PENDING, Event.CLAIM): frozenset({Status.CLAIMED}),
    (Status.RELEASED, Event.CLAIM): frozenset({Status.CLAIMED}),
    (Status.RETRYING, Event.CLAIM): frozenset({Status.CLAIMED}),
    (Status.CLAIMED, Event.TAKEOVER): frozenset({Status.CLAIMED}),
    (Status.CLAIMED, Event.RENEW): frozenset({Status.CLAIMED}),
    (Status.CLAIMED, Event.RELEASE): frozenset({Status.RELEASED}),
    (Status.CLAIMED, Event.FAIL): frozenset({Status.RETRYING, Status.FAILED}),
    (Status.CLAIMED, Event.COMPLETE): frozenset({Status.DONE}),
    (Status.DONE, Event.RETRY): frozenset({Status.PENDING}),
    (Status.FAILED, Event.RETRY): frozenset({Status.PENDING}),
    (Status.RETRYING, Event.RETRY): frozenset({Status.PENDING}),
    (Status.RELEASED, Event.RETRY): frozenset({Status.PENDING}),
    (Status.PENDING, Event.RETRY): frozenset({Status.PENDING}),
}


@dataclass(frozen=True, slots=True)
class Output:
    """One file a frame produced: its name in the job's output folder and its content hash."""

    name: str
    digest: bytes  # sha256, 32 bytes
    size: int


@dataclass(frozen=True, slots=True)
class FrameRecord:
    """The register of one frame (one per frame, the greatest under :func:`frame_gt`)."""

    epoch: int
    status: Status
    attempt: int
    stamp: int  # HLC: claim time while CLAIMED, event time otherwise
    node: str  # claimant / finisher ("" while PENDING)
    seq: int = 0  # lease renewals by the owner of this claim
    seconds: float = 0.0  # render time, DONE only
    outputs: tuple[Output, ...] = ()  # DONE only
    error: str = ""  # RETRYING / FAILED only
    memory: int = 0  # peak bytes of the render's processes, DONE only (0: not measured)
    # Replication metadata (who wrote this value, at which of its versions): not part of the state.
    origin: str = field(default="", compare=False, repr=False)
    version: int = field(default=0, compare=False, repr=False)


PENDING0 = FrameRecord(epoch=0, status=Status.PENDING, attempt=0, stamp=0, node="")


def frame_gt(a: FrameRecord, b: FrameRecord) -> bool:
    """True when ``a`` wins over ``b``: the total order of the frame register."""
    if a.epoch != b.epoch:
        return a.epoch > b.epoch
    ta, tb = TERMINAL_RANK.get(a.status, 0), TERMINAL_RANK.get(b.status, 0)
    if ta != tb:
        return ta > tb
    if a.attempt != b.attempt:
        return a.attempt > b.attempt
    pa, pb = PHASE_RANK[a.status], PHASE_RANK[b.status]
    if pa != pb:
        return pa > pb
    if a.stamp != b.stamp:
        return a.stamp < b.stamp  # the earliest claim wins
    if a.node != b.node:
        return a.node < b.node  # ties by node id
    if a.seq != b.seq:
        return a.seq > b.seq  # a renewal supersedes the claim it renews
    # Same claim, same renewal: only a buggy or hostile peer gets here. Stay total anyway.
    return _payload_key(a) > _payload_key(b)


def same_claim(a: FrameRecord, b: FrameRecord) -> bool:
    """Whether two records belong to one claim: one attempt of one epoch by one node, made at
    one time. Renewals (``seq``) and the claim's outcome do not change which claim it is. The
    one rule for "is this still my claim" (the ledger's fencing, the renderer's stop, leases)."""
    return a.node == b.node and a.epoch == b.epoch and a.attempt == b.attempt and a.stamp == b.stamp


def delivery_mark(record: FrameRecord) -> list[Any]:
    """What a delivery mark holds: the epoch and a fingerprint of the delivered outputs, so a
    different done record winning later (a takeover's) is delivered again."""
    digest = hashlib.blake2b(digest_size=8)
    for output in record.outputs:
        digest.update(output.digest)
    return [record.epoch, digest.hexdigest()]


def _payload_key(r: FrameRecord) -> tuple[Any, ...]:
    return (r.seconds, tuple((o.name, o.digest, o.size) for o in r.outputs), r.error, r.memory)


def merge_frames(a: FrameRecord, b: FrameRecord) -> FrameRecord:
    return a if not frame_gt(b, a) else b


def check_transition(current: FrameRecord, event: Event, new: FrameRecord) -> None:
    """Raise :class:`IllegalTransition` unless ``event`` may move ``current`` to ``new``."""
    from ..errors import IllegalTransition

    allowed = TRANSITIONS.get((current.status, event))
    if allowed is None or new.status not in allowed:
        raise IllegalTransition(current.status.name.lower(), event.value)


@dataclass(frozen=True, slots=True)
class Register:
    """A last-writer-wins register: the greatest ``(rank, stamp, node)`` wins.

    ``rank`` lets a value dominate regardless of time (a cancel is final: rank 1).
    """

    value: Any
    stamp: int
    node: str
    rank: int = 0

    def order(self) -> tuple[int, int, str]:
        return (self.rank, self.stamp, self.node)


def merge_registers(a: Register, b: Register) -> Register:
    if a.order() != b.order():
        return a if a.order() > b.order() else b
    # Equal order from one writer means the same write; stay deterministic regardless.
    return a if repr(a.value) >= repr(b.value) else b


@dataclass(frozen=True, slots=True)
class Attempt:
    """A failed attempt of a frame: kept for ``status``/``logs`` and for the retry limit."""

    stamp: int
    error: str
    log_tail: str
    seconds: float


@dataclass(frozen=True, slots=True)
class SceneRef:
    """A file the job needs, named by content hash: the scene or one of its packed assets."""

    digest: bytes  # sha256
    name: str  # file name (or relative path under the scene's folder for assets)
    size: int


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What was submitted. Immutable: its id is a hash of its content."""

    id: str
    name: str
    submitted_by: str  # node id
    submitter_name: str
    stamp: int  # HLC at submit
    renderer: str
    options: dict[str, Any]
    scene: SceneRef
    assets: tuple[SceneRef, ...]
    runs: tuple[tuple[int, int, int], ...]  # the frames, compact (see peerfarm.frames)
    chunk: int
    output: str  # the submitter's output folder (absolute path on the submitter)
    retries: int  # failed attempts allowed per frame before it is FAILED
    priority: int  # initial priority (the P register overrides)
    _frames: tuple[int, ...] | None = field(default=None, compare=False, repr=False)

    @property
    def frames(self) -> tuple[int, ...]:
        cached = self._frames
        if cached is None:
            from ..frames import from_runs

            cached = from_runs(self.runs)
            object.__setattr__(self, "_frames", cached)
        return cached

    @property
    def frame_count(self) -> int:
        return sum((last - first) // step + 1 for first, last, step in self.runs)


class JobState(enum.Enum):
    ACTIVE = "active"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    DONE = "done"
    FAILED = "failed"
