"""Ledger keys and the typed changes a write or a merge makes. Pure.

This module owns the one list of key kinds (a wire enum: append-only, never reuse or change a
letter) and :func:`classify`, which turns a changed entry into a :class:`Change` that callers
match on, so no caller re-decodes keys by hand.

====  ======================================  ===========================================
kind  key                                     value
====  ======================================  ===========================================
J     (J, job)                                JobSpec (immutable, id = content hash)
P     (P, job)                                Register priority (last writer wins)
Z     (Z, job)                                Register paused (last writer wins)
C     (C, job)                                Register cancelled (True is final)
F     (F, job, frame)                         FrameRecord
A     (A, job, frame, epoch, attempt, node)   Attempt (a failed attempt; grow-only)
B     (B, job, node)                          Register why ``node`` stopped taking job
D     (D, job, frame)                         Register what was delivered to the submitter
X     (X, job)                                Register archived job summary (tombstone)
H     (H, job)                                Register why the job was halted (failed) farm-wide
N     (N, job, event)                         Register [state, phase] of a job-end notification
W     (W, node)                               Register a host hold / drain of ``node`` (or None)
====  ======================================  ===========================================
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from .model import Attempt, FrameRecord, JobSpec, Register


class Kind(enum.StrEnum):
    """What a ledger key holds. Wire values: append-only, never renumber or reuse."""

    JOB = "J"
    PRIORITY = "P"
    PAUSED = "Z"
    CANCELLED = "C"
    FRAME = "F"
    ATTEMPT = "A"
    BAN = "B"
    DELIVERED = "D"
    ARCHIVED = "X"
    HALTED = "H"
    NOTICE = "N"
    HOST = "W"  # keyed by a node id, not a job: ``hold`` / ``drain`` of a host


#: Kinds whose value is a :class:`Register`.
REGISTER_KINDS = frozenset(
    {
        Kind.PRIORITY,
        Kind.PAUSED,
        Kind.CANCELLED,
        Kind.BAN,
        Kind.DELIVERED,
        Kind.ARCHIVED,
        Kind.HALTED,
        Kind.NOTICE,
        Kind.HOST,
    }
)
#: The order in which a job's non-frame entries are sent: the spec and tombstone first, so a
#: receiver validates everything else against its job.
SEND_ORDER = {kind: index for index, kind in enumerate("JXHPZCBDNAW")}

Key = tuple[Any, ...]
Value = JobSpec | FrameRecord | Register | Attempt
Delta = tuple[Key, Value, str, int]
"""One entry: ``(key, value, origin node id, origin's version)``."""


def frame_key(job: str, frame: int) -> Key:
    return (Kind.FRAME, job, frame)


def job_key(kind: Kind, job: str) -> Key:
    return (kind, job)


# --- typed changes ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobAdded:
    job: str
    spec: JobSpec
    delta: Delta


@dataclass(frozen=True, slots=True)
class FrameChanged:
    job: str
    frame: int
    record: FrameRecord
    delta: Delta


@dataclass(frozen=True, slots=True)
class JobControlChanged:
    """Priority, paused or cancelled changed: the job may have stopped or resumed."""

    job: str
    kind: Kind
    delta: Delta


@dataclass(frozen=True, slots=True)
class JobHalted:
    """The job was ended farm-wide (no peer can render it) or that verdict was lifted."""

    job: str
    reason: str | None
    delta: Delta


@dataclass(frozen=True, slots=True)
class JobArchived:
    job: str
    delta: Delta


@dataclass(frozen=True, slots=True)
class AttemptFailed:
    job: str
    frame: int
    node: str
    delta: Delta


@dataclass(frozen=True, slots=True)
class BanChanged:
    job: str
    node: str
    reason: str | None  # None: the ban was lifted
    delta: Delta


@dataclass(frozen=True, slots=True)
class DeliveryMarked:
    job: str
    frame: int
    delta: Delta


@dataclass(frozen=True, slots=True)
class NoticeMarked:
    """A job-end notification was claimed or sent (``peerfarm.scheduler.notices``)."""

    job: str
    event: int
    delta: Delta


@dataclass(frozen=True, slots=True)
class HostChanged:
    """A host was held or drained (``hold`` is the register's value) or released (None)."""

    node: str
    hold: dict[str, Any] | None
    delta: Delta


Change = (
    HostChanged
    | JobAdded
    | FrameChanged
    | JobControlChanged
    | JobHalted
    | JobArchived
    | AttemptFailed
    | BanChanged
    | DeliveryMarked
    | NoticeMarked
)


def classify(delta: Delta) -> Change:
    """The typed change for one entry that changed a replica."""
    key, value = delta[0], delta[1]
    kind, job = key[0], key[1]
    if kind == Kind.FRAME:
        assert isinstance(value, FrameRecord)
        return FrameChanged(job, key[2], value, delta)
    if kind == Kind.JOB:
        assert isinstance(value, JobSpec)
        return JobAdded(job, value, delta)
    if kind == Kind.ATTEMPT:
        return AttemptFailed(job, key[2], key[5], delta)
    assert isinstance(value, Register)
    if kind == Kind.ARCHIVED:
        return JobArchived(job, delta)
    if kind == Kind.BAN:
        return BanChanged(job, key[2], None if value.value is None else str(value.value), delta)
    if kind == Kind.DELIVERED:
        return DeliveryMarked(job, key[2], delta)
    if kind == Kind.NOTICE:
        return NoticeMarked(job, key[2], delta)
    if kind == Kind.HOST:
        return HostChanged(job, value.value if isinstance(value.value, dict) else None, delta)
    if kind == Kind.HALTED:
        return JobHalted(job, None if value.value is None else str(value.value), delta)
    return JobControlChanged(job, Kind(kind), delta)


def broadcast_key(key: Key) -> str:
    """The key under which an entry rides gossip (a newer value of it replaces an older one)."""
    return "/".join(str(part) for part in key)
