"""Reading a simulated farm: its peers, what they hold, and the farm-wide invariant check.

This module owns every read-only question a test asks a :class:`~peerfarm.testing.sim.SimFarm`
(which peers are live, whether ledgers and membership converged, how a peer sees a frame or a
member, what a submitter's folder must hold) and :meth:`FarmView.check_invariants`, DESIGN.md's
farm-wide check that ends every simulation. Driving the farm (starting, crashing, partitioning,
submitting) is :mod:`peerfarm.testing.sim`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import trio

from ..gossip.membership import MemberState
from ..ledger.model import JobState, Status
from ..peer import Node
from ..peer.delivery import DELIVERIES, read_names
from ..peer.naming import split_suffix
from .fakes import RenderLog

__all__ = ["FarmView", "Invariants", "SimPeer", "delivered_path", "output_files"]


@dataclass
class SimPeer:
    node: Node
    address: tuple[str, int]
    scope: trio.CancelScope
    data_dir: Path
    done: trio.Event
    name: str
    renderer: bool
    slots: int

    @property
    def node_id(self) -> str:
        return self.node.node_id


@dataclass
class Invariants:
    """What :meth:`SimFarm.check_invariants` found (it raises when an invariant breaks)."""

    jobs: int
    frames: int
    renders: int  # completed renders of every frame
    duplicates: int  # completed renders beyond the first of a frame (same epoch or not)
    delivered_files: int


class FarmView:
    """The read side of a simulated farm; :class:`~peerfarm.testing.sim.SimFarm` drives it."""

    peers: dict[str, SimPeer]
    crashed: dict[str, float]  # node id -> virtual time of the crash
    stopped: dict[str, float]  # node id -> virtual time its graceful stop began
    log: RenderLog

    def live(self) -> list[SimPeer]:
        """Peers running now (not crashed, not stopped)."""
        return [
            p
            for p in self.peers.values()
            if not p.done.is_set()
            and p.node_id not in self.crashed
            and p.node_id not in self.stopped
        ]

    def digests(self) -> set[str]:
        return {p.node.ledger.state_digest() for p in self.live()}

    def converged(self) -> bool:
        """Every live peer holds the same ledger."""
        return len(self.digests()) == 1

    def membership_converged(self) -> bool:
        """Every live peer sees every live peer alive, and every other peer not alive."""
        live = {p.node_id for p in self.live()}
        for peer in self.live():
            alive = {m.node_id for m in peer.node.members() if m.state == MemberState.ALIVE}
            if alive != live:
                return False
        return True

    def states_of(self, node_id: str) -> dict[str, MemberState | None]:
        """How every live peer (but ``node_id``) sees ``node_id``."""
        out: dict[str, MemberState | None] = {}
        for peer in self.live():
            if peer.node_id == node_id:
                continue
            member = peer.node.membership.get(node_id)
            out[peer.node_id] = None if member is None else member.state
        return out

    def job_finished(self, job: str, *, delivered: bool = True) -> bool:
        """Every live peer sees ``job`` done (or failed/cancelled), every frame delivered."""
        for peer in self.live():
            ledger = peer.node.ledger
            if ledger.job(job) is None:
                if job in ledger.archived():
                    continue
                return False
            state = ledger.job_state(job)
            if state == JobState.ACTIVE or state == JobState.PAUSED:
                return False
            if delivered and state == JobState.DONE:
                spec = ledger.job(job)
                assert spec is not None
                if ledger.delivered_count(job) < spec.frame_count:
                    return False
        return True

    def frame_statuses(self, job: str, peer: SimPeer | None = None) -> dict[int, Status]:
        """Every frame of ``job`` and its status, as ``peer`` (default: any live one) sees it."""
        peer = peer or self.live()[0]
        ledger = peer.node.ledger
        spec = ledger.job(job)
        assert spec is not None, f"{peer.node.name} does not know job {job}"
        return {f: ledger.frame(job, f).status for f in spec.frames}

    def expected_files(self, job: str, peer: SimPeer | None = None) -> dict[str, bytes]:
        """Output name -> the bytes the winning done records name (read from the renderers'
        stores), for every done frame: what the submitter's folder must hold."""
        peer = peer or self.live()[0]
        ledger = peer.node.ledger
        out: dict[str, bytes] = {}
        for _frame, record in sorted(ledger.frame_records(job).items()):
            if record.status != Status.DONE:
                continue
            for output in record.outputs:
                out[output.name] = self.blob_bytes(output.digest.hex())
        return out

    def blob_bytes(self, digest: str) -> bytes:
        for peer in self.peers.values():
            if peer.node.store.has(digest):
                return peer.node.store.path(digest).read_bytes()
        raise AssertionError(f"no peer holds blob {digest[:12]}")

    # --- the farm-wide check ------------------------------------------------------------------

    def check_invariants(self, *, expect_finished: bool = True) -> Invariants:
        """DESIGN.md's invariants over the whole farm, once gossip has quiesced: every frame of
        every job that was not cancelled is done or failed (a failed job says why); every
        replica's ledger digest is equal; every delivered file holds the bytes the winning done
        record names. Raises AssertionError naming what broke; returns the figures."""
        live = self.live()
        assert live, "no live peer to check"
        digests = {p.name: p.node.ledger.state_digest() for p in live}
        assert len(set(digests.values())) == 1, f"replicas diverged: {digests}"
        ledger = live[0].node.ledger
        frames = delivered_files = 0
        for spec in ledger.jobs():
            state = ledger.job_state(spec.id)
            if state == JobState.CANCELLED:
                continue
            frames += spec.frame_count
            if expect_finished:
                assert state in (JobState.DONE, JobState.FAILED), (
                    f"job {spec.name} is {state.value}: {ledger.counts(spec.id)}"
                )
            if state == JobState.FAILED and ledger.counts(spec.id).failed < spec.frame_count:
                halted = ledger.halted(spec.id)
                failed_frames = [
                    f for f, r in ledger.frame_records(spec.id).items() if r.status == Status.FAILED
                ]
                assert halted or failed_frames, f"job {spec.name} failed without a reason"
            submitter = self.peers.get(spec.submitted_by)
            if submitter is None or submitter not in live:
                continue
            folder = Path(spec.output)
            ours = read_names(submitter.data_dir / DELIVERIES / spec.id)
            for frame, record in ledger.frame_records(spec.id).items():
                if record.status != Status.DONE or not ledger.delivered(spec.id, frame):
                    continue
                for output in record.outputs:
                    path = delivered_path(folder, output.name, ours)
                    assert path is not None, f"{spec.name} frame {frame}: {output.name} missing"
                    data = path.read_bytes()
                    assert hashlib.sha256(data).digest() == output.digest, (
                        f"{spec.name} frame {frame}: {path} holds {data!r}, not what the "
                        "ledger's winning done record names"
                    )
                    delivered_files += 1
        completed = self.log.completed()
        per_frame: dict[tuple[str, int], int] = {}
        for render in completed:
            key = (render.job, render.frame)
            per_frame[key] = per_frame.get(key, 0) + 1
        duplicates = sum(n - 1 for n in per_frame.values())
        return Invariants(len(ledger.jobs()), frames, len(completed), duplicates, delivered_files)


def delivered_path(folder: Path, name: str, ours: set[str]) -> Path | None:
    """Where the delivery rule put output ``name``: its own name, or the first ``name (n)``
    variant, skipping files this job did not write (``ours``: the names it wrote)."""
    stem, suffix = split_suffix(name)
    for n in range(1, 1000):
        candidate = name if n == 1 else f"{stem} ({n}){suffix}"
        path = folder / candidate
        if not path.exists():
            return None
        if candidate in ours:
            return path
    return None


def output_files(folder: Path) -> dict[str, bytes]:
    """File name -> bytes of every file in a delivery folder (hidden partial files excluded)."""
    if not folder.exists():
        return {}
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if not p.name.startswith(".")}
