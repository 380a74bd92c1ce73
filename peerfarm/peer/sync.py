"""The peer's stream side: push-pull anti-entropy, lease checks and blob requests.

Owns the trio loop that drives :class:`~peerfarm.peer.antientropy.SyncSession` over transport
streams (a periodic push-pull with one random peer, and one on request: a new or returning
peer, an entry too big for a datagram), the server of incoming streams, and the lease check a
peer makes before it takes over a lapsed claim (invariant 5: a takeover of a lease whose owner is
alive is confirmed with that owner first). Its rule: whatever one stream or one request does
wrong (bad data, a timeout, a bug) closes that stream, is counted and logged once, and never
reaches the daemon.

Lease check, one round trip (wire names append-only)::

    asker -> owner   {"t": "lease?", "j": job, "f": [frame, ...]}
    owner -> asker   {"t": "lease!", "d": [delta, ...]}

Steal check, one round trip, before a thief claims frames of a chunk homed on a live peer
(``peer.worker``: the home promises each open frame to one thief)::

    thief -> home    {"t": "steal?", "j": job, "f": [frame, ...], "n": thief}
    home  -> thief   {"t": "steal!", "ok": [frame, ...], "d": [delta, ...]}

``ok`` are the frames the thief may claim; ``d`` the home's records of the others (merged by
the thief, which then sees why).

A stream opened for a question stays open for the next question to the same peer for
:data:`KEEP_ASKING_S` seconds (a thief asks the same few homes again and again while a job of
short frames runs, and opening the stream was two of a question's three round trips); a kept
stream the peer closed meanwhile is replaced once, since both questions can be asked twice.

The owner renews (or, when it no longer renders them, releases) its claims of those frames and
answers with its current records, which the asker merges: a renewed lease is no longer lapsed, a
finished frame is finished, a released one is free to claim without a takeover.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import trio

from ..errors import DecodeError, LedgerError, PeerfarmError, RemoteProtocolError, TransportError
from ..files.transfer import serve_blob
from ..gossip.membership import MemberState
from ..gossip.transport import Address, Stream
from ..ledger import codec
from ..ledger.keys import frame_key
from .antientropy import T_SYNC, SyncSession, busy_reply

if TYPE_CHECKING:
    from .node import Node

log = logging.getLogger("peerfarm")

T_GET = "get"  # stream: blob request (peerfarm.files.transfer)
T_LEASE_Q = "lease?"
T_LEASE_A = "lease!"
T_STEAL_Q = "steal?"
T_STEAL_A = "steal!"
MAX_LEASE_FRAMES = 1_000
#: Seconds an idle stream of lease and steal questions is kept for the next one to its peer.
KEEP_ASKING_S = 2.0


class SyncService:
    """Streams for one node."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._requests: trio.MemorySendChannel[Address]
        self._receive: trio.MemoryReceiveChannel[Address]
        self._requests, self._receive = trio.open_memory_channel(64)
        self.synced = trio.Event()  # set after the first complete push-pull
        self._seeds: list[Address] = []  # --join addresses (and mDNS finds), tried again later
        # Push-pulls under way, by the other peer's address (set when one ends): a second one
        # with the same peer waits for the first, then sends only what is still missing,
        # instead of a second copy of a big ledger (a joiner and its seed both start one).
        # (exchanges under way, an event set when the last of them ends) by address
        self._active: dict[Address, tuple[int, trio.Event]] = {}
        self._initiated: set[Address] = set()  # push-pulls this peer opened, under way
        # Idle question streams (lease?, steal?) by address, with when each was last used.
        self._asking: dict[Address, tuple[Stream, float]] = {}

    def remember_seeds(self, seeds: Sequence[Address]) -> None:
        for seed in seeds:
            if seed not in self._seeds:
                self._seeds.append(seed)

    async def reconnect_loop(self) -> None:
        """Heal a split that membership alone cannot: every ``reconnect_interval``, a full
        push-pull with a random peer gossip declared dead (both sides learn the other's view
        and the wrongly accused refute), and with a seed that is not an alive member (two
        halves that already forgot each other meet again through it)."""
        node = self.node
        interval = node.config.reconnect_interval
        if interval <= 0:
            return
        while True:
            await trio.sleep(interval * node.parts.rng.uniform(0.8, 1.2))
            await node.gate()
            targets = []
            dead = [m for m in node.membership.members() if m.state == MemberState.DEAD]
            if dead:
                targets.append(node.parts.rng.choice(dead).address)
            alive = {m.address for m in node.membership.alive_members()}
            alive.add(node.transport.local_address)
            lost = [seed for seed in self._seeds if seed not in alive]
            if lost:
                targets.append(node.parts.rng.choice(lost))
            for address in targets:  # here, not in the sync queue: a dead host may take long
                try:
                    await self.push_pull(address)
                except (PeerfarmError, trio.TooSlowError) as exc:
                    log.debug("reconnect with %s:%s failed: %s", *address, exc)

    def request(self, address: Address) -> None:
        """Ask for a push-pull with ``address`` soon (dropped if many are queued already)."""
        with contextlib.suppress(trio.WouldBlock):
            self._requests.send_nowait(address)

    async def run(self) -> None:
        node = self.node
        interval = node.config.push_pull_interval
        next_periodic = node.now() + interval * node.parts.rng.uniform(0.5, 1.0)
        while True:
            address: Address | None = None
            with trio.move_on_at(next_periodic):
                address = await self._receive.receive()
            await node.gate()
            if address is None:
                next_periodic = node.now() + interval
                peers = node.gossip.sample_peers(1)
                if not peers:
                    continue
                address = peers[0].address
            try:
                await self.push_pull(address)
            except (PeerfarmError, trio.TooSlowError) as exc:
                node.stats.sync_failures += 1
                log.debug("push-pull with %s:%s failed: %s", *address, exc)

    async def push_pull(self, address: Address) -> None:
        """Full anti-entropy with one peer: member tables and the ledger, both ways.

        TooSlowError when the exchange stalls: every message must come or go within
        ``3 * stream_timeout`` of the previous one (a big ledger takes many messages, so the
        exchange as a whole may take longer). One under way with the same peer (it asked
        first) is waited for, so this one only carries what that one did not."""
        node = self.node
        timeout = node.config.stream_timeout
        busy = self._active.get(address)
        if busy is not None:  # they end by themselves (each of their messages has a deadline)
            with trio.move_on_after(timeout * 30):  # unless a peer trickles deltas forever
                await busy[1].wait()
        with self._exchange(address), trio.fail_after(timeout * 3) as progress:
            self._initiated.add(address)
            try:
                stream = await node.transport.connect(address, timeout=timeout)
                try:
                    session = SyncSession(node.ledger, node.membership, initiator=True)
                    await stream.send(session.opening())
                    await self._drive(session, stream, progress)
                finally:
                    await stream.aclose()
            finally:
                self._initiated.discard(address)

    @contextlib.contextmanager
    def _exchange(self, address: Address | None) -> Iterator[None]:
        """Count a push-pull with ``address`` as under way (both directions: a second one
        waits until every exchange with that peer ended, then sends only what is missing)."""
        if address is None:
            yield
            return
        count, done = self._active.get(address, (0, trio.Event()))
        self._active[address] = (count + 1, done)
        try:
            yield
        finally:
            count, done = self._active[address]
            if count == 1:
                del self._active[address]
                done.set()
            else:
                self._active[address] = (count - 1, done)

    async def _drive(
        self, session: SyncSession, stream: Stream, progress: trio.CancelScope | None = None
    ) -> None:
        """Feed a session until it is done: merge what it hands over, send what it says; each
        message received moves the ``progress`` deadline on."""
        node = self.node
        while not session.done:
            message = await stream.receive(timeout=node.config.stream_timeout)
            if progress is not None:
                progress.deadline = trio.current_time() + node.config.stream_timeout * 3
            step = session.receive(message)
            if step.members is not None:
                node.membership.merge_push_pull(step.members, node.now())
            if step.deltas:
                node.merge(step.deltas)
            for out in step.send:
                await stream.send(out)
                if progress is not None:  # sending a big ledger is progress too
                    progress.deadline = trio.current_time() + node.config.stream_timeout * 3
                await trio.lowlevel.checkpoint()
        node.stats.sync_deltas_received += session.received
        if session.refused:  # the exchange the other side opened with us carries it
            return
        node.stats.syncs += 1
        self.synced.set()
        await node.gossip.membership_events()

    # ----------------------------------------------------------------------------------
    # serving

    async def serve_stream(self, stream: Stream) -> None:
        """One incoming stream: any failure stays with it."""
        node = self.node
        try:
            await node.gate()
            await self._serve(stream)
        except (RemoteProtocolError, TransportError) as exc:
            node.stats.bad_messages += 1
            log.debug("bad stream from %s: %s", stream.remote, exc)
        except trio.TooSlowError:
            log.debug("stream from %s timed out", stream.remote)
        except Exception:  # the daemon never dies from a stream
            node.stats.stream_errors += 1
            log.exception("error while serving a stream from %s", stream.remote)
        finally:
            with trio.CancelScope(shield=True), contextlib.suppress(PeerfarmError, OSError):
                await stream.aclose()

    async def _serve(self, stream: Stream) -> None:
        node = self.node
        while True:
            try:
                request = await stream.receive(timeout=node.config.stream_timeout * 6)
            except TransportError:
                return
            if not isinstance(request, dict):
                raise DecodeError("expected a map")
            kind = request.get("t")
            if kind == T_SYNC:
                if self._ours_wins(request):
                    await stream.send(busy_reply())  # one exchange between two peers at once
                    return
                session = SyncSession(node.ledger, node.membership, initiator=False)
                step = session.receive(request)
                if step.members is not None:
                    node.membership.merge_push_pull(step.members, node.now())
                peer = None if session.peer is None else node.address_of(session.peer)
                with self._exchange(peer):
                    for out in step.send:
                        await stream.send(out)
                        await trio.lowlevel.checkpoint()
                    await self._drive(session, stream)
                return
            if kind == T_GET:
                await serve_blob(stream, node.store, request)
                continue
            if kind == T_LEASE_Q:
                await stream.send(await self._answer_lease(request))
                continue
            if kind == T_STEAL_Q:
                await stream.send(await self._answer_steal(request))
                continue
            raise DecodeError(f"unknown stream request {kind!r}")

    def _ours_wins(self, request: dict[str, Any]) -> bool:
        """Whether an exchange we opened with this request's sender is under way and wins
        over theirs (the smaller node id's does), checked before any snapshot is taken."""
        node = self.node
        peer = request.get("n")
        if type(peer) is not str or not codec.ID_RE.match(peer) or node.node_id >= peer:
            return False
        address = node.address_of(peer)
        if address is None or address not in self._initiated:
            return False
        members = request.get("m")
        if members is not None:  # what they know of the farm still counts
            node.membership.merge_push_pull(members, node.now())
        return True

    # ----------------------------------------------------------------------------------
    # lease checks

    async def _answer_lease(self, request: dict[str, Any]) -> dict[str, Any]:
        """Renew what we still render, release what we claimed but no longer render, and
        answer with our records of those frames."""
        node = self.node
        job = request.get("j")
        raw = request.get("f")
        if not isinstance(job, str) or not isinstance(raw, list) or len(raw) > MAX_LEASE_FRAMES:
            raise DecodeError("bad lease question")
        frames = [f for f in raw if type(f) is int]
        if node.ledger.job(job) is not None:
            await node.worker.confirm_claims(job, frames)
        return {"t": T_LEASE_A, "d": self._records(job, frames)}

    def _records(self, job: str, frames: Sequence[int]) -> list[Any]:
        """Our explicit records of ``frames``, encoded as deltas."""
        deltas = []
        for frame in frames:
            record = self.node.ledger.frame(job, frame)
            if record.version:  # an explicit record (not the implicit pending one)
                key = frame_key(job, frame)
                deltas.append(codec.encode_delta((key, record, record.origin, record.version)))
        return deltas

    async def _answer_steal(self, request: dict[str, Any]) -> dict[str, Any]:
        """Promise the open frames nobody holds to the thief; our records of the others."""
        node = self.node
        job, raw, thief = request.get("j"), request.get("f"), request.get("n")
        if (
            not isinstance(job, str)
            or not isinstance(raw, list)
            or len(raw) > MAX_LEASE_FRAMES
            or not isinstance(thief, str)
            or not codec.ID_RE.match(thief)
        ):
            raise DecodeError("bad steal question")
        frames = [f for f in raw if type(f) is int]
        granted = await node.worker.grant_steal(job, frames, thief)
        promised = set(granted)
        refused = [f for f in frames if f not in promised]
        return {"t": T_STEAL_A, "ok": granted, "d": self._records(job, refused)}

    async def _ask(self, peer: str, question: dict[str, Any], kind: str) -> dict[str, Any] | None:
        """One round trip to ``peer``: send ``question``, merge the records (``d``) of an
        answer of type ``kind`` and return it; None when the peer could not be asked."""
        node = self.node
        address = node.address_of(peer)
        if address is None:
            return None
        timeout = node.config.probe_timeout * 2
        try:
            with trio.fail_after(timeout * 2):
                answer = await self._round_trip(address, question, timeout)
            if not isinstance(answer, dict) or answer.get("t") != kind:
                raise DecodeError(f"unexpected answer to {question.get('t')!r}")
            node.merge(codec.decode_deltas(answer.get("d"), max_count=MAX_LEASE_FRAMES))
        except (PeerfarmError, trio.TooSlowError, LedgerError) as exc:
            log.debug("%s with %s failed: %s", question.get("t"), peer[:8], exc)
            return None
        return answer

    async def _round_trip(self, address: Address, question: dict[str, Any], timeout: float) -> Any:
        """Send ``question`` on a kept stream to ``address`` (or a new one) and read the answer.
        A kept stream that breaks at once (its peer closed it while it was idle) is replaced
        once; the stream is kept for the next question only after a whole answer."""
        kept = self._asking.pop(address, None)
        stream = None if kept is None else kept[0]
        if kept is not None and self.node.now() - kept[1] > KEEP_ASKING_S:
            await _close(kept[0])
            stream = None
        reused = stream is not None
        while True:
            if stream is None:
                stream = await self.node.transport.connect(address, timeout=timeout)
            asked = self.node.now()
            try:
                await stream.send(question)
                answer = await stream.receive(timeout=timeout)
            except BaseException as exc:
                await _close(stream)
                broke_at_once = isinstance(exc, TransportError) and (
                    self.node.now() - asked < timeout  # else the peer is slow: no second wait
                )
                if not (reused and broke_at_once):
                    raise
                stream, reused = None, False  # closed while idle (a restart, its idle timeout)
                continue
            await self._keep(address, stream)
            return answer

    async def _keep(self, address: Address, stream: Stream) -> None:
        extra = self._asking.pop(address, None)
        self._asking[address] = (stream, self.node.now())
        if extra is not None:  # two questions ran at once: keep one stream
            await _close(extra[0])

    async def tidy_asking(self) -> None:
        """Close the question streams idle for :data:`KEEP_ASKING_S` (each holds a connection
        of its peer's), and every one when the node stops."""
        try:
            while True:
                await trio.sleep(KEEP_ASKING_S / 2)
                now = self.node.now()
                for address, (stream, used) in list(self._asking.items()):
                    if now - used > KEEP_ASKING_S and self._asking.get(address) == (stream, used):
                        del self._asking[address]
                        await _close(stream)
        finally:
            kept, self._asking = list(self._asking.values()), {}
            for stream, _used in kept:
                await _close(stream)

    async def check_steal(self, home: str, job: str, frames: Sequence[int]) -> set[int] | None:
        """Ask ``home`` which of ``frames`` this peer may steal; merge its records of the
        others. None when it could not be asked (the steal goes ahead without it)."""
        question = {"t": T_STEAL_Q, "j": job, "f": list(frames), "n": self.node.node_id}
        answer = await self._ask(home, question, T_STEAL_A)
        ok = None if answer is None else answer.get("ok")
        if not isinstance(ok, list):
            return None
        return {f for f in ok if type(f) is int and f in frames}

    async def check_lapsed(self, owner: str, job: str, frames: Sequence[int]) -> bool:
        """Ask ``owner`` about its lapsed claims of ``frames``; merge its answer. True when it
        answered (the ledger now says what it knows), False when it could not be reached."""
        question = {"t": T_LEASE_Q, "j": job, "f": list(frames)}
        return await self._ask(owner, question, T_LEASE_A) is not None


async def _close(stream: Stream) -> None:
    """Close a question stream, whatever state it is in (errors are of no interest here)."""
    with trio.CancelScope(shield=True), contextlib.suppress(PeerfarmError, OSError):
        await stream.aclose()
