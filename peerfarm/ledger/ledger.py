"""The replicated job ledger: one replica, pure (the time is always an argument).

Owns: applying local operations (submit, claim, renew, release, complete, fail, retry, pause,
cancel, deliver, archive) as versioned deltas; merging remote deltas; the Scuttlebutt watermarks
(``{origin: version}``) and the deltas another replica lacks given its watermarks; the state
digest that equal replicas share; and the queries the scheduler and the status views need.

Replication rules:

* Every local write gets the next version of this node (``origin = node id``). A delta is
  ``(key, value, origin, version)``; merging keeps the greatest value per key (see ``model``),
  so merge is commutative, associative and idempotent.
* ``watermarks()[o] = v`` promises that this replica's state dominates every write ``o`` made
  with a version <= v. It advances when ``o``'s writes arrive in order (fresh broadcasts) and,
  after a complete anti-entropy exchange, to the other side's watermarks.
* ``deltas_since(w)`` returns every live entry whose (origin, version) is above ``w``: applying
  them makes the receiver dominate the sender. The work is proportional to the jobs (and
  buckets of frames) that changed since ``w``, not to the size of the ledger.
* An archived job keeps only its tombstone (X); every other entry of it is dropped and refused
  from then on, so a replica that was away converges by receiving the tombstone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..errors import LedgerError
from . import codec
from .codec import Delta, Key, Value
from .hlc import HybridClock
from .model import (
    OPEN,
    PENDING0,
    Attempt,
    Event,
    FrameRecord,
    JobSpec,
    JobState,
    Output,
    Register,
    SceneRef,
    Status,
    check_transition,
    frame_gt,
    merge_registers,
)

BUCKET = 256  # frames per anti-entropy bucket
MAX_AHEAD = 4096  # out-of-order versions remembered per origin (beyond: repaired by push-pull)
MAX_ORPHAN_FRAMES = 100_000  # frame records held for a job whose spec has not arrived yet


class LostClaim(LedgerError):
    """This node no longer owns the claim it is acting on (another peer won or took it over)."""


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


class Ledger:
    """One peer's replica of the farm's job ledger."""

    def __init__(self, node_id: str, *, version: int = 0, clock_last: int = 0) -> None:
        self.node_id = node_id
        self.clock = HybridClock(clock_last)
        self._version = version
        self._specs: dict[str, JobSpec] = {}
        self._frames: dict[str, dict[int, FrameRecord]] = {}
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
        self._done_seconds: dict[str, float] = {}  # job -> render seconds of its done frames
        self._dirty: dict[Key, None] = {}
        self._removed: dict[Key, None] = {}

    # ------------------------------------------------------------------------------------
    # local writes

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

    def new_job(
        self,
        *,
        name: str,
        submitter_name: str,
        renderer: str,
        options: dict[str, Any],
        scene: SceneRef,
        frames: Sequence[int],
        wall_ms: int,
        assets: Sequence[SceneRef] = (),
        chunk: int = 1,
        output: str = "",
        retries: int = 3,
        priority: int = 0,
    ) -> JobSpec:
        """Build a spec (with its content-hash id) for :meth:`submit`."""
        from ..frames import to_runs

        spec = JobSpec(
            id="",
            name=name,
            submitted_by=self.node_id,
            submitter_name=submitter_name,
            stamp=self.clock.now(wall_ms),
            renderer=renderer,
            options=dict(options),
            scene=scene,
            assets=tuple(assets),
            runs=tuple(to_runs(frames)),
            chunk=chunk,
            output=output,
            retries=retries,
            priority=priority,
        )
        spec = replace(spec, id=codec.spec_id(spec))
        # Round-trip once so a spec that would be refused by peers is refused here instead.
        codec.decode_spec(spec.id, codec.encode_delta((("J", spec.id), spec, "0" * 16, 1))[5])
        return spec

    def submit(self, spec: JobSpec) -> list[Delta]:
        if spec.id in self._specs:
            return []
        return [self._write(("J", spec.id), spec)]

    def _register(self, kind: str, job: str, value: Any, wall_ms: int, rank: int = 0) -> Delta:
        self._require_job(job)
        reg = Register(value, self.clock.now(wall_ms), self.node_id, rank)
        return self._write((kind, job), reg)

    def set_priority(self, job: str, priority: int, wall_ms: int) -> list[Delta]:
        return [self._register("P", job, int(priority), wall_ms)]

    def pause(self, job: str, wall_ms: int) -> list[Delta]:
        return [self._register("Z", job, True, wall_ms)]

    def resume(self, job: str, wall_ms: int) -> list[Delta]:
        return [self._register("Z", job, False, wall_ms)]

    def cancel(self, job: str, wall_ms: int) -> list[Delta]:
        if self.cancelled(job):
            return []
        return [self._register("C", job, True, wall_ms, rank=1)]

    def claim(
        self, job: str, frames: Iterable[int], wall_ms: int, *, takeover: bool = False
    ) -> list[Delta]:
        """Claim free frames (or take over expired/dead claims) as one chunk."""
        self._require_job(job)
        stamp = self.clock.now(wall_ms)
        event = Event.TAKEOVER if takeover else Event.CLAIM
        deltas = []
        for frame in frames:
            current = self.frame(job, frame)
            new = FrameRecord(
                epoch=current.epoch,
                status=Status.CLAIMED,
                attempt=current.attempt + 1,
                stamp=stamp,
                node=self.node_id,
            )
            check_transition(current, event, new)
            deltas.append(self._write(("F", job, frame), new))
        return deltas

    def _owned(self, job: str, frame: int, claim: FrameRecord) -> FrameRecord:
        current = self.frame(job, frame)
        if not (
            current.status == Status.CLAIMED
            and current.node == self.node_id
            and current.epoch == claim.epoch
            and current.attempt == claim.attempt
            and current.stamp == claim.stamp
        ):
            raise LostClaim(
                f"frame {frame} of job {job} is no longer ours "
                f"({current.status.name.lower()} by {current.node or 'nobody'})"
            )
        return current

    def renew(self, job: str, frames: Iterable[tuple[int, FrameRecord]]) -> list[Delta]:
        """Extend leases: each renewal is the same claim with a higher sequence number."""
        deltas = []
        for frame, claim in frames:
            current = self._owned(job, frame, claim)
            new = replace(current, seq=current.seq + 1)
            check_transition(current, Event.RENEW, new)
            deltas.append(self._write(("F", job, frame), new))
        return deltas

    def release(
        self, job: str, frames: Iterable[tuple[int, FrameRecord]], wall_ms: int
    ) -> list[Delta]:
        """Hand claims back (graceful stop) so others take them without waiting for a lease."""
        stamp = self.clock.now(wall_ms)
        deltas = []
        for frame, claim in frames:
            try:
                current = self._owned(job, frame, claim)
            except LostClaim:
                continue
            new = FrameRecord(current.epoch, Status.RELEASED, current.attempt, stamp, self.node_id)
            check_transition(current, Event.RELEASE, new)
            deltas.append(self._write(("F", job, frame), new))
        return deltas

    def complete(
        self,
        job: str,
        frame: int,
        claim: FrameRecord,
        outputs: Sequence[Output],
        seconds: float,
    ) -> list[Delta]:
        current = self._owned(job, frame, claim)
        new = FrameRecord(
            epoch=current.epoch,
            status=Status.DONE,
            attempt=current.attempt,
            stamp=current.stamp,
            node=self.node_id,
            seconds=round(float(seconds), 3),
            outputs=tuple(outputs),
        )
        check_transition(current, Event.COMPLETE, new)
        return [self._write(("F", job, frame), new)]

    def fail(
        self,
        job: str,
        frame: int,
        claim: FrameRecord,
        error: str,
        log_tail: str,
        seconds: float,
        wall_ms: int,
    ) -> list[Delta]:
        """Record a failed attempt; the frame is FAILED once the job's retry limit is reached."""
        current = self._owned(job, frame, claim)
        spec = self._require_job(job)
        error = error[: codec.MAX_ERROR]
        stamp = self.clock.now(wall_ms)
        attempt = Attempt(stamp, error, log_tail[-codec.MAX_LOG_TAIL :], round(float(seconds), 3))
        key = ("A", job, frame, current.epoch, current.attempt, self.node_id)
        deltas = [self._write(key, attempt)]
        failures = len(self.attempts(job, frame, epoch=current.epoch))
        status = Status.FAILED if failures >= max(1, spec.retries) else Status.RETRYING
        new = FrameRecord(current.epoch, status, current.attempt, stamp, self.node_id, error=error)
        check_transition(current, Event.FAIL, new)
        deltas.append(self._write(("F", job, frame), new))
        return deltas

    def retry(
        self, job: str, frames: Iterable[int] | None, wall_ms: int, *, clear_bans: bool = True
    ) -> list[Delta]:
        """Open a new epoch for frames: the failed ones by default, or exactly those given.

        A user's retry also lifts every peer's ban of the job (``clear_bans``)."""
        spec = self._require_job(job)
        stamp = self.clock.now(wall_ms)
        chosen = (
            [f for f in spec.frames if self.frame(job, f).status == Status.FAILED]
            if frames is None
            else list(frames)
        )
        deltas = []
        for frame in chosen:
            if not has_frame(spec, frame):
                raise LedgerError(f"frame {frame} is not part of job {job}")
            current = self.frame(job, frame)
            if current.status == Status.CLAIMED:
                continue  # rendering now; retrying it would only waste the render
            new = FrameRecord(current.epoch + 1, Status.PENDING, 0, stamp, "")
            check_transition(current, Event.RETRY, new)
            deltas.append(self._write(("F", job, frame), new))
        for key in list(self._job_keys.get(job, ())) if clear_bans else []:
            if key[0] == "B" and self._regs[key].value is not None:
                reg = Register(None, self.clock.now(wall_ms), self.node_id)
                deltas.append(self._write(key, reg))
        return deltas

    def ban(self, job: str, reason: str, wall_ms: int) -> list[Delta]:
        """Record that this node stops taking ``job`` (repeated failures here) and why."""
        self._require_job(job)
        reg = Register(reason[: codec.MAX_ERROR], self.clock.now(wall_ms), self.node_id)
        return [self._write(("B", job, self.node_id), reg)]

    def mark_delivered(self, job: str, frame: int, epoch: int, wall_ms: int) -> list[Delta]:
        key = ("D", job, frame)
        current = self._regs.get(key)
        if current is not None and current.value >= epoch:
            return []
        return [self._write(key, Register(epoch, self.clock.now(wall_ms), self.node_id))]

    def archive(self, job: str, wall_ms: int) -> list[Delta]:
        """Drop a finished job's records, keeping a small tombstone with its summary."""
        spec = self._require_job(job)
        counts = self.counts(job)
        summary = {
            "name": spec.name,
            "frames": counts.total,
            "done": counts.done,
            "failed": counts.failed,
            "state": self.job_state(job).value,
            "submitted_by": spec.submitter_name,
            "output": spec.output,
        }
        return [self._write(("X", job), Register(summary, self.clock.now(wall_ms), self.node_id))]

    # ------------------------------------------------------------------------------------
    # merging

    def merge(self, deltas: Iterable[Delta], wall_ms: int) -> list[Delta]:
        """Apply remote deltas; returns those that changed this replica."""
        changed = []
        for key, value, origin, version in deltas:
            stamp = getattr(value, "stamp", 0)
            if stamp:
                self.clock.observe(stamp, wall_ms)
            if origin == self.node_id and version > self._version:
                self._version = version  # our own writes from before a lost update: never reuse
            if self._apply(key, value, origin, version):
                changed.append((key, value, origin, version))
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
        if key[0] == "F":
            buckets = self._bucket_marks.setdefault(job, {})
            bucket = buckets.setdefault(key[2] // BUCKET, {})
            if bucket.get(origin, 0) < version:
                bucket[origin] = version

    def _apply(self, key: Key, value: Value, origin: str, version: int) -> bool:
        kind, job = key[0], key[1]
        if job in self._archived and kind != "X":
            return False
        if kind == "F":
            assert isinstance(value, FrameRecord)
            frame = key[2]
            spec = self._specs.get(job)
            frames = self._frames.get(job)
            if spec is not None and not has_frame(spec, frame):
                return False
            if frames is None:
                frames = self._frames[job] = {}
            old = frames.get(frame)
            if old is not None and not frame_gt(value, old):
                return False
            if old is None and spec is None and len(frames) >= MAX_ORPHAN_FRAMES:
                return False
            if value.origin != origin or value.version != version:
                value = replace(value, origin=origin, version=version)
            frames[frame] = value
            counts = self._counts.setdefault(job, [0] * len(Status))
            if old is not None:
                counts[old.status] -= 1
                self._fp ^= _fp(codec.state_bytes(key, old))
                if old.status == Status.DONE:
                    self._done_seconds[job] = self._done_seconds.get(job, 0.0) - old.seconds
            counts[value.status] += 1
            if value.status == Status.DONE:
                self._done_seconds[job] = self._done_seconds.get(job, 0.0) + value.seconds
            self._fp ^= _fp(codec.state_bytes(key, value))
        elif kind == "J":
            assert isinstance(value, JobSpec)
            if job in self._specs:
                return False
            self._specs[job] = value
            self._fp ^= _fp(codec.state_bytes(key, value))
            self._meta[key] = (origin, version)
            self._job_keys.setdefault(job, set()).add(key)
            for frame in [f for f in self._frames.get(job, {}) if not has_frame(value, f)]:
                self._drop_frame(job, frame)
        elif kind == "A":
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
            if kind == "X":
                self._archived[job] = value
                self._purge(job)
        self._mark(key, origin, version)
        self._dirty[key] = None
        self._removed.pop(key, None)
        return True

    def _drop_frame(self, job: str, frame: int) -> None:
        key = ("F", job, frame)
        old = self._frames[job].pop(frame)
        self._counts[job][old.status] -= 1
        if old.status == Status.DONE:
            self._done_seconds[job] = self._done_seconds.get(job, 0.0) - old.seconds
        self._fp ^= _fp(codec.state_bytes(key, old))
        self._dirty.pop(key, None)
        self._removed[key] = None

    def _purge(self, job: str) -> None:
        for frame in list(self._frames.get(job, ())):
            self._drop_frame(job, frame)
        self._frames.pop(job, None)
        self._counts.pop(job, None)
        self._bucket_marks.pop(job, None)
        spec = self._specs.pop(job, None)
        if spec is not None:
            self._fp ^= _fp(codec.state_bytes(("J", job), spec))
        attempts = self._attempts.pop(job, {})
        for key in list(self._job_keys.get(job, ())):
            if key[0] == "X":
                continue
            if key in attempts:
                self._fp ^= _fp(codec.state_bytes(key, attempts[key]))
            elif key in self._regs:
                self._fp ^= _fp(codec.state_bytes(key, self._regs.pop(key)))
            self._meta.pop(key, None)
            self._job_keys[job].discard(key)
            self._dirty.pop(key, None)
            self._removed[key] = None

    # ------------------------------------------------------------------------------------
    # anti-entropy

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

    def deltas_since(self, marks: dict[str, int]) -> Iterator[Delta]:
        """Every live entry a replica with watermarks ``marks`` may lack (specs first)."""

        def newer(group: dict[str, int]) -> bool:
            return any(v > marks.get(o, 0) for o, v in group.items())

        changed_jobs = [job for job, jm in self._job_marks.items() if newer(jm)]
        # Specs and tombstones first, so a receiver validates frames against their job.
        for job in changed_jobs:
            for key in sorted(self._job_keys.get(job, ()), key=lambda k: "JXPZCBDA".index(k[0])):
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
                if len(frames) <= BUCKET:
                    candidates: Iterable[int] = [f for f in frames if lo <= f < hi]
                else:
                    candidates = (f for f in range(lo, hi) if f in frames)
                for frame in candidates:
                    record = frames[frame]
                    if record.version > marks.get(record.origin, 0):
                        yield (("F", job, frame), record, record.origin, record.version)

    def all_deltas(self) -> Iterator[Delta]:
        return self.deltas_since({})

    def _value(self, key: Key) -> Value:
        kind = key[0]
        if kind == "J":
            return self._specs[key[1]]
        if kind == "A":
            return self._attempts[key[1]][key]
        return self._regs[key]

    def state_digest(self) -> str:
        """A 128-bit hash of the replica's state: equal on replicas holding the same ledger."""
        return f"{self._fp:032x}"

    def take_dirty(self) -> tuple[list[Delta], list[Key]]:
        """Entries changed and keys removed since the last call (for the persistent store)."""
        upserts: list[Delta] = []
        for key in self._dirty:
            if key[0] == "F":
                record = self._frames.get(key[1], {}).get(key[2])
                if record is not None:
                    upserts.append((key, record, record.origin, record.version))
            elif key in self._meta:
                origin, version = self._meta[key]
                upserts.append((key, self._value(key), origin, version))
        removed = list(self._removed)
        self._dirty.clear()
        self._removed.clear()
        return upserts, removed

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

    # ------------------------------------------------------------------------------------
    # queries

    def _require_job(self, job: str) -> JobSpec:
        spec = self._specs.get(job)
        if spec is None:
            raise LedgerError(f"unknown job {job}")
        return spec

    def job(self, job: str) -> JobSpec | None:
        return self._specs.get(job)

    def jobs(self) -> list[JobSpec]:
        return sorted(self._specs.values(), key=lambda s: (s.stamp, s.id))

    def archived(self) -> dict[str, dict[str, Any]]:
        return {job: dict(reg.value) for job, reg in self._archived.items()}

    def frame(self, job: str, frame: int) -> FrameRecord:
        frames = self._frames.get(job)
        record = frames.get(frame) if frames else None
        return PENDING0 if record is None else record

    def frame_records(self, job: str) -> dict[int, FrameRecord]:
        """Explicit records only (frames never touched are pending)."""
        return self._frames.get(job, {})

    def priority(self, job: str) -> int:
        reg = self._regs.get(("P", job))
        return int(reg.value) if reg is not None else self._require_job(job).priority

    def paused(self, job: str) -> bool:
        reg = self._regs.get(("Z", job))
        return bool(reg.value) if reg is not None else False

    def cancelled(self, job: str) -> bool:
        reg = self._regs.get(("C", job))
        return bool(reg.value) if reg is not None else False

    def banned(self, job: str) -> dict[str, str]:
        out = {}
        for key in self._job_keys.get(job, ()):
            if key[0] == "B" and self._regs[key].value is not None:
                out[key[2]] = str(self._regs[key].value)
        return out

    def delivered(self, job: str, frame: int) -> bool:
        """A done frame is delivered once its submitter holds its outputs (at once if none)."""
        record = self.frame(job, frame)
        if record.status != Status.DONE:
            return False
        if not record.outputs:
            return True
        reg = self._regs.get(("D", job, frame))
        return reg is not None and reg.value >= record.epoch

    def attempts(
        self, job: str, frame: int, *, epoch: int | None = None
    ) -> list[tuple[Key, Attempt]]:
        found = [
            (key, a)
            for key, a in self._attempts.get(job, {}).items()
            if key[2] == frame and (epoch is None or key[3] == epoch)
        ]
        return sorted(found, key=lambda item: (item[0][3], item[0][4], item[1].stamp))

    def attempts_of_job(self, job: str) -> list[tuple[Key, Attempt]]:
        return list(self._attempts.get(job, {}).items())

    def failures_by(self, job: str, node: str) -> int:
        return sum(1 for key in self._attempts.get(job, {}) if key[5] == node)

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

    def job_state(self, job: str) -> JobState:
        if self.cancelled(job):
            return JobState.CANCELLED
        counts = self.counts(job)
        if counts.done == counts.total:
            return JobState.DONE
        if counts.done + counts.failed == counts.total:
            return JobState.FAILED
        if self.paused(job):
            return JobState.PAUSED
        return JobState.ACTIVE

    def open_frames(self, job: str) -> Iterator[int]:
        """Frames that may be claimed now, in rendering order."""
        spec = self._require_job(job)
        frames = self._frames.get(job, {})
        for frame in spec.frames:
            record = frames.get(frame)
            if record is None or record.status in OPEN:
                yield frame

    def claimed_frames(self, job: str) -> list[tuple[int, FrameRecord]]:
        return [(f, r) for f, r in self._frames.get(job, {}).items() if r.status == Status.CLAIMED]
