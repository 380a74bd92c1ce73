"""One peer of the farm: the trio services around the pure cores.

Owns the daemon's tasks and nothing else: it reads datagrams and streams, feeds the membership
table and the ledger, sends what they return, runs renders in free slots, renews leases,
delivers outputs to this peer when it submitted the job, and persists the ledger. Every rule
lives in a pure module (``ledger``, ``gossip.membership``, ``scheduler``); this module only
wires them to the network, the clock and the disk. The parts are injected, so the same node runs
on real sockets (``peerfarm.daemon``) or on the in-memory network under trio's MockClock.

Task layout (one nursery): datagram reader, membership ticker, push-pull syncer, stream server
(sync and blob requests), scheduler, lease renewer, deliverer, ledger flusher.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import shutil
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from . import __version__
from .errors import (
    DecodeError,
    LedgerError,
    MessageTooLarge,
    PeerfarmError,
    RemoteProtocolError,
    StoreError,
    TransportError,
    UsageError,
)
from .files.names import safe_join, safe_name
from .files.store import ContentStore
from .files.transfer import fetch_blob, serve_blob
from .gossip.config import GossipConfig
from .gossip.membership import T_GOSSIP as T_MEMBER_GOSSIP
from .gossip.membership import Alive as AliveItem
from .gossip.membership import (
    Member,
    MemberAlive,
    MemberDied,
    MemberJoined,
    MemberLeft,
    Membership,
    MemberState,
    MemberSuspected,
    MemberUpdated,
    UserBroadcast,
)
from .gossip.transport import (
    PROTOCOL_VERSION,
    Address,
    ForeignPeer,
    Stream,
    Transport,
    versions_text,
)
from .ledger import Ledger, LostClaim, Output, codec
from .ledger.codec import Delta
from .ledger.model import FrameRecord, JobSpec, JobState, Status
from .ledger.store import LedgerStore
from .renderers.base import Progress, Renderer, RenderFailed, RenderTask, frame_stem
from .scheduler import eligibility
from .scheduler.leases import LeaseTable
from .scheduler.planner import Claim, Planner

log = logging.getLogger("peerfarm")

T_LEDGER = "L"  # datagram: fresh ledger deltas pushed at once. Wire name: append-only.
T_SYNC = "sync"  # stream: push-pull request (membership table + ledger watermarks)
T_SYNC_REPLY = "sync-r"
T_DELTAS = "deltas"
T_END = "end"
T_GET = "get"  # stream: blob request (peerfarm.files.transfer)

SYNC_BATCH = 1_000  # deltas per stream message
MAX_PUSH_BYTES = 1_100  # payload budget of an immediate ledger push datagram
DELIVERY_CONCURRENCY = 8  # outputs fetched at once by a submitting peer
DELIVERY_RESCAN = 5.0  # seconds between full scans for undelivered frames
PUSH_COALESCE = 0.002  # seconds writes wait to share an immediate-push datagram
OWN_JOBS_FILE = "submitted"  # data dir file: ids of the jobs submitted here, one a line


@dataclass(slots=True)
class Running:
    """A render in progress on this peer."""

    job: str
    frames: tuple[int, ...]
    claims: dict[int, FrameRecord]
    scope: trio.CancelScope
    started: float
    progress: Progress | None = None
    stop_reason: str | None = None
    slot_freed: bool = False


#: Seconds between two notices to a peer that speaks a protocol we do not (it logs them).
INCOMPATIBLE_NOTICE_INTERVAL = 5.0
#: Seconds of silence after which an incompatible peer leaves ``peers``.
INCOMPATIBLE_FORGET_AFTER = 600.0


@dataclass(slots=True)
class IncompatiblePeer:
    """A peer refused because no protocol version is spoken by both (never in membership)."""

    peer: ForeignPeer
    first_seen: float
    last_seen: float
    last_notice: float = -math.inf

    @property
    def reason(self) -> str:
        return f"incompatible: {self.peer.describe()}"


@dataclass(slots=True)
class NodeStats:
    frames_rendered: int = 0
    frames_failed: int = 0
    frames_lost: int = 0  # renders stopped because another peer won the claim
    takeovers: int = 0
    render_seconds: float = 0.0
    deltas_sent: int = 0
    deltas_received: int = 0
    syncs: int = 0
    sync_failures: int = 0
    bad_messages: int = 0
    delivered: int = 0
    delivery_failures: int = 0
    transfer_bytes: int = 0
    duplicate_frames: int = 0
    render_seconds_by_peer: dict[str, float] = field(default_factory=dict)


@dataclass
class NodeParts:
    """Everything a node needs, built by the daemon (real) or a simulation (fake)."""

    node_id: str
    name: str
    config: GossipConfig
    transport: Transport
    ledger: Ledger
    store: ContentStore
    data_dir: Path
    renderers: dict[str, Renderer]
    slots: int = 1
    tags: Sequence[str] = ()
    allow_command: bool = False
    allow_scripts: bool = False
    ledger_store: LedgerStore | None = None
    frame_timeout: float | None = None
    max_failures_per_job: int = 3
    #: Seconds a finished job (done, failed or cancelled, every done frame delivered) stays in
    #: the ledger before its submitter archives it to a small tombstone. None: never.
    archive_after: float | None = 7 * 24 * 3600.0
    #: Seconds after start before the first claim, so a restarted peer hears the farm's
    #: claims (and its peers, for homes) before it picks work; 0 in simulations.
    settle: float = 0.0
    prefer_home: bool = True
    wall_ms: Callable[[], int] = field(default=lambda: int(time.time() * 1000))
    rng: random.Random = field(default_factory=random.Random)
    incarnation: int = 0
    extra_meta: dict[str, Any] = field(default_factory=dict)
    #: Renderer name -> version advertised in the metadata; Blender's may be a list of every
    #: installed version, ascending (see peerfarm.scheduler.eligibility).
    renderer_versions: dict[str, str | list[str]] = field(default_factory=dict)
    #: Shared-storage mode (a NAS mounted on every peer, perhaps at different paths): scenes
    #: under it are read in place and outputs written there; nothing is transferred.
    shared_root: Path | None = None


class Node:
    """A peer: gossip, ledger, scheduling, rendering and delivery."""

    def __init__(self, parts: NodeParts) -> None:
        self.parts = parts
        self.node_id = parts.node_id
        self.name = parts.name
        self.config = parts.config
        self.transport = parts.transport
        self.ledger = parts.ledger
        self.store = parts.store
        self.data_dir = parts.data_dir
        self.work_dir = parts.data_dir / "work"
        self.stats = NodeStats()
        self.leases = LeaseTable(parts.config.lease_timeout)
        self.planner = Planner(parts.node_id, prefer_home=parts.prefer_home)
        self.running: dict[tuple[str, int], Running] = {}
        self.generation = 0
        self._changed = trio.Event()
        self._wake_scheduler = trio.Event()
        self._wake_deliverer = trio.Event()
        self._sync_requests: trio.MemorySendChannel[Address]
        self._sync_receive: trio.MemoryReceiveChannel[Address]
        self._sync_requests, self._sync_receive = trio.open_memory_channel(64)
        self._stopping = False
        self._nursery: trio.Nursery | None = None
        self._slots = trio.Semaphore(max(1, parts.slots))
        self._fail_counts: dict[str, int] = {}
        self._finished_at: dict[str, float] = {}
        self._trash_event = trio.Event()
        self._synced = trio.Event()  # set after the first complete push-pull
        self._outbox: list[Any] = []  # encoded deltas waiting for the immediate push
        self._outbox_ready = trio.Event()
        self._deliver_dirty: dict[str, set[int]] = {}  # frames done since the last round
        self._deliver_full_at = 0.0  # next full scan (retries failed deliveries)
        self._started = trio.current_time()
        self.incompatible: dict[str, IncompatiblePeer] = {}
        # Jobs submitted through this peer's own control facade. Only these are delivered: a
        # spec's ``submitted_by`` and ``output`` are just fields any keyed peer can write.
        self._own_jobs_path = parts.data_dir / OWN_JOBS_FILE
        self._own_jobs: set[str] = _read_own_jobs(self._own_jobs_path)
        self._refused_jobs: set[str] = set()
        self.membership = Membership(
            parts.node_id,
            parts.transport.local_address,
            self._meta(),
            parts.config,
            parts.rng,
            trio.current_time(),
            protocol=PROTOCOL_VERSION,
            incarnation=parts.incarnation,
        )
        now = trio.current_time()
        for spec in self.ledger.jobs():
            for frame, record in self.ledger.claimed_frames(spec.id):
                self.leases.observe(spec.id, frame, record, now)

    # ----------------------------------------------------------------------------------
    # metadata and helpers

    def _meta(self) -> dict[str, Any]:
        import platform
        import socket

        renderers = dict(self.parts.renderer_versions)
        if not self.parts.allow_command:
            renderers.pop("command", None)
        meta: dict[str, Any] = {
            "name": self.name[:64],
            "slots": self.parts.slots,
            "renderers": renderers,
            "cmd": self.parts.allow_command,
            "host": socket.gethostname()[:64],
            "os": f"{platform.system()} {platform.release()}"[:64],
            "py": platform.python_version(),
            "pf": __version__,
        }
        if self.parts.tags:
            meta["tags"] = list(self.parts.tags)[:8]
        if self.parts.shared_root is not None:
            meta["shared"] = True
        meta.update(self.parts.extra_meta)
        return meta

    def _now(self) -> float:
        return trio.current_time()

    def _wall(self) -> int:
        return self.parts.wall_ms()

    def _touch(self) -> None:
        self.generation += 1
        self._changed.set()
        self._changed = trio.Event()
        self._wake_scheduler.set()
        self._wake_deliverer.set()

    async def wait_for_change(self, since: int, timeout: float) -> int:
        if self.generation == since:
            with trio.move_on_after(timeout):
                await self._changed.wait()
        return self.generation

    def members(self) -> list[Member]:
        return self.membership.members()

    def address_of(self, node_id: str) -> Address | None:
        member = self.membership.get(node_id)
        return None if member is None else member.address

    def add_own_job(self, job: str) -> None:
        """Remember (on disk) that ``job`` was submitted here, so its outputs are delivered."""
        if job in self._own_jobs:
            return
        self._own_jobs.add(job)
        try:
            with self._own_jobs_path.open("a") as fh:
                fh.write(job + "\n")
        except OSError as exc:
            log.error("cannot record job %s in %s: %s", job[:8], self._own_jobs_path, exc)

    def is_own_job(self, job: str) -> bool:
        return job in self._own_jobs

    # ----------------------------------------------------------------------------------
    # the content store's disk budget

    def needed_blobs(self) -> set[str]:
        """Digests a live job still needs: the scene and assets of a job with frames left to
        render, and the outputs of done frames not yet delivered. Archived jobs need nothing."""
        needed: set[str] = set()
        for spec in self.ledger.jobs():
            state = self.ledger.job_state(spec.id)
            if state in (JobState.ACTIVE, JobState.PAUSED):
                needed.add(spec.scene.digest.hex())
                needed.update(a.digest.hex() for a in spec.assets)
            for frame, record in self.ledger.frame_records(spec.id).items():
                if record.status == Status.DONE and not self.ledger.delivered(spec.id, frame):
                    needed.update(o.digest.hex() for o in record.outputs)
        return needed

    async def make_room(self, needed: int) -> None:
        """Evict least-recently-used blobs no live job needs until ``needed`` more bytes fit
        under ``--store-limit``. StoreFull (a StoreError) when they cannot."""
        if self.store.limit_bytes is None:
            return
        pinned = self.needed_blobs()
        evicted = await trio.to_thread.run_sync(
            lambda: self.store.evict(needed=needed, pinned=pinned.__contains__)
        )
        if evicted:
            log.info("store limit: evicted %d unused file%s", len(evicted), _s(evicted))

    # ----------------------------------------------------------------------------------
    # publishing ledger writes

    async def publish(self, deltas: Sequence[Delta]) -> None:
        """Spread local writes: pushed at once to a few peers, then piggybacked on gossip."""
        if not deltas:
            return
        self._after_change(deltas)
        encoded = []
        for delta in deltas:
            wire = codec.encode_delta(delta)
            encoded.append(wire)
            key = "/".join(str(part) for part in delta[0])
            try:
                self.membership.queue_broadcast(key, wire)
            except MessageTooLarge:
                # Too big for a datagram (a spec with many assets): push-pull carries it.
                for member in self._sample_peers(self.config.gossip_fanout):
                    self._request_sync(member.address)
        self.stats.deltas_sent += len(encoded)
        self._outbox.extend(encoded)
        self._outbox_ready.set()

    async def _push_loop(self) -> None:
        """Push fresh writes at once; a burst of writes within a few ms shares datagrams."""
        while True:
            await self._outbox_ready.wait()
            await trio.sleep(PUSH_COALESCE)
            await self._flush_outbox()

    async def _flush_outbox(self) -> None:
        self._outbox_ready = trio.Event()
        encoded, self._outbox = self._outbox, []
        targets = self._sample_peers(self.config.gossip_fanout)
        if not encoded or not targets:
            return
        for batch in _batches(encoded, MAX_PUSH_BYTES):
            message = {"t": T_LEDGER, "d": batch}
            for member in targets:
                await self._send(member.address, message)

    def _sample_peers(self, k: int) -> list[Member]:
        peers = [m for m in self.membership.alive_members()]
        self.parts.rng.shuffle(peers)
        return peers[:k]

    async def _send(self, address: Address, message: Any) -> None:
        try:
            await self.transport.send_datagram(address, message)
        except MessageTooLarge:
            log.warning("dropped an oversized datagram to %s:%s", *address)
        except PeerfarmError as exc:
            log.debug("send to %s failed: %s", address, exc)

    def _after_change(self, changed: Sequence[Delta]) -> None:
        """Local bookkeeping for every ledger entry that changed (ours or a peer's)."""
        now = self._now()
        for key, value, _origin, _version in changed:
            kind = key[0]
            if kind == "F" and isinstance(value, FrameRecord):
                job, frame = key[1], key[2]
                self.leases.observe(job, frame, value, now)
                if value.status == Status.DONE:
                    self._deliver_dirty.setdefault(job, set()).add(frame)
                if value.status not in (Status.CLAIMED, Status.DONE, Status.FAILED):
                    self.planner.reopened(job)
                running = self.running.get((job, frame))
                if running is not None:
                    mine = running.claims.get(frame)
                    # Anything but our own claim (renewed or completed) means another peer
                    # owns the frame or finished it already: stop rendering it.
                    if (
                        mine is None
                        or value.node != self.node_id
                        or value.attempt != mine.attempt
                        or value.epoch != mine.epoch
                    ):
                        self._stop(running, "lost")
            elif kind in ("C", "Z", "X"):
                job = key[1]
                if kind == "X" or self.ledger.job_state(job) in (
                    JobState.CANCELLED,
                    JobState.PAUSED,
                ):
                    for running in list(self.running.values()):
                        if running.job == job:
                            self._stop(running, "cancelled" if kind != "Z" else "paused")
                if kind == "X":
                    self.leases.forget_job(job)
                    self.planner.forget(job)
            elif kind == "J":
                self.planner.forget(key[1])
        self._touch()

    def _stop(self, running: Running, reason: str) -> None:
        if running.stop_reason is None:
            running.stop_reason = reason
            running.scope.cancel()

    def merge(self, deltas: Sequence[Delta]) -> list[Delta]:
        changed = self.ledger.merge(deltas, self._wall())
        self.stats.deltas_received += len(deltas)
        if changed:
            self._after_change(changed)
        return changed

    # ----------------------------------------------------------------------------------
    # the daemon

    async def run(
        self,
        *,
        seeds: Sequence[Address] = (),
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run every service until cancelled; leave the farm gracefully when stopped."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(self.transport.serve_streams, self._serve_stream)
                nursery.start_soon(self._datagram_loop)
                nursery.start_soon(self._tick_loop)
                nursery.start_soon(self._sync_loop)
                nursery.start_soon(self._schedule_loop)
                nursery.start_soon(self._renew_loop)
                nursery.start_soon(self._deliver_loop)
                nursery.start_soon(self._flush_loop)
                nursery.start_soon(self._trash_loop)
                nursery.start_soon(self._push_loop)
                if seeds:
                    await self.join(seeds)
                task_status.started()
        finally:
            with trio.CancelScope(shield=True):
                self._flush()

    async def join(self, seeds: Sequence[Address]) -> None:
        for out in self.membership.join(list(seeds), self._now()):
            await self._send(*out)
        for seed in seeds:
            self._request_sync(seed)

    def _request_sync(self, address: Address) -> None:
        with contextlib.suppress(trio.WouldBlock):
            self._sync_requests.send_nowait(address)

    async def leave(self, grace: float = 2.0) -> None:
        """Graceful stop: render nothing new, hand back claims, announce the leave."""
        self._stopping = True
        for running in list(self.running.values()):
            self._stop(running, "stopping")
        with trio.move_on_after(grace):
            while self.running:
                await trio.sleep(0.01)
        released: list[Delta] = []
        for spec in self.ledger.jobs():
            mine = [
                (f, r) for f, r in self.ledger.claimed_frames(spec.id) if r.node == self.node_id
            ]
            if mine:
                released += self.ledger.release(spec.id, mine, self._wall())
        if released:
            await self.publish(released)
        await self._flush_outbox()
        for out in self.membership.leave(self._now()):
            await self._send(*out)
        # Give the leave a moment to go out (and be relayed) before sockets close.
        await trio.sleep(min(0.2, self.config.gossip_interval))
        for out in self.membership.tick(self._now()):
            await self._send(*out)
        self._flush()

    # ----------------------------------------------------------------------------------
    # gossip

    async def _datagram_loop(self) -> None:
        while True:
            datagram = await self.transport.receive_datagram()
            try:
                await self._on_datagram(datagram.sender, datagram.message)
            except RemoteProtocolError as exc:
                self.stats.bad_messages += 1
                log.debug("dropped a bad message from %s: %s", datagram.sender, exc)
            except Exception:  # the daemon never dies from a message
                self.stats.bad_messages += 1
                log.exception("error while handling a message from %s", datagram.sender)

    async def _on_datagram(self, sender: Address, message: Any) -> None:
        if isinstance(message, dict) and message.get("t") == T_LEDGER:
            deltas = codec.decode_deltas(message.get("d"), max_count=1_000)
            self.merge(deltas)
            return
        outs = self.membership.receive(sender, message, self._now())
        for out in outs:
            await self._send(*out)
        await self._membership_events()

    async def _tick_loop(self) -> None:
        while True:
            deadline = self.membership.next_deadline()
            now = self._now()
            wait = min(max(0.0, deadline - now), self.config.gossip_interval)
            await trio.sleep(wait)
            for out in self.membership.tick(self._now()):
                await self._send(*out)
            await self._membership_events()
            await self._check_foreign()

    async def _membership_events(self) -> None:
        for event in self.membership.drain_events():
            if isinstance(event, UserBroadcast):
                try:
                    self.merge([codec.decode_delta(event.payload)])
                except DecodeError as exc:
                    self.stats.bad_messages += 1
                    log.debug("dropped a bad ledger broadcast: %s", exc)
                continue
            member = event.member
            label = f"{member.meta.get('name', member.node_id[:8])} ({member.node_id[:8]})"
            if isinstance(event, MemberJoined):
                log.info("peer joined: %s at %s:%s", label, *member.address)
                self._request_sync(member.address)
            elif isinstance(event, MemberAlive):
                log.info("peer alive again: %s", label)
                self._request_sync(member.address)
            elif isinstance(event, MemberSuspected):
                log.info("peer suspected: %s", label)
            elif isinstance(event, MemberDied):
                log.warning("peer died: %s", label)
            elif isinstance(event, MemberLeft):
                log.info("peer left: %s", label)
            elif isinstance(event, MemberUpdated):
                log.debug("peer updated: %s", label)
            if isinstance(event, MemberJoined | MemberAlive):
                self.incompatible.pop(member.node_id, None)
                if member.protocol != PROTOCOL_VERSION:
                    log.info(
                        "peer %s speaks protocol %s, this peer %s: compatible, working together",
                        label,
                        member.protocol,
                        versions_text(),
                    )
            self._touch()

    async def _check_foreign(self) -> None:
        """Report peers whose datagrams the transport refused for their protocol version:
        one warning each, an entry in ``peers``, and a notice back so that their log says it
        too (they refuse our datagram, and their transport names us the same way)."""
        now = self._now()
        foreign = self.transport.stats.foreign
        while foreign:
            node_id, peer = foreign.popitem()
            known = self.incompatible.get(node_id)
            if known is None or known.peer.version != peer.version:
                known = self.incompatible[node_id] = IncompatiblePeer(peer, now, now)
                log.warning(
                    "refusing peer %s (%s)%s: it %s; upgrade the older peer (docs/operators.md)",
                    peer.name or node_id[:8],
                    node_id[:8],
                    " at {}:{}".format(*peer.address) if peer.address else "",
                    peer.describe(),
                )
                self._touch()
            known.last_seen = now
            known.peer = ForeignPeer(
                node_id,
                peer.version,
                peer.protocol if peer.protocol is not None else known.peer.protocol,
                peer.name or known.peer.name,
                peer.address or known.peer.address,
            )
            if known.peer.address and now - known.last_notice >= INCOMPATIBLE_NOTICE_INTERVAL:
                known.last_notice = now
                await self._send(known.peer.address, self._self_notice())
        for node_id, known in list(self.incompatible.items()):
            if now - known.last_seen > INCOMPATIBLE_FORGET_AFTER:
                del self.incompatible[node_id]
                self._touch()

    def _self_notice(self) -> dict[str, Any]:
        """A gossip datagram carrying only our own alive item: who we are, for a peer that
        cannot read our protocol (its transport names us from it and refuses it)."""
        me = self.membership.get(self.node_id)
        incarnation = self.membership.incarnation
        alive = AliveItem(
            self.node_id,
            incarnation,
            self.transport.local_address,
            me.meta if me is not None else self._meta(),
            PROTOCOL_VERSION,
        )
        return {"t": T_MEMBER_GOSSIP, "f": self.node_id, "i": incarnation, "b": [alive.wire()]}

    async def _sync_loop(self) -> None:
        next_periodic = self._now() + self.config.push_pull_interval * self.parts.rng.uniform(
            0.5, 1.0
        )
        while True:
            address: Address | None = None
            with trio.move_on_at(next_periodic):
                address = await self._sync_receive.receive()
            if address is None:
                next_periodic = self._now() + self.config.push_pull_interval
                peers = self._sample_peers(1)
                if not peers:
                    continue
                address = peers[0].address
            try:
                await self.push_pull(address)
            except PeerfarmError as exc:
                self.stats.sync_failures += 1
                log.debug("push-pull with %s:%s failed: %s", *address, exc)

    async def push_pull(self, address: Address) -> None:
        """Full anti-entropy with one peer: member tables and the ledger, both ways."""
        with trio.fail_after(self.config.stream_timeout * 3):
            stream = await self.transport.connect(address, timeout=self.config.stream_timeout)
            try:
                await stream.send(
                    {
                        "t": T_SYNC,
                        "m": self.membership.push_pull_state(),
                        "w": self.ledger.watermarks(),
                    }
                )
                reply = await stream.receive(timeout=self.config.stream_timeout)
                if not isinstance(reply, dict) or reply.get("t") != T_SYNC_REPLY:
                    raise DecodeError("unexpected reply to a sync request")
                self.membership.merge_push_pull(reply.get("m"), self._now())
                their_marks = codec.decode_watermarks(reply.get("w"))
                await self._receive_deltas(stream)
                self.ledger.absorb_watermarks(their_marks)
                await self._send_deltas(stream, their_marks)
            finally:
                await stream.aclose()
        self.stats.syncs += 1
        self._synced.set()
        await self._membership_events()

    async def _send_deltas(self, stream: Stream, marks: dict[str, int]) -> None:
        batch: list[Any] = []
        for delta in self.ledger.deltas_since(marks):
            batch.append(codec.encode_delta(delta))
            if len(batch) >= SYNC_BATCH:
                await stream.send({"t": T_DELTAS, "d": batch})
                batch = []
                await trio.lowlevel.checkpoint()
        if batch:
            await stream.send({"t": T_DELTAS, "d": batch})
        await stream.send({"t": T_END})

    async def _receive_deltas(self, stream: Stream) -> None:
        while True:
            message = await stream.receive(timeout=self.config.stream_timeout)
            if not isinstance(message, dict):
                raise DecodeError("expected a map")
            if message.get("t") == T_END:
                return
            if message.get("t") != T_DELTAS:
                raise DecodeError(f"unexpected message {message.get('t')!r} in a sync")
            self.merge(codec.decode_deltas(message.get("d"), max_count=SYNC_BATCH))

    async def _serve_stream(self, stream: Stream) -> None:
        try:
            while True:
                try:
                    request = await stream.receive(timeout=self.config.stream_timeout * 6)
                except TransportError:
                    return
                if not isinstance(request, dict):
                    raise DecodeError("expected a map")
                kind = request.get("t")
                if kind == T_SYNC:
                    self.membership.merge_push_pull(request.get("m"), self._now())
                    their_marks = codec.decode_watermarks(request.get("w"))
                    await stream.send(
                        {
                            "t": T_SYNC_REPLY,
                            "m": self.membership.push_pull_state(),
                            "w": self.ledger.watermarks(),
                        }
                    )
                    await self._send_deltas(stream, their_marks)
                    await self._receive_deltas(stream)
                    self.ledger.absorb_watermarks(their_marks)
                    self.stats.syncs += 1
                    self._synced.set()
                    await self._membership_events()
                    return
                if kind == T_GET:
                    await serve_blob(stream, self.store, request)
                    continue
                raise DecodeError(f"unknown stream request {kind!r}")
        except RemoteProtocolError as exc:
            self.stats.bad_messages += 1
            log.debug("bad stream from %s: %s", stream.remote, exc)
        finally:
            await stream.aclose()

    # ----------------------------------------------------------------------------------
    # scheduling and rendering

    def capable_peers(self, spec: JobSpec) -> list[str]:
        """The job's home set: peers that can render it and have not left (dead: for a while)."""
        return eligibility.capable_peers(
            spec,
            self.membership.members(),
            banned=self.ledger.banned(spec.id),
            now=self._now(),
            home_grace=self.config.home_grace,
            self_id=self.node_id,
            stopping=self._stopping,
        )

    def _gone(self) -> list[str]:
        return [
            m.node_id
            for m in self.membership.members()
            if m.state in (MemberState.DEAD, MemberState.LEFT)
        ]

    async def _schedule_loop(self) -> None:
        if self.parts.settle > 0 and self.ledger.jobs():
            # Until the first full sync with a peer (or the settle time): a restarted peer
            # must hear the farm's claims before it picks work from what it remembers.
            with trio.move_on_after(self.parts.settle):
                await self._synced.wait()
        while True:
            self._wake_scheduler = trio.Event()
            await self._schedule_once()
            next_expiry = self.leases.next_expiry(exclude=self.node_id)
            timeout = 1.0 if next_expiry is None else max(0.01, next_expiry - self._now() + 0.01)
            with trio.move_on_after(min(timeout, 1.0)):
                await self._wake_scheduler.wait()

    async def _schedule_once(self) -> None:
        if self._stopping or self._nursery is None or self.parts.slots <= 0:
            return
        free = self._slots.value
        if free <= 0:
            return
        now = self._now()
        expired = self.leases.expired(now, gone=self._gone(), exclude=self.node_id)
        capable = {}
        for spec in self.ledger.jobs():
            if self.ledger.job_state(spec.id) == JobState.ACTIVE:
                capable[spec.id] = self.capable_peers(spec)
        busy = list(self.running)
        members = self.membership.members()
        alive = [m.node_id for m in members if m.state == MemberState.ALIVE]
        claimed = self.leases.claims_by_node()
        saturated = [
            m.node_id
            for m in members
            if claimed.get(m.node_id, 0) >= max(1, int(m.meta.get("slots", 1) or 1))
        ]
        claims = self.planner.plan(
            self.ledger,
            free_slots=free,
            capable=capable,
            expired=expired,
            busy=busy,
            alive=alive,
            saturated=saturated,
        )
        for claim in claims:
            try:
                deltas = self.ledger.claim(
                    claim.job, claim.frames, self._wall(), takeover=claim.takeover
                )
            except LedgerError as exc:
                log.debug("claim of %s %s failed: %s", claim.job, claim.frames, exc)
                continue
            if claim.takeover:
                self.stats.takeovers += len(claim.frames)
            records = {d[0][2]: d[1] for d in deltas if isinstance(d[1], FrameRecord)}
            await self._slots.acquire()
            running = Running(claim.job, claim.frames, records, trio.CancelScope(), self._now())
            for frame in claim.frames:
                self.running[(claim.job, frame)] = running
            await self.publish(deltas)
            log.info(
                "claimed %s frame%s %s%s",
                self._job_label(claim.job),
                "s" if len(claim.frames) > 1 else "",
                _frames_text(claim.frames),
                " (takeover)" if claim.takeover else "" if claim.home else " (stolen)",
            )
            self._nursery.start_soon(self._render, running, claim)

    def _job_label(self, job: str) -> str:
        spec = self.ledger.job(job)
        return f"{spec.name} ({job[:8]})" if spec else job[:8]

    async def _render(self, running: Running, claim: Claim) -> None:
        spec = self.ledger.job(claim.job)
        started = self._now()
        try:
            if spec is not None:
                await self._render_guarded(spec, running)
        finally:
            for frame in running.frames:
                if self.running.get((running.job, frame)) is running:
                    del self.running[(running.job, frame)]
            self._free_slot(running)
            self.stats.render_seconds += self._now() - started
            self._touch()

    def _free_slot(self, running: Running) -> None:
        """Give the render slot back (once) and let the scheduler fill it."""
        if not running.slot_freed:
            running.slot_freed = True
            self._slots.release()
            self._wake_scheduler.set()

    async def _render_guarded(self, spec: JobSpec, running: Running) -> None:
        """Render, and turn every way a render can end into the right ledger record."""
        try:
            with running.scope:
                timeout = self.parts.frame_timeout
                with trio.fail_after(timeout * len(running.frames) if timeout else math.inf):
                    await self._render_frames(spec, running)
            if running.stop_reason is not None:
                await self._after_stop(spec, running)
        except trio.TooSlowError:
            reason = f"timed out after {self.parts.frame_timeout:g} s per frame"
            await self._record_failure(spec, running, reason, "")
        except RenderFailed as exc:
            await self._record_failure(spec, running, exc.reason, exc.log_tail)
        except (StoreError, TransportError, RemoteProtocolError, OSError) as exc:
            await self._record_failure(spec, running, f"{type(exc).__name__}: {exc}", "")
        except LostClaim as exc:
            self.stats.frames_lost += 1
            log.info("%s", exc)

    async def _after_stop(self, spec: JobSpec, running: Running) -> None:
        reason = running.stop_reason
        if reason == "lost":
            self.stats.frames_lost += 1
            log.info(
                "stopped %s %s: another peer owns it", self._job_label(spec.id), running.frames
            )
        elif reason in ("paused", "stopping"):
            mine = [(f, c) for f, c in running.claims.items()]
            await self.publish(self.ledger.release(spec.id, mine, self._wall()))
        elif reason == "cancelled":
            log.info("stopped %s: cancelled", self._job_label(spec.id))
            mine = [(f, c) for f, c in running.claims.items()]
            await self.publish(self.ledger.release(spec.id, mine, self._wall()))

    async def _render_frames(self, spec: JobSpec, running: Running) -> None:
        renderer = self.parts.renderers.get(spec.renderer)
        if renderer is None:
            raise RenderFailed(f"renderer {spec.renderer!r} is not available on {self.name}")
        scene = await self._materialize_scene(spec)
        out_dir = (
            self.work_dir
            / spec.id
            / f"out-{running.frames[0]}-{self.parts.rng.getrandbits(32):08x}"
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        try:
            task = RenderTask(
                job_id=spec.id,
                frames=running.frames,
                scene=scene,
                scene_name=spec.scene.name,
                options={
                    **spec.options,
                    "frames_total": spec.frame_count,
                    "frame_first": spec.frames[0],
                },
                output_dir=out_dir,
                work_dir=self.work_dir / spec.id,
                allow_scripts=(spec.renderer == "command" and self.parts.allow_command)
                or (bool(spec.options.get("allow_scripts")) and self.parts.allow_scripts),
            )

            def on_progress(progress: Progress) -> None:
                running.progress = progress

            result = await renderer.render(task, on_progress=on_progress)
            # The renderer is done with the machine: start the next frame while this one's
            # outputs are stored and its completion is gossiped.
            self._free_slot(running)
            per_frame = result.seconds / max(1, len(running.frames))
            deltas: list[Delta] = []
            for frame in running.frames:
                files = result.outputs.get(frame, [])
                outputs = []
                await self.make_room(sum(path.stat().st_size for path in files))
                shared_out = self.shared_path(spec.options.get("shared_output"))
                for path, name in zip(files, output_names(frame, files), strict=True):
                    if shared_out is not None:
                        await trio.to_thread.run_sync(_copy_atomic, path, shared_out / name)
                    size = path.stat().st_size
                    digest = await trio.to_thread.run_sync(self.store.adopt_file, path)
                    outputs.append(Output(name, bytes.fromhex(digest), size))
                try:
                    deltas += self.ledger.complete(
                        spec.id, frame, running.claims[frame], outputs, per_frame
                    )
                except LostClaim:
                    self.stats.duplicate_frames += 1
                    continue
                self.stats.frames_rendered += 1
                self.stats.render_seconds_by_peer[self.name] = (
                    self.stats.render_seconds_by_peer.get(self.name, 0.0) + per_frame
                )
            await self.publish(deltas)
            log.info(
                "rendered %s frame%s %s in %.2f s",
                self._job_label(spec.id),
                "s" if len(running.frames) > 1 else "",
                _frames_text(running.frames),
                result.seconds,
            )
        finally:
            self._discard(out_dir)

    def _discard(self, folder: Path) -> None:
        """Move a finished render's scratch folder to the trash, emptied in the background:
        removing folders can cost milliseconds on some file systems, not worth a frame's time."""
        trash = self.work_dir / "trash"
        try:
            trash.mkdir(exist_ok=True)
            folder.rename(trash / f"{folder.name}-{self.parts.rng.getrandbits(32):08x}")
        except OSError:
            shutil.rmtree(folder, ignore_errors=True)
        self._trash_event.set()

    async def _trash_loop(self) -> None:
        trash = self.work_dir / "trash"
        while True:
            await self._trash_event.wait()
            self._trash_event = trio.Event()
            await trio.sleep(2.0)
            await trio.to_thread.run_sync(_empty_folder, trash)

    async def _record_failure(
        self, spec: JobSpec, running: Running, reason: str, tail: str
    ) -> None:
        deltas: list[Delta] = []
        seconds = self._now() - running.started
        for frame, claim in running.claims.items():
            try:
                deltas += self.ledger.fail(
                    spec.id, frame, claim, reason, tail, seconds, self._wall()
                )
            except LostClaim:
                continue
            self.stats.frames_failed += 1
        self._fail_counts[spec.id] = self._fail_counts.get(spec.id, 0) + 1
        log.warning(
            "%s frames %s failed: %s",
            self._job_label(spec.id),
            _frames_text(running.frames),
            reason,
        )
        if self._fail_counts[
            spec.id
        ] >= self.parts.max_failures_per_job and self.node_id not in self.ledger.banned(spec.id):
            why = f"failed {self._fail_counts[spec.id]} times on {self.name}: {reason}"
            deltas += self.ledger.ban(spec.id, why, self._wall())
            log.warning("stopped taking %s: %s", self._job_label(spec.id), why)
        await self.publish(deltas)

    def shared_path(self, relative: object) -> Path | None:
        """``relative`` under this peer's --shared-root, if it has one (checked to stay inside)."""
        root = self.parts.shared_root
        if root is None or not isinstance(relative, str) or not relative:
            return None
        path = root
        for part in relative.replace("\\", "/").split("/"):
            if part:
                path = safe_join(path, safe_name(part))
        return path

    async def _materialize_scene(self, spec: JobSpec) -> Path:
        """The scene (and its assets) as local files under the job's work folder."""
        shared = self.shared_path(spec.options.get("shared_scene"))
        if shared is not None:
            if not shared.exists():
                raise StoreError(
                    f"shared scene {spec.options['shared_scene']} not found under "
                    f"--shared-root {self.parts.shared_root}"
                )
            return shared
        job_dir = self.work_dir / spec.id / "input"  # not "scene": archives unpack there
        scene_path = safe_join(job_dir, safe_name(Path(spec.scene.name).name))
        if scene_path.exists():
            return scene_path
        job_dir.mkdir(parents=True, exist_ok=True)
        for ref, target in [(spec.scene, scene_path)] + [
            (a, _asset_path(job_dir, a.name)) for a in spec.assets
        ]:
            digest = ref.digest.hex()
            blob = await self.ensure_blob(digest, prefer=spec.submitted_by, size=ref.size)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".part")
            await trio.to_thread.run_sync(shutil.copyfile, blob, tmp)
            tmp.replace(target)
        return scene_path

    async def ensure_blob(
        self, digest: str, *, prefer: str | None = None, size: int | None = None
    ) -> Path:
        """The local path of a blob, fetched from a peer that has it if needed. ``size`` (when
        the ledger says it) makes room under the store limit before the download."""
        if self.store.has(digest):
            return self.store.path(digest)
        if size is not None:
            await self.make_room(size)
        candidates: list[str] = []
        if prefer and prefer != self.node_id:
            candidates.append(prefer)
        others = [m.node_id for m in self.membership.alive_members() if m.node_id not in candidates]
        self.parts.rng.shuffle(others)
        candidates += others
        errors = []
        for node_id in candidates:
            address = self.address_of(node_id)
            if address is None:
                continue

            async def connect(address: Address = address) -> Stream:
                return await self.transport.connect(address, timeout=self.config.stream_timeout)

            try:
                path = await fetch_blob(
                    connect, digest, self.store, timeout=self.config.stream_timeout
                )
                self.stats.transfer_bytes += path.stat().st_size
                return path
            except PeerfarmError as exc:
                errors.append(f"{node_id[:8]}: {exc}")
        raise StoreError(
            f"no peer could provide {digest[:12]}" + (f" ({'; '.join(errors)})" if errors else "")
        )

    async def _renew_loop(self) -> None:
        while True:
            await trio.sleep(self.config.lease_renew_interval)
            deltas: list[Delta] = []
            for running in {id(r): r for r in self.running.values()}.values():
                try:
                    renewed = self.ledger.renew(running.job, list(running.claims.items()))
                except LostClaim:
                    self._stop(running, "lost")
                    continue
                for delta in renewed:
                    record = delta[1]
                    if isinstance(record, FrameRecord):
                        running.claims[delta[0][2]] = record
                deltas += renewed
            await self.publish(deltas)

    # ----------------------------------------------------------------------------------
    # delivery to the submitter

    async def _deliver_loop(self) -> None:
        while True:
            self._wake_deliverer = trio.Event()
            try:
                await self._deliver_once()
                await self._archive_finished()
            except PeerfarmError as exc:
                log.debug("delivery round failed: %s", exc)
            with trio.move_on_after(1.0):
                await self._wake_deliverer.wait()

    async def _archive_finished(self) -> None:
        """The submitter archives its finished, delivered jobs once they are old enough."""
        after = self.parts.archive_after
        if after is None:
            return
        now = self._now()
        deltas: list[Delta] = []
        for spec in self.ledger.jobs():
            if spec.submitted_by != self.node_id:
                continue
            state = self.ledger.job_state(spec.id)
            if state not in (JobState.DONE, JobState.FAILED, JobState.CANCELLED):
                self._finished_at.pop(spec.id, None)
                continue
            if spec.id not in self._finished_at and not all(
                self.ledger.delivered(spec.id, f)
                for f, r in self.ledger.frame_records(spec.id).items()
                if r.status == Status.DONE
            ):
                continue
            since = self._finished_at.setdefault(spec.id, now)
            if now - since >= after:
                deltas += self.ledger.archive(spec.id, self._wall())
                self._finished_at.pop(spec.id, None)
                log.info("archived %s", self._job_label(spec.id))
        await self.publish(deltas)

    async def _deliver_once(self) -> None:
        """Bring every done frame of the jobs this peer submitted into its output folder."""
        todo = []
        now = self._now()
        full = now >= self._deliver_full_at
        if full:
            self._deliver_full_at = now + DELIVERY_RESCAN
        dirty, self._deliver_dirty = self._deliver_dirty, {}
        for spec in self.ledger.jobs():
            if spec.submitted_by != self.node_id or not (full or spec.id in dirty):
                continue
            if not self.is_own_job(spec.id):
                if spec.id not in self._refused_jobs:
                    self._refused_jobs.add(spec.id)
                    log.warning(
                        "not delivering %s to %s: it names this peer as its submitter but was "
                        "not submitted here (a forged job?)",
                        self._job_label(spec.id),
                        spec.output,
                    )
                continue
            records = self.ledger.frame_records(spec.id)
            frames = list(records) if full else sorted(dirty.get(spec.id, ()))
            for frame in frames:
                record = records.get(frame)
                if (
                    record is not None
                    and record.status == Status.DONE
                    and not self.ledger.delivered(spec.id, frame)
                ):
                    todo.append((spec, frame, record))
        if not todo:
            return
        limit = trio.Semaphore(DELIVERY_CONCURRENCY)
        delivered: list[tuple[JobSpec, int, FrameRecord]] = []
        lost: list[tuple[JobSpec, int]] = []

        async def deliver(spec: JobSpec, frame: int, record: FrameRecord) -> None:
            async with limit:
                try:
                    await self._deliver_frame(spec, record)
                except StoreError as exc:
                    self.stats.delivery_failures += 1
                    renderer = self.membership.get(record.node)
                    if renderer is None or renderer.state in (MemberState.DEAD, MemberState.LEFT):
                        # The only copy died with its renderer: render the frame again.
                        lost.append((spec, frame))
                        return
                    log.warning(
                        "cannot deliver %s frame %s yet: %s", self._job_label(spec.id), frame, exc
                    )
                    return
                except (PeerfarmError, OSError) as exc:
                    self.stats.delivery_failures += 1
                    log.warning(
                        "cannot deliver %s frame %s yet: %s", self._job_label(spec.id), frame, exc
                    )
                    return
                delivered.append((spec, frame, record))

        async with trio.open_nursery() as nursery:
            for item in todo:
                nursery.start_soon(deliver, *item)
        deltas: list[Delta] = []
        for spec, frame in lost:
            log.warning(
                "%s frame %s: its outputs were lost with the peer that rendered them; "
                "rendering it again",
                self._job_label(spec.id),
                frame,
            )
            try:
                deltas += self.ledger.retry(spec.id, [frame], self._wall(), clear_bans=False)
            except LedgerError as exc:
                log.debug("cannot reopen frame %s: %s", frame, exc)
        for spec, frame, record in delivered:
            deltas += self.ledger.mark_delivered(spec.id, frame, record.epoch, self._wall())
            self.stats.delivered += 1
        await self.publish(deltas)
        for spec in {id(s): s for s, _f, _r in delivered}.values():
            counts = self.ledger.counts(spec.id)
            if counts.done == counts.total and all(
                self.ledger.delivered(spec.id, f) for f in spec.frames
            ):
                log.info(
                    "job done: %s, every frame delivered to %s",
                    self._job_label(spec.id),
                    spec.output,
                )

    async def _deliver_frame(self, spec: JobSpec, record: FrameRecord) -> None:
        if not record.outputs:
            return
        shared = self.shared_path(spec.options.get("shared_output"))
        if shared is not None and all(
            (shared / o.name).is_file() and (shared / o.name).stat().st_size == o.size
            for o in record.outputs
        ):
            return  # the renderer wrote them to shared storage: nothing to transfer
        folder = Path(spec.output)
        folder.mkdir(parents=True, exist_ok=True)
        overwrite = spec.options.get("overwrite") is True
        written = self.data_dir / "deliveries" / spec.id  # names this job wrote in the folder
        for output in record.outputs:
            ours = _read_own_jobs(written)
            plain = safe_join(folder, output.name)
            if not plain.exists() and not plain.is_symlink():
                target: Path | None = plain  # the common case: no file there, no thread
            else:  # compare contents (hashing) in a thread
                target = await trio.to_thread.run_sync(
                    delivery_target, folder, output, overwrite, ours
                )
            if target is None:
                continue  # already there
            blob = await self.ensure_blob(
                output.digest.hex(), prefer=record.node, size=output.size
            )
            if target.name != output.name:
                log.warning(
                    "%s: %s already holds a different %s that this job did not write; "
                    "delivered as %s instead (submit with --option overwrite=true to replace)",
                    self._job_label(spec.id),
                    folder,
                    output.name,
                    target.name,
                )
            tmp = safe_join(folder, f".{target.name}.part")
            await trio.to_thread.run_sync(shutil.copyfile, blob, tmp)
            written.parent.mkdir(exist_ok=True)
            with written.open("a") as fh:
                fh.write(target.name + "\n")
            tmp.replace(target)

    # ----------------------------------------------------------------------------------
    # persistence

    async def _flush_loop(self) -> None:
        while True:
            await trio.sleep(0.25)
            if self.parts.ledger_store is not None:
                # In this thread: the SQLite connection belongs to the thread that opened it,
                # and take_dirty() must not race the merges made by this thread's tasks.
                try:
                    self._flush()
                except LedgerError as exc:
                    log.error("%s", exc)

    def _flush(self) -> None:
        if self.parts.ledger_store is not None:
            self.parts.ledger_store.flush(self.ledger)

    # ----------------------------------------------------------------------------------
    # queries for interfaces

    def progress_of(self, job: str, frame: int) -> str | None:
        running = self.running.get((job, frame))
        if running is None or running.progress is None:
            return None
        return running.progress.message

    def resolve_job(self, ref: str) -> str:
        ref = ref.strip()
        specs = self.ledger.jobs()
        exact = [s.id for s in specs if s.id == ref]
        if exact:
            return exact[0]
        by_prefix = [s.id for s in specs if ref and s.id.startswith(ref)]
        by_name = [s.id for s in specs if s.name == ref]
        matches = list(dict.fromkeys(by_prefix + by_name))
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise UsageError(f"no job {ref!r}: see `peerfarm status` for the jobs of this farm")
        raise UsageError(
            f"{ref!r} matches {len(matches)} jobs ({', '.join(m[:8] for m in matches)}): "
            "use more of the id"
        )


def _empty_folder(folder: Path) -> None:
    if folder.is_dir():
        for child in folder.iterdir():
            shutil.rmtree(child, ignore_errors=True)


def _copy_atomic(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.part")
    shutil.copyfile(source, tmp)
    tmp.replace(target)


def output_names(frame: int, files: Sequence[Path]) -> list[str]:
    """Names in the job's output folder: the renderer's own when they carry the frame number
    (``frame_0001.png``), otherwise prefixed with it so frames never overwrite each other."""
    stem = frame_stem(frame)
    digits = stem.split("_")[-1]
    names = []
    for path in files:
        name = path.name
        if digits in name:
            names.append(safe_name(name))
        elif len(files) == 1:
            names.append(safe_name(stem + path.suffix))
        else:
            names.append(safe_name(f"{stem}_{name}"))
    return names


def delivery_target(
    folder: Path, output: Output, overwrite: bool, ours: Collection[str]
) -> Path | None:
    """Where to deliver ``output`` in ``folder``; None when an identical file is there already.

    The policy: never overwrite a file this job did not write. The output's own name when it is
    free, holds the same bytes, is one of ``ours`` (written by this job before: a retried frame)
    or the job asked to ``overwrite``; otherwise the first free (or identical, or ours)
    ``stem (2).ext``, ``stem (3).ext``...
    Names pass through ``safe_join`` (UnsafeName for anything that could leave the folder).
    """
    stem, suffix = _split_suffix(output.name)
    for n in range(1, 1000):
        name = output.name if n == 1 else f"{stem} ({n}){suffix}"
        target = safe_join(folder, name)
        if not target.exists() and not target.is_symlink():
            return target
        if _same_content(target, output):
            return None
        if overwrite or name in ours:
            return target
    raise StoreError(f"no free name for {output.name} in {folder}")


def _split_suffix(name: str) -> tuple[str, str]:
    dot = name.rfind(".")
    return (name, "") if dot <= 0 else (name[:dot], name[dot:])


def _same_content(path: Path, output: Output) -> bool:
    import hashlib

    try:
        if not path.is_file() or path.stat().st_size != output.size:
            return False
        with path.open("rb") as fh:
            return hashlib.file_digest(fh, "sha256").digest() == output.digest
    except OSError:
        return False


def _asset_path(job_dir: Path, relative: str) -> Path:
    parts = [safe_name(p) for p in relative.replace("\\", "/").split("/") if p]
    if not parts:
        raise RemoteProtocolError(f"bad asset path {relative!r}")
    path = job_dir
    for part in parts[:-1]:
        path = safe_join(path, part)
    return safe_join(path, parts[-1])


def _read_own_jobs(path: Path) -> set[str]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return set()
    return {line.strip() for line in text.splitlines() if line.strip()}


def _s(items: Sequence[Any]) -> str:
    return "" if len(items) == 1 else "s"


def _frames_text(frames: Sequence[int]) -> str:
    from .frames import format_frames

    return format_frames(frames)


def _batches(items: list[Any], budget: int) -> list[list[Any]]:
    out: list[list[Any]] = []
    batch: list[Any] = []
    size = 0
    for item in items:
        n = len(codec.packb(item))
        if batch and size + n > budget:
            out.append(batch)
            batch, size = [], 0
        if n > budget:
            continue  # too big for a datagram: the broadcast/push-pull path carries it
        batch.append(item)
        size += n
    if batch:
        out.append(batch)
    return out
