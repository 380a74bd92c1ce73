"""The peer's datagram side: membership ticks, incoming datagrams, and pushing fresh writes.

Owns: reading datagrams (membership packets and immediate ledger pushes), running the SWIM
ticker, turning membership events into log lines and sync requests, noticing peers that speak
another protocol, and the outbox of local writes. Its rule for writes is *durability before
gossip*: the outbox is saved to the ledger database before any of it leaves the peer, so a peer
killed at any moment never has sent a write it cannot recover. Fresh writes are pushed at once
to every alive peer up to ``push_fanout`` (a burst of writes within :data:`PUSH_COALESCE`
shares datagrams and one save; a write a control request waits for, such as a submit, goes at
once); only when that leaves peers out are they also queued for
piggybacking on later gossip (datagrams lost on the way are repaired by the push-pull, which
runs well inside a lease); a received broadcast is relayed only when it was news here, so a
stale value never replaces a newer one in the relay queue.

Writes nobody waits for are *deferred* (:func:`push_scope`): a delivery mark, and a finished
frame, which no peer may claim while its lease runs and which only its submitter waits for;
and what a caller publishes as deferred (a peer's first claim of a job: ``Worker._start``).
A finished frame goes at once to its submitter alone, asking it to pass the frame on; deferred
writes ride the next push that carries a write someone does wait for (a finished render's next
claim), or go to every peer ``push_defer_max`` seconds after the first of them, or at once when
one ends its job here. At the end of a job, when every peer finishes its last frame together,
the submitter hears each at once while the datagrams to the other peers wait until it is done.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import trio

from ..errors import DecodeError, LedgerError, MessageTooLarge, PeerfarmError, RemoteProtocolError
from ..gossip.membership import (
    Member,
    MemberAlive,
    MemberDied,
    MemberJoined,
    MemberLeft,
    MemberState,
    MemberSuspected,
    MemberUpdated,
    UserBroadcast,
)
from ..gossip.swim_wire import T_GOSSIP as T_MEMBER_GOSSIP
from ..gossip.swim_wire import Alive as AliveItem
from ..gossip.transport import SPOKEN_VERSION, Address, ForeignPeer, versions_text
from ..ledger import codec
from ..ledger.codec import Delta
from ..ledger.keys import Kind, broadcast_key
from ..ledger.model import FrameRecord, Status
from .parts import INCOMPATIBLE_FORGET_AFTER, INCOMPATIBLE_NOTICE_INTERVAL, IncompatiblePeer

if TYPE_CHECKING:
    from .node import Node

log = logging.getLogger("peerfarm")

T_LEDGER = "L"  # datagram: fresh ledger deltas pushed at once. Wire name: append-only.

MAX_PUSH_BYTES = 1_100  # payload budget of an immediate ledger push datagram
PUSH_COALESCE = 0.005  # seconds writes wait to share an immediate-push datagram (and a save)
#: Seconds at most a push waits for the writes a finished render still owes (``hold_push``).
PUSH_HOLD_MAX = 0.05
SAVE_INTERVAL = 0.25  # seconds between saves of merged (remote) changes
SAVE_ERROR_EVERY = 30.0  # seconds between two log lines about a ledger that cannot be saved


class GossipService:
    """Datagrams in and out for one node."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._outbox: list[Delta] = []
        self._outbox_ready = trio.Event()
        self._awaited = trio.Event()  # someone waits for the outbox's save: no coalescing pause
        self._saved = trio.Event()  # set (and replaced) after every successful save
        self._holds = 0  # renders whose finished frames are still to be written (hold_push)
        self._unheld = trio.Event()  # set when the last hold is released
        self._deferred: dict[Any, Delta] = {}  # saved, not yet pushed to every peer (by key)
        self._deferred_due = math.inf  # when the deferred writes go on their own
        self._deferred_keys: set[Any] = set()  # keys in the outbox published ``deferred``
        self._last_save_error = -SAVE_ERROR_EVERY
        self.save_error: str | None = None

    # ----------------------------------------------------------------------------------
    # tasks

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._datagram_loop)
            nursery.start_soon(self._tick_loop)
            nursery.start_soon(self._push_loop)
            nursery.start_soon(self._save_loop)
            task_status.started()

    async def send(self, address: Address, message: Any) -> None:
        try:
            await self.node.transport.send_datagram(address, message)
        except MessageTooLarge:
            log.warning("dropped an oversized datagram to %s:%s", *address)
        except PeerfarmError as exc:
            log.debug("send to %s failed: %s", address, exc)

    def sample_peers(self, k: int) -> list[Member]:
        peers = list(self.node.membership.alive_members())
        self.node.parts.rng.shuffle(peers)
        return peers[:k]

    async def _datagram_loop(self) -> None:
        node = self.node
        while True:
            datagram = await node.transport.receive_datagram()
            await node.gate()
            try:
                await self._on_datagram(datagram.sender, datagram.message)
            except RemoteProtocolError as exc:
                node.stats.bad_messages += 1
                log.debug("dropped a bad message from %s: %s", datagram.sender, exc)
            except Exception:  # the daemon never dies from a message
                node.stats.bad_messages += 1
                log.exception("error while handling a message from %s", datagram.sender)

    async def _on_datagram(self, sender: Address, message: Any) -> None:
        node = self.node
        if isinstance(message, dict) and message.get("t") == T_LEDGER:
            deltas = codec.decode_deltas(message.get("d"), max_count=1_000)
            node.merge(deltas)
            if message.get("r") is True:
                # Sent to this peer alone (a finished frame to its submitter): pass it on with
                # this peer's next push, so the news survives its sender dying right after.
                self.defer([d for d in deltas if not node.ledger.superseded(d)])
            return
        for address, out in node.membership.receive(sender, message, node.now()):
            await self.send(address, out)
        await self.membership_events()

    async def _tick_loop(self) -> None:
        node = self.node
        last = node.now()
        while True:
            deadline = node.membership.next_deadline()
            wait = min(max(0.0, deadline - node.now()), node.config.gossip_interval)
            await trio.sleep(wait)
            await node.gate()
            now = node.now()
            if now - last > node.config.lease_timeout / 2:
                # This process was stopped (SIGSTOP, a suspended laptop) or starved: what it
                # timed while asleep is stale. Leases restart their clocks instead of lapsing.
                log.warning("this peer was frozen for %.1f s: re-timing every lease", now - last)
                node.leases.restart_all(now)
            last = now
            for address, out in node.membership.tick(now):
                await self.send(address, out)
            await self.membership_events()
            await self._check_foreign()

    async def membership_events(self) -> None:
        node = self.node
        for event in node.membership.drain_events():
            if isinstance(event, UserBroadcast):
                try:
                    delta = codec.decode_delta(event.payload)
                except DecodeError as exc:
                    node.stats.bad_messages += 1
                    log.debug("dropped a bad ledger broadcast: %s", exc)
                    continue
                node.merge([delta])
                if not node.ledger.superseded(delta):
                    # The newest value of its key here (news, or what a direct push brought
                    # already): pass it on. A stale one never is, so it cannot replace newer
                    # news queued under the same key.
                    node.membership.relay(event)
                continue
            member = event.member
            label = f"{member.meta.get('name', member.node_id[:8])} ({member.node_id[:8]})"
            if isinstance(event, MemberJoined):
                log.info("peer joined: %s at %s:%s", label, *member.address)
                node.sync.request(member.address)
            elif isinstance(event, MemberAlive):
                log.info("peer alive again: %s", label)
                node.sync.request(member.address)
            elif isinstance(event, MemberSuspected):
                log.info("peer suspected: %s", label)
            elif isinstance(event, MemberDied):
                log.warning("peer died: %s", label)
            elif isinstance(event, MemberLeft):
                log.info("peer left: %s", label)
            elif isinstance(event, MemberUpdated):
                log.debug("peer updated: %s", label)
            if isinstance(event, MemberJoined | MemberAlive):
                node.incompatible.pop(member.node_id, None)
                if member.protocol != SPOKEN_VERSION:
                    log.info(
                        "peer %s speaks protocol %s, this peer %s: compatible, working together",
                        label,
                        member.protocol,
                        versions_text(),
                    )
            node.touch()

    async def _check_foreign(self) -> None:
        """Report peers whose datagrams the transport refused for their protocol version:
        one warning each, an entry in ``peers``, and a notice back so that their log says it
        too (they refuse our datagram, and their transport names us the same way)."""
        node = self.node
        now = node.now()
        foreign = node.transport.stats.foreign
        while foreign:
            node_id, peer = foreign.popitem()
            known = node.incompatible.get(node_id)
            if known is None or known.peer.version != peer.version:
                known = node.incompatible[node_id] = IncompatiblePeer(peer, now, now)
                log.warning(
                    "refusing peer %s (%s)%s: it %s; upgrade the older peer (docs/operators.md)",
                    peer.name or node_id[:8],
                    node_id[:8],
                    " at {}:{}".format(*peer.address) if peer.address else "",
                    peer.describe(),
                )
                node.touch()
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
                await self.send(known.peer.address, self._self_notice())
        for node_id, known in list(node.incompatible.items()):
            if now - known.last_seen > INCOMPATIBLE_FORGET_AFTER:
                del node.incompatible[node_id]
                node.touch()

    def _self_notice(self) -> dict[str, Any]:
        """A gossip datagram carrying only our own alive item: who we are, for a peer that
        cannot read our protocol (its transport names us from it and refuses it)."""
        node = self.node
        me = node.membership.get(node.node_id)
        incarnation = node.membership.incarnation
        alive = AliveItem(
            node.node_id,
            incarnation,
            node.transport.local_address,
            me.meta if me is not None else node.meta(),
            SPOKEN_VERSION,
        )
        return {"t": T_MEMBER_GOSSIP, "f": node.node_id, "i": incarnation, "b": [alive.wire()]}

    # ----------------------------------------------------------------------------------
    # local writes: saved, then sent

    def publish(self, deltas: Sequence[Delta], *, deferred: bool = False) -> None:
        """Queue local writes; the push task saves them, then sends them. ``deferred``: they
        ride the next push of a write someone waits for, as ``push_scope``'s deferred kinds."""
        for delta in deltas:
            if deferred:
                self._deferred_keys.add(delta[0])
            else:
                self._deferred_keys.discard(delta[0])
        self._outbox.extend(deltas)
        self.node.stats.deltas_sent += len(deltas)
        self._outbox_ready.set()

    def hold_push(self) -> Callable[[], None]:
        """Keep pushes back until the returned function is called (at most PUSH_HOLD_MAX).

        A render frees its slot as its process exits and the slot is claimed again at once,
        while the finished frames are still being stored: without the hold, the claim left in
        one push and the finished frames in another a few milliseconds later, each a datagram
        to every peer (two thirds of a 32-peer farm's pushes were such halves). A request that
        waits for its write (a submit) is pushed at once all the same."""
        self._holds += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._holds -= 1
                if not self._holds:
                    self._unheld.set()

        return release

    async def persisted(self) -> None:
        """Wait until everything written so far is on disk (no-op without a database);
        LedgerError when the database cannot be written."""
        if self.node.parts.ledger_store is None:
            return
        while self.node.ledger.has_unsaved or self._outbox:
            if self.save_error is not None:
                raise LedgerError(f"not saved: {self.save_error}")
            self._awaited.set()
            self._unheld.set()
            self._outbox_ready.set()
            await self._saved.wait()

    def defer(self, deltas: Sequence[Delta]) -> None:
        """Push ``deltas`` (already saved) to every peer with the next push, or on their own
        within ``push_defer_max``; at once when one of them ends its job here (its last
        frame), so the farm learns that a job is finished when its submitter does."""
        if not deltas:
            return
        ledger = self.node.ledger
        ends = False
        for delta in deltas:
            self._deferred[delta[0]] = delta
            if delta[0][0] == Kind.FRAME and ledger.job(delta[0][1]) is not None:
                counts = ledger.counts(delta[0][1])
                ends |= counts.done + counts.failed == counts.total
        due = trio.current_time() + (0.0 if ends else self.node.config.push_defer_max)
        if due < self._deferred_due:
            self._deferred_due = due
            self._outbox_ready.set()  # the push loop learns the new deadline

    async def _push_loop(self) -> None:
        while True:
            with trio.move_on_at(self._deferred_due):
                await self._outbox_ready.wait()
            if not self._outbox_ready.is_set():  # deferred writes are due: they go alone
                await self.node.gate()
                await self.flush_outbox(everything=True)
                continue
            # Writes close together share a datagram and a save, unless a control request
            # waits for them (a submit: every peer should start on it at once).
            with trio.move_on_after(PUSH_COALESCE):
                await self._awaited.wait()
            if self._holds and not self._awaited.is_set():
                with trio.move_on_after(PUSH_HOLD_MAX):
                    while self._holds and not self._awaited.is_set():
                        self._unheld = trio.Event()
                        await self._unheld.wait()
            self._awaited = trio.Event()
            await self.node.gate()
            await self.flush_outbox()

    async def flush_outbox(self, *, everything: bool = False) -> None:
        """Save the outbox, then push it and queue it for gossip. When the ledger cannot be
        saved (full disk), nothing leaves: it is retried until it can.

        Only deferred writes (``push_scope``) leave the others for later: a finished frame
        goes to its submitter alone, and the rest ride the next push of a write someone
        waits for. ``everything`` pushes the deferred writes too (their time is up, or the
        peer leaves)."""
        self._outbox_ready = trio.Event()
        if not self._outbox and not (everything and self._deferred):
            return
        if not self.save():
            await trio.sleep(SAVE_INTERVAL)
            self._outbox_ready.set()
            return
        deltas, self._outbox = self._outbox, []
        node = self.node
        scopes = [
            None if delta[0] in self._deferred_keys else push_scope(delta, node.ledger.job)
            for delta in deltas
        ]
        self._deferred_keys.difference_update(delta[0] for delta in deltas)
        if not everything and all(scope != PUSH_ALL for scope in scopes):
            await self._push_to_submitters(deltas, scopes)
            self.defer(deltas)
            return
        if self._deferred:
            # Written earlier, so sent first; a key written again since goes once, newest.
            fresh = {delta[0] for delta in deltas}
            deltas = [
                d
                for key, d in self._deferred.items()
                if key not in fresh and not node.ledger.superseded(d)
            ] + deltas
            self._deferred = {}
        self._deferred_due = math.inf
        if not deltas:
            return
        await self._push(deltas)

    async def _push_to_submitters(self, deltas: list[Delta], scopes: list[str | None]) -> None:
        """Send each finished frame to its job's submitter alone, asking it to pass them on."""
        node = self.node
        by_submitter: dict[str, list[Any]] = {}
        for delta, scope in zip(deltas, scopes, strict=True):
            if scope is not None and scope != node.node_id:
                by_submitter.setdefault(scope, []).append(codec.encode_delta(delta))
        for submitter, encoded in by_submitter.items():
            member = node.membership.get(submitter)
            if member is None or member.state not in (MemberState.ALIVE, MemberState.SUSPECT):
                continue  # deferred all the same: every peer has it within push_defer_max
            for batch in batches(encoded, MAX_PUSH_BYTES):
                try:
                    await node.transport.send_datagram(
                        member.address, {"t": T_LEDGER, "d": batch, "r": True}
                    )
                except PeerfarmError as exc:
                    log.debug("dropped a push to a submitter: %s", exc)

    async def _push(self, deltas: list[Delta]) -> None:
        """Push saved writes to every alive peer at once (up to ``push_fanout``, the others
        through gossip)."""
        node = self.node
        encoded = [codec.encode_delta(delta) for delta in deltas]
        alive = node.membership.alive_members()
        targets = self.sample_peers(node.config.push_fanout)
        if len(targets) < len(alive):
            # Not every peer gets the push: gossip carries the writes to the others.
            for delta, wire in zip(deltas, encoded, strict=True):
                try:
                    node.membership.queue_broadcast(broadcast_key(delta[0]), wire)
                except MessageTooLarge:
                    # Too big for a datagram (a spec with many assets): push-pull carries it.
                    for member in self.sample_peers(node.config.gossip_fanout):
                        node.sync.request(member.address)
        addresses = [member.address for member in targets]
        for batch in batches(encoded, MAX_PUSH_BYTES):
            try:
                await node.transport.send_datagrams(addresses, {"t": T_LEDGER, "d": batch})
            except PeerfarmError as exc:  # MessageTooLarge: batches() keeps under the budget
                log.warning("dropped a ledger push: %s", exc)
        for wire in encoded:
            if len(codec.packb(wire)) > MAX_PUSH_BYTES:  # left out of the pushes: push-pull
                for member in self.sample_peers(node.config.gossip_fanout):
                    node.sync.request(member.address)
                break

    async def _save_loop(self) -> None:
        """Save what merges changed, a few times a second (local writes are saved at once)."""
        while True:
            await trio.sleep(SAVE_INTERVAL)
            await self.node.gate()
            if self.node.ledger.has_unsaved:
                self.save()

    def save(self) -> bool:
        """Write every unsaved change of the replica in one transaction. False (logged, rate
        limited, and shown as this peer's problem) when the database cannot be written."""
        node = self.node
        store = node.parts.ledger_store
        if store is None:
            self._saved.set()
            self._saved = trio.Event()
            return True
        try:
            store.flush(node.ledger)
        except LedgerError as exc:
            now = node.now()
            if self.save_error is None or now - self._last_save_error >= SAVE_ERROR_EVERY:
                self._last_save_error = now
                log.error("%s (retrying; nothing is sent until it is saved)", exc)
            if self.save_error is None:
                self.save_error = str(exc)
                node.set_problem("ledger", f"cannot save the ledger: {exc}")
            self._saved.set()  # wake waiters: they see save_error
            self._saved = trio.Event()
            return False
        if self.save_error is not None:
            self.save_error = None
            log.info("the ledger is saved again")
            node.set_problem("ledger", None)
        self._saved.set()
        self._saved = trio.Event()
        return True


#: ``push_scope``: the write goes to every peer at once.
PUSH_ALL = "*"


def push_scope(delta: Delta, job_of: Callable[[str], Any]) -> str | None:
    """Who waits for a local write to arrive: :data:`PUSH_ALL` (every peer, at once), a node
    id (only that one, the submitter of a finished frame's job), or None (nobody).

    Deferred writes are those no peer acts on before it hears them: a delivery mark, and a
    finished frame, which nobody may claim while its lease runs (a claim, a release, a retry
    or a failure does change what peers claim, and goes at once)."""
    kind = delta[0][0]
    if kind == Kind.DELIVERED:
        return None
    if kind == Kind.FRAME and isinstance(delta[1], FrameRecord) and delta[1].status == Status.DONE:
        spec = job_of(delta[0][1])
        return spec.submitted_by if spec is not None else PUSH_ALL
    return PUSH_ALL


def batches(items: list[Any], budget: int) -> list[list[Any]]:
    """Encoded deltas grouped so each group's msgpack size stays within ``budget``; an item
    bigger than the budget is left out (the broadcast / push-pull path carries it)."""
    out: list[list[Any]] = []
    batch: list[Any] = []
    size = 0
    for item in items:
        n = len(codec.packb(item))
        if batch and size + n > budget:
            out.append(batch)
            batch, size = [], 0
        if n > budget:
            continue
        batch.append(item)
        size += n
    if batch:
        out.append(batch)
    return out
