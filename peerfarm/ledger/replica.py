"""One replica of the ledger: its entries, the merge, and anti-entropy bookkeeping. Pure.

Owns the storage of every entry, applying an entry (local or remote) under the merge rules of
``model``, the Scuttlebutt watermarks (``{origin: version}``), which entries another replica lacks
given its watermarks, the state digest that equal replicas share, and what changed since the last
flush to disk. :class:`peerfarm.ledger.ledger.Ledger` adds the local operations on top.

Replication rules:

* Every local write gets the next version of this node (``origin = node id``). A delta is
  ``(key, value, origin, version)``; merging keeps the greatest value per key (see ``model``),
  so merge is commutative, associative and idempotent.
* ``watermarks()[o] = v`` promises that this replica's state dominates every write ``o`` made
  with a version <= v. It advances when ``o``'s writes arrive in order (fresh broadcasts) and,
  after a complete anti-entropy exchange, to the other side's watermarks.
* ``deltas_since(w)`` returns every live entry whose (origin, version) is above ``w``: applying
  them makes the receiver dominate the sender. The work is proportional to the jobs (and
  buckets of frames) that changed since ``w``, not to the size of the ledger. It returns a
  list (a snapshot), so a caller may send it while merges go on.
* An archived job keeps only its tombstone (X); every other entry of it is dropped and refused
  from then on, so a replica that was away converges by receiving the tombstone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from ..errors import LedgerError
from . import codec
from .compact import FrameTable, NodeTable
from .hlc import HybridClock
from .keys import SEND_ORDER, Change, Delta, Key, Kind, Value, classify
from .model import (
    PENDING0,
    Attempt,
    FrameRecord,
    JobSpec,
    Register,
    Status,
    delivery_mark,
    frame_gt,
    merge_registers,
)

BUCKET = 256  # frames per anti-entropy bucket
MAX_AHEAD = 4096  # out-of-order versions remembered per origin (beyond: repaired by push-pull)
MAX_ORPHAN_FRAMES = 100_000  # frame records held for a job whose spec has not arrived yet


@dataclass(frozen=True, slots=True)
class JobCounts:
    total: int
    pending: int
    rendering: int
    done: int
    failed: int


def _fp(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=16).digest(), "big")


def has_frame(spec: JobSpec, frame: int) -> bool:
    return any(
        first <= frame <= last and (frame - first) % step == 0 for first, last, step in spec.runs
    )


class Replica:
    """One peer's copy of the farm's entries, with the merge and anti-entropy rules."""

    def __init__(self, node_id: str, *, version: int = 0, clock_last: int = 0) -> None:
        self.node_id = node_id
        self.clock = HybridClock(clock_last)
        self._version = version
        self._specs: dict[str, JobSpec] = {}
        self._nodes = NodeTable()  # node ids of packed done records
        self._frames: dict[str, FrameTable] = {}  # done records packed (see compact)
        self._regs: dict[Key, Register] = {}
        self._attempts: dict[str, dict[Key, Attempt]] = {}
        self._meta: dict[Key, tuple[str, int]] = {}  # origin/version of every non-frame entry
        self._job_keys: dict[str, set[Key]] = {}  # non-frame keys per job
        self._archived: dict[str, Register] = {}
        self._job_marks: dict[str, dict[str, int]] = {}  # job -> origin -> max version seen
        self._bucket_marks: dict[str, dict[int, dict[str, int]]] = {}
        self._seen: dict[str, int] = {node_id: version} if version else {}
        self._ahead: dict[str, set[int]] = {}
        self._fp = 0
        self._counts: dict[str, list[int]] = {}  # job -> explicit records per Status
        self._claimed: dict[str, dict[int, FrameRecord]] = {}  # job -> frames claimed now
        self._delivered: dict[str, set[int]] = {}  # job -> done frames delivered (as they are)
        self._done_by: dict[str, list[float]] = {}  # node -> [done frames, their render seconds]
        self._done_seconds: dict[str, float] = {}  # job -> render seconds of its done frames
        self._epochs: dict[str, int] = {}  # job -> sum of its frame records' epochs
        self._peak_memory: dict[str, int] = {}  # job -> greatest peak memory of a done frame
        self._hosts: dict[str, Register] = {}  # node -> its hold / drain register (N)
        self._dirty: dict[Key, None] = {}
        self._removed: dict[Key, None] = {}

    @property
    def version(self) -> int:
        return self._version

    def _write(self, key: Key, value: Value) -> Delta:
        self._version += 1
        version = self._version
        if isinstance(value, FrameRecord):
            value = replace(value, origin=self.node_id, version=version)
        self._apply(key, value, self.node_id, version)
        self._advance(self.node_id, version)
        return (key, value, self.node_id, version)

    def merge(self, deltas: Iterable[Delta], wall_ms: int) -> list[Change]:
        """Apply remote deltas; returns what changed in this replica, typed (see ``keys``)."""
        changed: list[Change] = []
        for key, value, origin, version in deltas:
            stamp = getattr(value, "stamp", 0)
            if stamp:
                self.clock.observe(stamp, wall_ms)
            if origin == self.node_id and version > self._version:
                self._version = version  # our own writes from before a lost update: never reuse
            if self._apply(key, value, origin, version):
                changed.append(classify((key, value, origin, version)))
            self._advance(origin, version)
        return changed

    def _advance(self, origin: str, version: int) -> None:
        seen = self._seen.get(origin, 0)
        if version <= seen:
            return
        if version == seen + 1:
            ahead = self._ahead.get(origin)
            seen = version
            while ahead and seen + 1 in ahead:
                seen += 1
                ahead.discard(seen)
            if ahead is not None:
                for v in [v for v in ahead if v <= seen]:
                    ahead.discard(v)
                if not ahead:
                    del self._ahead[origin]
            self._seen[origin] = seen
        else:
            ahead = self._ahead.setdefault(origin, set())
            if len(ahead) < MAX_AHEAD:
                ahead.add(version)

    def _mark(self, key: Key, origin: str, version: int) -> None:
        job = key[1]
        marks = self._job_marks.setdefault(job, {})
        if marks.get(origin, 0) < version:
            marks[origin] = version
        if key[0] == Kind.FRAME:
            buckets = self._bucket_marks.setdefault(job, {})
            bucket = buckets.setdefault(key[2] // BUCKET, {})
            if bucket.get(origin, 0) < version:
                bucket[origin] = version

    def _apply(self, key: Key, value: Value, origin: str, version: int) -> bool:
        kind, job = key[0], key[1]
        if job in self._archived and kind != Kind.ARCHIVED:
            return False
        if kind == Kind.FRAME:
            assert isinstance(value, FrameRecord)
            frame = key[2]
            spec = self._specs.get(job)
            frames = self._frames.get(job)
            if spec is not None and not has_frame(spec, frame):
                return False
            if frames is None:
                frames = self._frames[job] = FrameTable(self._nodes)
                if spec is not None:
                    frames.bind(spec)
            old = frames.get(frame)
            if old is not None and not frame_gt(value, old):
                return False
            if old is None and spec is None and len(frames) >= MAX_ORPHAN_FRAMES:
                return False
            if value.origin != origin or value.version != version:
                value = replace(value, origin=origin, version=version)
            frames.put(frame, value)
            self._index_claim(job, frame, value)
            counts = self._counts.setdefault(job, [0] * len(Status))
            self._epochs[job] = self._epochs.get(job, 0) + value.epoch - (old.epoch if old else 0)
            if old is not None:
                counts[old.status] -= 1
                self._fp ^= _fp(codec.state_bytes(key, old))
                if old.status == Status.DONE:
                    self._done_seconds[job] = self._done_seconds.get(job, 0.0) - old.seconds
                    self._count_done(old, -1)
            counts[value.status] += 1
            if value.status == Status.DONE:
                self._done_seconds[job] = self._done_seconds.get(job, 0.0) + value.seconds
                self._count_done(value, 1)
                if value.memory > self._peak_memory.get(job, 0):
                    self._peak_memory[job] = value.memory
            self._fp ^= _fp(codec.state_bytes(key, value))
            self._refresh_delivered(job, frame, value)
        elif kind == Kind.JOB:
            assert isinstance(value, JobSpec)
            if job in self._specs:
                return False
            self._specs[job] = value
            self._fp ^= _fp(codec.state_bytes(key, value))
            self._meta[key] = (origin, version)
            self._job_keys.setdefault(job, set()).add(key)
            table = self._frames.get(job)
            if table is not None:
                for frame in [f for f in table if not has_frame(value, f)]:
                    self._drop_frame(job, frame)
                table.bind(value)
        elif kind == Kind.ATTEMPT:
            assert isinstance(value, Attempt)
            attempts = self._attempts.setdefault(job, {})
            if key in attempts:
                return False
            attempts[key] = value
            self._fp ^= _fp(codec.state_bytes(key, value))
            self._meta[key] = (origin, version)
            self._job_keys.setdefault(job, set()).add(key)
        else:
            assert isinstance(value, Register)
            old_reg = self._regs.get(key)
            if old_reg is not None:
                merged = merge_registers(old_reg, value)
                if merged is old_reg or merged == old_reg:
                    return False
                self._fp ^= _fp(codec.state_bytes(key, old_reg))
            self._regs[key] = value
            self._fp ^= _fp(codec.state_bytes(key, value))
            self._meta[key] = (origin, version)
            self._job_keys.setdefault(job, set()).add(key)
            if kind == Kind.ARCHIVED:
                self._archived[job] = value
                self._purge(job)
            elif kind == Kind.DELIVERED:
                self._refresh_delivered(job, key[2])
            elif kind == Kind.HOST:
                self._hosts[job] = value
        self._mark(key, origin, version)
        self._dirty[key] = None
        self._removed.pop(key, None)
        return True

    def _count_done(self, record: FrameRecord, sign: int) -> None:
        done = self._done_by.setdefault(record.node, [0.0, 0.0])
        done[0] += sign
        done[1] += sign * record.seconds

    def _refresh_delivered(self, job: str, frame: int, record: FrameRecord | None = None) -> None:
        """Keep the set of delivered frames right after a frame (now ``record``, if given)
        or its mark changed."""
        if record is None:
            table = self._frames.get(job)
            record = table.get(frame) if table is not None else None
        delivered = self._delivered.setdefault(job, set())
        if record is not None and record.status == Status.DONE:
            reg = self._regs.get((Kind.DELIVERED, job, frame))
            if not record.outputs or (reg is not None and reg.value == delivery_mark(record)):
                delivered.add(frame)
                return
        delivered.discard(frame)

    def _index_claim(self, job: str, frame: int, record: FrameRecord) -> None:
        claimed = self._claimed.setdefault(job, {})
        if record.status == Status.CLAIMED:
            claimed[frame] = record
        else:
            claimed.pop(frame, None)

    def _drop_frame(self, job: str, frame: int) -> None:
        key = (Kind.FRAME, job, frame)
        old = self._frames[job].pop(frame)
        self._claimed.get(job, {}).pop(frame, None)
        self._delivered.get(job, set()).discard(frame)
        if old.status == Status.DONE:
            self._count_done(old, -1)
        self._counts[job][old.status] -= 1
        self._epochs[job] = self._epochs.get(job, 0) - old.epoch
        if old.status == Status.DONE:
            self._done_seconds[job] = self._done_seconds.get(job, 0.0) - old.seconds
        self._fp ^= _fp(codec.state_bytes(key, old))
        self._dirty.pop(key, None)
        self._removed[key] = None

    def _purge(self, job: str) -> None:
        for frame in list(self._frames.get(job, ())):
            self._drop_frame(job, frame)
        self._frames.pop(job, None)
        self._claimed.pop(job, None)
        self._delivered.pop(job, None)
        self._counts.pop(job, None)
        self._epochs.pop(job, None)
        self._peak_memory.pop(job, None)
        self._bucket_marks.pop(job, None)
        spec = self._specs.pop(job, None)
        if spec is not None:
            self._fp ^= _fp(codec.state_bytes((Kind.JOB, job), spec))
        attempts = self._attempts.pop(job, {})
        for key in list(self._job_keys.get(job, ())):
            if key[0] == Kind.ARCHIVED:
                continue
            if key in attempts:
                self._fp ^= _fp(codec.state_bytes(key, attempts[key]))
            elif key in self._regs:
                self._fp ^= _fp(codec.state_bytes(key, self._regs.pop(key)))
            self._meta.pop(key, None)
            self._job_keys[job].discard(key)
            self._dirty.pop(key, None)
            self._removed[key] = None

    def watermarks(self) -> dict[str, int]:
        return dict(self._seen)

    def absorb_watermarks(self, remote: dict[str, int]) -> None:
        """After applying *every* delta a peer sent for our watermarks, we dominate its state."""
        for origin, version in remote.items():
            if version > self._seen.get(origin, 0):
                self._seen[origin] = version
                ahead = self._ahead.get(origin)
                if ahead:
                    for v in [v for v in ahead if v <= version]:
                        ahead.discard(v)
            if origin == self.node_id and version > self._version:
                self._version = version

    def deltas_since(self, marks: dict[str, int]) -> list[Delta]:
        """Every live entry a replica with watermarks ``marks`` may lack (specs first).

        A snapshot: the caller may send it in batches while merges change the replica."""
        return list(self._deltas_since(marks))

    def _deltas_since(self, marks: dict[str, int]) -> Iterator[Delta]:

        def newer(group: dict[str, int]) -> bool:
            return any(v > marks.get(o, 0) for o, v in group.items())

        changed_jobs = [job for job, jm in self._job_marks.items() if newer(jm)]
        # Specs and tombstones first, so a receiver validates frames against their job.
        for job in changed_jobs:
            for key in sorted(self._job_keys.get(job, ()), key=lambda k: SEND_ORDER[k[0]]):
                origin, version = self._meta[key]
                if version > marks.get(origin, 0):
                    yield (key, self._value(key), origin, version)
        for job in changed_jobs:
            frames = self._frames.get(job)
            if not frames:
                continue
            for bucket, bm in self._bucket_marks.get(job, {}).items():
                if not newer(bm):
                    continue
                lo, hi = bucket * BUCKET, (bucket + 1) * BUCKET
                for frame, record in frames.newer(lo, hi, marks):
                    yield ((Kind.FRAME, job, frame), record, record.origin, record.version)

    def all_deltas(self) -> list[Delta]:
        return self.deltas_since({})

    def superseded(self, delta: Delta) -> bool:
        """Whether this replica holds something newer than ``delta`` under its key (so passing
        ``delta`` on would spread stale news). False when it holds this very value."""
        key, value = delta[0], delta[1]
        kind, job = key[0], key[1]
        if job in self._archived and kind != Kind.ARCHIVED:
            return True
        if kind == Kind.FRAME:
            assert isinstance(value, FrameRecord)
            current = self._frames.get(job, {}).get(key[2])
            return current is not None and frame_gt(current, value)
        if kind in (Kind.JOB, Kind.ATTEMPT):
            return False  # immutable: present or not, never newer
        current_reg = self._regs.get(key)
        if current_reg is None or not isinstance(value, Register):
            return False
        merged = merge_registers(current_reg, value)
        return merged is current_reg and merged != value

    def _value(self, key: Key) -> Value:
        kind = key[0]
        if kind == Kind.JOB:
            return self._specs[key[1]]
        if kind == Kind.ATTEMPT:
            return self._attempts[key[1]][key]
        return self._regs[key]

    def state_digest(self) -> str:
        """A 128-bit hash of the replica's state: equal on replicas holding the same ledger."""
        return f"{self._fp:032x}"

    def take_dirty(self) -> tuple[list[Delta], list[Key]]:
        """Entries changed and keys removed since the last call (for the persistent store)."""
        upserts: list[Delta] = []
        for key in self._dirty:
            if key[0] == Kind.FRAME:
                table = self._frames.get(key[1])
                record = table.get(key[2]) if table is not None else None
                if record is not None:
                    upserts.append((key, record, record.origin, record.version))
            elif key in self._meta:
                origin, version = self._meta[key]
                upserts.append((key, self._value(key), origin, version))
        removed = list(self._removed)
        self._dirty.clear()
        self._removed.clear()
        return upserts, removed

    def restore_dirty(self, upserts: Iterable[Delta], removed: Iterable[Key]) -> None:
        """Put back what :meth:`take_dirty` returned when writing it to disk failed."""
        for delta in upserts:
            self._dirty.setdefault(delta[0], None)
        for key in removed:
            self._removed.setdefault(key, None)

    @property
    def has_unsaved(self) -> bool:
        """Whether anything changed since the last :meth:`take_dirty`."""
        return bool(self._dirty or self._removed)

    def load(self, deltas: Iterable[Delta], watermarks: dict[str, int]) -> None:
        """Restore from the persistent store (no clock observation, no dirtiness)."""
        for key, value, origin, version in deltas:
            self._apply(key, value, origin, version)
            if origin == self.node_id and version > self._version:
                self._version = version
        self.absorb_watermarks(watermarks)
        self._seen[self.node_id] = max(self._seen.get(self.node_id, 0), self._version)
        self._dirty.clear()
        self._removed.clear()

    def _require_job(self, job: str) -> JobSpec:
        spec = self._specs.get(job)
        if spec is None:
            raise LedgerError(f"unknown job {job}")
        return spec

    def job(self, job: str) -> JobSpec | None:
        return self._specs.get(job)

    def job_ids(self) -> set[str]:
        return set(self._specs)

    def jobs(self) -> list[JobSpec]:
        return sorted(self._specs.values(), key=lambda s: (s.stamp, s.id))

    def archived(self) -> dict[str, dict[str, Any]]:
        return {job: dict(reg.value) for job, reg in self._archived.items()}

    def frame(self, job: str, frame: int) -> FrameRecord:
        frames = self._frames.get(job)
        record = frames.get(frame) if frames else None
        return PENDING0 if record is None else record

    def frame_records(self, job: str) -> Mapping[int, FrameRecord]:
        """Explicit records only (frames never touched are pending), in frame order once the
        job's spec is known. A done record is built on each read: prefer :meth:`frame_status`
        where the status is enough."""
        return self._frames.get(job) or FrameTable(self._nodes)

    def frame_statuses(self, job: str) -> Iterator[tuple[int, Status]]:
        """(frame, status) of every frame with a record, without building done records."""
        table = self._frames.get(job)
        return table.statuses() if table is not None else iter(())

    def frame_status(self, job: str, frame: int) -> Status:
        """A frame's status, without building its record."""
        table = self._frames.get(job)
        status = table.status(frame) if table is not None else None
        return Status.PENDING if status is None else status

    def first_unfinished(self, job: str, position: int) -> int | None:
        """The position (in the spec's frame order) of the job's first frame from
        ``position`` on that is neither done nor failed; None when the records are not
        indexed by position (see :meth:`FrameTable.first_unfinished`)."""
        table = self._frames.get(job)
        return max(0, position) if table is None else table.first_unfinished(position)

    def counts(self, job: str) -> JobCounts:
        spec = self._require_job(job)
        c = self._counts.get(job, [0] * len(Status))
        total = spec.frame_count
        rendering = c[Status.CLAIMED]
        done = c[Status.DONE]
        failed = c[Status.FAILED]
        return JobCounts(total, total - rendering - done - failed, rendering, done, failed)

    def mean_frame_seconds(self, job: str) -> float | None:
        """Mean render time of the job's done frames (None before the first one)."""
        done = self._counts.get(job, [0] * len(Status))[Status.DONE]
        return self._done_seconds.get(job, 0.0) / done if done else None

    def epoch_sum(self, job: str) -> int:
        """The sum of the epochs of the job's frame records (kept by every write): a retried
        job's next end is told apart from its last one by it."""
        return self._epochs.get(job, 0)

    def delivered_count(self, job: str) -> int:
        """Done frames of the job whose outputs the submitter holds (kept by every write)."""
        return len(self._delivered.get(job, ()))

    def done_seconds(self, job: str) -> float:
        """Render seconds of the job's done frames."""
        return self._done_seconds.get(job, 0.0)

    def done_by_node(self) -> dict[str, tuple[int, float]]:
        """Node -> (done frames, render seconds) over every job this replica holds."""
        return {node: (int(c), s) for node, (c, s) in self._done_by.items() if c > 0}

    def peak_memory(self, job: str) -> int:
        """The greatest peak memory (bytes) a done frame of the job recorded (0: none yet)."""
        return self._peak_memory.get(job, 0)

    def host_holds(self) -> dict[str, dict[str, Any]]:
        """Node id -> its hold (``{"mode": "hold" | "drain", "by": name}``) for held hosts."""
        return {n: dict(r.value) for n, r in self._hosts.items() if isinstance(r.value, dict)}

    def host_hold(self, node: str) -> dict[str, Any] | None:
        reg = self._hosts.get(node)
        return dict(reg.value) if reg is not None and isinstance(reg.value, dict) else None

    def claimed_frames(self, job: str) -> list[tuple[int, FrameRecord]]:
        """The job's frames claimed now (an index kept by every write: no scan of the job)."""
        return list(self._claimed.get(job, {}).items())
