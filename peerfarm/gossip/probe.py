"""SWIM failure detection for one node: the probe cycle, indirect probes and Lifeguard health.

This module owns who gets probed when and what a missed probe means: members are pinged
round-robin over a shuffled order, one per ``probe_interval``; no ack within ``probe_timeout``
asks ``indirect_checks`` alive members to ping the target for us (``preq``) and to nack if they
get no answer; no ack by the end of the interval hands the target to the membership machine as
suspect. It also relays other members' indirect probes, and keeps the Lifeguard awareness score
that stretches our own probe timers while we are the slow one.

Pure like :mod:`peerfarm.gossip.membership`, which drives it: it reads the shared member table,
builds datagrams with the machine's header and piggyback functions, and never does I/O.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from peerfarm.gossip.config import GossipConfig, awareness_multiplier
from peerfarm.gossip.members import Address, Member, MemberState
from peerfarm.gossip.swim_wire import (
    T_ACK,
    T_NACK,
    T_PING,
    T_PING_REQ,
    Message,
    Outgoing,
    Packet,
)

#: Build a header: (type, seq, target id) -> message.
HeaderFn = Callable[[str, int | None, str | None], Message]
#: Finish a datagram to an address, piggybacking queued news within the budget.
PacketFn = Callable[[Address, Message], Outgoing]
#: Called with a member whose probe failed, at ``now``.
SuspectFn = Callable[[Member, float], None]


@dataclass(slots=True)
class _Probe:
    target: str
    seq: int
    indirect_at: float
    deadline: float
    indirect_sent: bool = False
    expected_nacks: int = 0
    nacks: int = 0


@dataclass(slots=True)
class _Relay:
    origin: Address
    origin_seq: int
    want_nack: bool
    deadline: float


class Prober:
    """The probe state of one node; :class:`peerfarm.gossip.membership.Membership` owns one."""

    def __init__(
        self,
        config: GossipConfig,
        rng: random.Random,
        now: float,
        table: dict[str, Member],
        me: Member,
        header: HeaderFn,
        packet: PacketFn,
        suspect: SuspectFn,
    ) -> None:
        self._config = config
        self._rng = rng
        self._table = table
        self._me = me
        self._header = header
        self._packet = packet
        self._suspect = suspect
        self._seq = 0
        self._order: list[str] = []
        self._index = 0
        self._probe: _Probe | None = None
        self._relays: dict[int, _Relay] = {}
        self._awareness = 0
        self._next_probe_at = now + rng.uniform(0.0, config.probe_interval)

    @property
    def awareness(self) -> int:
        """Lifeguard local-health score: 0 is healthy; probes slow down by ``score + 1``."""
        return self._awareness

    def adjust_awareness(self, delta: int) -> None:
        top = self._config.awareness_max_multiplier - 1
        self._awareness = min(top, max(0, self._awareness + delta))

    def next_seq(self) -> int:
        """A fresh sequence number for a ping (probes, relays and reconnects share them)."""
        self._seq += 1
        return self._seq

    def stop(self) -> None:
        """Forget the probe in flight (we are leaving)."""
        self._probe = None

    def deadlines(self, probing: bool) -> list[float]:
        """The times at which :meth:`tick_probe` or :meth:`tick_relays` has work."""
        times = [self._next_probe_at] if probing else []
        if self._probe is not None:
            times.append(self._probe.deadline)
            if not self._probe.indirect_sent:
                times.append(self._probe.indirect_at)
        times.extend(r.deadline for r in self._relays.values())
        return times

    def add(self, node_id: str) -> None:
        """Put a new (or returning) member at a random place in the rest of this round."""
        if node_id not in self._order:
            position = self._rng.randint(self._index, len(self._order))
            self._order.insert(position, node_id)

    # --- received -------------------------------------------------------------------

    def on_ack(self, seq: int) -> Outgoing | None:
        """An ack: pass it back to a member we relay for, or end our own probe."""
        relay = self._relays.pop(seq, None)
        if relay is not None:
            return self._packet(relay.origin, self._header(T_ACK, relay.origin_seq, None))
        if self._probe is not None and self._probe.seq == seq:
            self._probe = None
            self.adjust_awareness(-1)
        return None

    def on_nack(self, seq: int) -> None:
        if self._probe is not None and self._probe.seq == seq:
            self._probe.nacks += 1

    def on_ping_req(self, packet: Packet, sender: Address, now: float) -> Outgoing:
        """Ping ``packet.target`` for ``sender``; its ack (or our nack) goes back to them."""
        seq = self.next_seq()
        self._relays[seq] = _Relay(
            sender, packet.seq, packet.want_nack, now + self._config.probe_timeout
        )
        ping = self._header(T_PING, seq, packet.target)
        return self._packet(packet.target_address, ping)

    # --- time -----------------------------------------------------------------------

    def tick_relays(self, now: float) -> list[Outgoing]:
        """Nack every relayed probe that got no ack in time (if its origin asked for nacks)."""
        out: list[Outgoing] = []
        for seq, relay in list(self._relays.items()):
            if now >= relay.deadline:
                del self._relays[seq]
                if relay.want_nack:
                    nack = self._header(T_NACK, relay.origin_seq, None)
                    out.append(self._packet(relay.origin, nack))
        return out

    def tick_probe(self, now: float, probing: bool) -> list[Outgoing]:
        """Send indirect probes, judge the probe whose interval ended, and start the next one."""
        out: list[Outgoing] = []
        probe = self._probe
        if probe is not None and not probe.indirect_sent and now >= probe.indirect_at:
            probe.indirect_sent = True
            target = self._table.get(probe.target)
            helpers = [
                m
                for m in self._others()
                if m.state is MemberState.ALIVE and m.node_id != probe.target
            ]
            helpers = self._rng.sample(helpers, min(self._config.indirect_checks, len(helpers)))
            probe.expected_nacks = len(helpers)
            if target is not None:
                for helper in helpers:
                    req = self._header(T_PING_REQ, probe.seq, probe.target)
                    req["a"] = list(target.address)
                    req["n"] = True
                    out.append(self._packet(helper.address, req))
        if probe is not None and now >= probe.deadline:
            self._probe = None
            missed = probe.expected_nacks - probe.nacks if probe.expected_nacks else 1
            self.adjust_awareness(max(0, missed))
            target = self._table.get(probe.target)
            if target is not None and target.state in (MemberState.ALIVE, MemberState.SUSPECT):
                self._suspect(target, now)
        if probing and now >= self._next_probe_at:
            scale = awareness_multiplier(self._awareness, self._config)
            self._next_probe_at = now + self._config.probe_interval * scale
            target = self._next_target()
            if target is not None:
                seq = self.next_seq()
                self._probe = _Probe(
                    target.node_id,
                    seq,
                    now + self._config.probe_timeout * scale,
                    now + self._config.probe_interval * scale,
                )
                ping = self._header(T_PING, seq, target.node_id)
                out.append(self._packet(target.address, ping))
        return out

    # --- helpers --------------------------------------------------------------------

    def _others(self) -> Iterable[Member]:
        return (m for m in self._table.values() if m is not self._me)

    def _next_target(self) -> Member | None:
        for _ in range(2 * len(self._table) + 1):
            if self._index >= len(self._order):
                self._order = [
                    m.node_id
                    for m in self._others()
                    if m.state in (MemberState.ALIVE, MemberState.SUSPECT)
                ]
                self._rng.shuffle(self._order)
                self._index = 0
                if not self._order:
                    return None
            member = self._table.get(self._order[self._index])
            self._index += 1
            if member is not None and member.state in (MemberState.ALIVE, MemberState.SUSPECT):
                return member
        return None
