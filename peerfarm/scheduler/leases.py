"""Lease timing: every lease transition a peer observes lives here. Pure.

A claimant renews its lease by gossiping the same claim with a higher renewal sequence. Every
other peer times each lease on its *own* monotonic clock from the moment it last saw the claim
change, so no clock synchronisation is needed: a lease is expired when ``now - last_change >
timeout`` on the observer's clock. A claim whose owner gossip declares dead (or left) expires at
once. Claims loaded from disk at start count from the start, so a restarted peer waits one full
lease before taking anything over.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..ledger.model import FrameRecord, Status

FrameKey = tuple[str, int]


@dataclass(slots=True)
class _Seen:
    node: str
    attempt: int
    epoch: int
    stamp: int
    seq: int
    since: float


class LeaseTable:
    """The local view of every claimed frame's lease."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._seen: dict[FrameKey, _Seen] = {}

    def observe(self, job: str, frame: int, record: FrameRecord, now: float) -> None:
        """Feed every frame record that changed (claims, renewals, completions)."""
        key = (job, frame)
        if record.status != Status.CLAIMED:
            self._seen.pop(key, None)
            return
        seen = self._seen.get(key)
        if (
            seen is None
            or seen.node != record.node
            or seen.attempt != record.attempt
            or seen.epoch != record.epoch
            or seen.stamp != record.stamp
            or seen.seq != record.seq
        ):
            self._seen[key] = _Seen(
                record.node, record.attempt, record.epoch, record.stamp, record.seq, now
            )

    def restart_all(self, now: float) -> None:
        """Time every lease afresh from ``now``: this peer was frozen (SIGSTOP, a suspended
        machine) and what it observed before is stale, not expired."""
        for seen in self._seen.values():
            seen.since = now

    def forget_job(self, job: str) -> None:
        for key in [k for k in self._seen if k[0] == job]:
            del self._seen[key]

    def expired(
        self, now: float, *, gone: Iterable[str] = (), exclude: str | None = None
    ) -> list[FrameKey]:
        """Claimed frames whose lease ran out, or whose owner is dead/left (``gone``).

        ``exclude`` (this node's id) is never reported: our own leases are ours to renew.
        """
        gone_set = set(gone)
        out = []
        for key, seen in self._seen.items():
            if seen.node == exclude:
                continue
            if seen.node in gone_set or now - seen.since > self.timeout:
                out.append(key)
        return out

    def next_expiry(self, exclude: str | None = None) -> float | None:
        times = [s.since + self.timeout for s in self._seen.values() if s.node != exclude]
        return min(times) if times else None

    def claims_by_node(self) -> dict[str, int]:
        """How many live claims each node holds (ours included), from what we observed."""
        counts: dict[str, int] = {}
        for seen in self._seen.values():
            counts[seen.node] = counts.get(seen.node, 0) + 1
        return counts

    def __len__(self) -> int:
        return len(self._seen)
