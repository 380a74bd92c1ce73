"""The replicated job ledger: the local operations of one replica. Pure (time is an argument).

Owns applying local operations (submit, claim, renew, release, complete, fail, retry, pause,
cancel, ban, deliver, archive, halt) as versioned deltas, each checked against the frame state
table of ``model``, and the job-level queries the scheduler and the status views need. Storage,
merging and anti-entropy live in :mod:`peerfarm.ledger.replica`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from typing import Any

from ..errors import LedgerError
from . import codec
from .keys import Delta, Key, Kind
from .model import (
    OPEN,
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
    delivery_mark,
    same_claim,
)
from .replica import BUCKET, JobCounts, Replica, has_frame

__all__ = ["BUCKET", "JobCounts", "Ledger", "LostClaim", "has_frame"]


class LostClaim(LedgerError):
    """This node no longer owns the claim it is acting on (another peer won or took it over)."""


class Ledger(Replica):
    """One peer's replica of the farm's job ledger, with the operations this peer may make."""

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
        codec.decode_spec(spec.id, codec.encode_delta(((Kind.JOB, spec.id), spec, "0" * 16, 1))[5])
        return spec

    def submit(self, spec: JobSpec) -> list[Delta]:
        if spec.id in self._specs:
            return []
        return [self._write((Kind.JOB, spec.id), spec)]

    def _register(self, kind: Kind, job: str, value: Any, wall_ms: int, rank: int = 0) -> Delta:
        self._require_job(job)
        return self._write((kind, job), self._next_register(job, (kind, job), value, wall_ms, rank))

    def _next_register(
        self, job: str, key: Key, value: Any, wall_ms: int, rank: int = 0
    ) -> Register:
        """A new value for a register that beats the one this replica holds: a write made after
        seeing a value supersedes it, even when that value's stamp came from a clock far ahead
        (whose stamps the HLC refuses to follow), so no far-future stamp freezes a register."""
        stamp = self.clock.now(wall_ms)
        current = self._regs.get(key)
        if current is not None and current.stamp >= stamp:
            stamp = current.stamp + 1
        return Register(value, stamp, self.node_id, rank)

    def set_priority(self, job: str, priority: int, wall_ms: int) -> list[Delta]:
        return [self._register(Kind.PRIORITY, job, int(priority), wall_ms)]

    def pause(self, job: str, wall_ms: int) -> list[Delta]:
        return [self._register(Kind.PAUSED, job, True, wall_ms)]

    def resume(self, job: str, wall_ms: int) -> list[Delta]:
        return [self._register(Kind.PAUSED, job, False, wall_ms)]

    def cancel(self, job: str, wall_ms: int) -> list[Delta]:
        if self.cancelled(job):
            return []
        return [self._register(Kind.CANCELLED, job, True, wall_ms, rank=1)]

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
            deltas.append(self._write((Kind.FRAME, job, frame), new))
        return deltas

    def _owned(self, job: str, frame: int, claim: FrameRecord) -> FrameRecord:
        current = self.frame(job, frame)
        if not (
            current.status == Status.CLAIMED
            and current.node == self.node_id
            and same_claim(current, claim)
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
            deltas.append(self._write((Kind.FRAME, job, frame), new))
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
            deltas.append(self._write((Kind.FRAME, job, frame), new))
        return deltas

    def complete(
        self,
        job: str,
        frame: int,
        claim: FrameRecord,
        outputs: Sequence[Output],
        seconds: float,
        memory: int = 0,
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
            memory=max(0, int(memory)),
        )
        check_transition(current, Event.COMPLETE, new)
        return [self._write((Kind.FRAME, job, frame), new)]

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
        key = (Kind.ATTEMPT, job, frame, current.epoch, current.attempt, self.node_id)
        deltas = [self._write(key, attempt)]
        failures = len(self.attempts(job, frame, epoch=current.epoch))
        status = Status.FAILED if failures >= max(1, spec.retries) else Status.RETRYING
        new = FrameRecord(current.epoch, status, current.attempt, stamp, self.node_id, error=error)
        check_transition(current, Event.FAIL, new)
        deltas.append(self._write((Kind.FRAME, job, frame), new))
        return deltas

    def retry(
        self, job: str, frames: Iterable[int] | None, wall_ms: int, *, clear_bans: bool = True
    ) -> list[Delta]:
        """Open a new epoch for frames: the failed ones by default, or exactly those given.

        A user's retry also lifts every peer's ban of the job (``clear_bans``)."""
        spec = self._require_job(job)
        stamp = self.clock.now(wall_ms)
        chosen = (
            [f for f in spec.frames if self.frame_status(job, f) == Status.FAILED]
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
            deltas.append(self._write((Kind.FRAME, job, frame), new))
        for key in list(self._job_keys.get(job, ())) if clear_bans else []:
            if key[0] in (Kind.BAN, Kind.HALTED) and self._regs[key].value is not None:
                deltas.append(self._write(key, self._next_register(job, key, None, wall_ms)))
        return deltas

    def ban(self, job: str, reason: str, wall_ms: int) -> list[Delta]:
        """Record that this node stops taking ``job`` (repeated failures here) and why."""
        self._require_job(job)
        key = (Kind.BAN, job, self.node_id)
        reg = self._next_register(job, key, reason[: codec.MAX_ERROR], wall_ms)
        return [self._write(key, reg)]

    def hold_host(self, node: str, mode: str, by: str, wall_ms: int) -> list[Delta]:
        """Hold a host (``hold``: it finishes its frames and takes no more; ``drain``: it
        hands them back at once too) until :meth:`release_host`. Any peer may write it."""
        if mode not in codec.HOLD_MODES:
            raise LedgerError(f"unknown host mode {mode!r}")
        key = (Kind.HOST, node)
        value = {"mode": mode, "by": by[: codec.MAX_NAME]}
        reg = self._regs.get(key)
        if reg is not None and reg.value == value:
            return []
        return [self._write(key, self._next_register(node, key, value, wall_ms))]

    def release_host(self, node: str, wall_ms: int) -> list[Delta]:
        key = (Kind.HOST, node)
        reg = self._regs.get(key)
        if reg is None or reg.value is None:
            return []
        return [self._write(key, self._next_register(node, key, None, wall_ms))]

    def mark_delivered(
        self, job: str, frame: int, record: FrameRecord, wall_ms: int
    ) -> list[Delta]:
        """Record that the submitter holds exactly ``record``'s outputs (epoch and hashes)."""
        key = (Kind.DELIVERED, job, frame)
        mark = delivery_mark(record)
        current = self._regs.get(key)
        if current is not None and current.value == mark:
            return []
        return [self._write(key, self._next_register(job, key, mark, wall_ms))]

    def mark_notice(
        self, job: str, event: int, state: str, phase: str, wall_ms: int
    ) -> list[Delta]:
        """Record a job-end notification's phase (``claimed`` before sending, then ``sent``
        or ``failed``): the register ``peerfarm.scheduler.notices`` reads."""
        key = (Kind.NOTICE, job, event)
        self._require_job(job)
        return [self._write(key, self._next_register(job, key, [state, phase], wall_ms))]

    def notice(self, job: str, event: int) -> Register | None:
        """The notice register of one job-end event, or None."""
        return self._regs.get((Kind.NOTICE, job, event))

    def halt(self, job: str, reason: str, wall_ms: int) -> list[Delta]:
        """End an active job farm-wide (no peer can take it any more), with the reason."""
        return [self._register(Kind.HALTED, job, reason[: codec.MAX_ERROR], wall_ms)]

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
        return [
            self._write(
                (Kind.ARCHIVED, job), Register(summary, self.clock.now(wall_ms), self.node_id)
            )
        ]

    def priority(self, job: str) -> int:
        reg = self._regs.get((Kind.PRIORITY, job))
        return int(reg.value) if reg is not None else self._require_job(job).priority

    def paused(self, job: str) -> bool:
        reg = self._regs.get((Kind.PAUSED, job))
        return bool(reg.value) if reg is not None else False

    def cancelled(self, job: str) -> bool:
        reg = self._regs.get((Kind.CANCELLED, job))
        return bool(reg.value) if reg is not None else False

    def banned(self, job: str) -> dict[str, str]:
        out = {}
        for key in self._job_keys.get(job, ()):
            if key[0] == Kind.BAN and self._regs[key].value is not None:
                out[key[2]] = str(self._regs[key].value)
        return out

    def delivered(self, job: str, frame: int) -> bool:
        """A done frame is delivered once its submitter holds its outputs (at once if none)."""
        return frame in self._delivered.get(job, ())

    def halted(self, job: str) -> str | None:
        """Why the job was ended farm-wide, or None."""
        reg = self._regs.get((Kind.HALTED, job))
        return None if reg is None or reg.value is None else str(reg.value)

    def ban_lifted_at(self, job: str, node: str) -> int:
        """The stamp at which ``node``'s ban of ``job`` was last lifted (0: never)."""
        reg = self._regs.get((Kind.BAN, job, node))
        return reg.stamp if reg is not None and reg.value is None else 0

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

    def failures_by(self, job: str, node: str, *, since: int = 0) -> int:
        """Failed attempts of ``job`` on ``node`` (made after HLC stamp ``since``)."""
        return sum(
            1
            for key, attempt in self._attempts.get(job, {}).items()
            if key[5] == node and attempt.stamp > since
        )

    def job_state(self, job: str) -> JobState:
        if self.cancelled(job):
            return JobState.CANCELLED
        counts = self.counts(job)
        if counts.done == counts.total:
            return JobState.DONE
        if counts.done + counts.failed == counts.total or self.halted(job):
            return JobState.FAILED
        if self.paused(job):
            return JobState.PAUSED
        return JobState.ACTIVE

    def open_frames(self, job: str) -> Iterator[int]:
        """Frames that may be claimed now, in rendering order."""
        spec = self._require_job(job)
        for frame in spec.frames:
            if self.frame_status(job, frame) in OPEN:
                yield frame
