"""The SWIM member table and the incarnation rules that change it. Pure, no I/O.

This module owns our view of every member (ourselves included) and how news changes it:

- Incarnations: news about a member is ordered by its incarnation; at one incarnation
  SUSPECT beats ALIVE and DEAD/LEFT beat both. A member that hears itself suspected, dead or
  left (or an alive with a newer incarnation than its own) refutes: it bumps its incarnation
  above the accusation and gossips ALIVE.
- Suspicion: a suspect is declared DEAD after Lifeguard's timeout, which starts at
  ``suspicion_max_timeout_mult`` times SWIM's ``suspicion_mult*max(1, log10 N)*probe_interval``
  and shrinks towards it with each independent accuser.
- DEAD and LEFT members stay listed (with state and ``state_since``) for ``dead_node_reclaim``
  seconds, then they are forgotten.

Every change is queued as news on :class:`~peerfarm.gossip.dissemination.Dissemination` and
reported as an event. :class:`~peerfarm.gossip.membership.Membership` owns one table and feeds
it what the wire and the prober say.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from peerfarm.gossip.config import (
    GossipConfig,
    expected_confirmations,
    lifeguard_timeout,
    suspicion_bounds,
)
from peerfarm.gossip.dissemination import Dissemination
from peerfarm.gossip.members import (
    Member,
    MemberAlive,
    MemberDied,
    MemberJoined,
    MemberLeft,
    MembershipEvent,
    MemberState,
    MemberSuspected,
    MemberUpdated,
)
from peerfarm.gossip.swim_wire import Alive, Dead, Left, Suspect, alive_of


@dataclass(slots=True)
class _Suspicion:
    started: float
    low: float
    high: float
    expected: int
    accusers: set[str] = field(default_factory=set)

    def deadline(self) -> float:
        confirmations = len(self.accusers) - 1  # the first accuser is not a confirmation
        return self.started + lifeguard_timeout(self.low, self.high, confirmations, self.expected)


class MemberTable:
    """Our view of the members, changed only by the rules below."""

    def __init__(
        self,
        table: dict[str, Member],
        me: Member,
        config: GossipConfig,
        news: Dissemination,
        emit: Callable[[MembershipEvent], None],
        on_new_member: Callable[[str], None],
        on_refute: Callable[[], None],
    ) -> None:
        self._table = table
        self._self = me
        self._id = me.node_id
        self._config = config
        self._news = news
        self._emit = emit
        self._on_new_member = on_new_member  # a member to probe (new, or back from the dead)
        self._on_refute = on_refute  # we were accused: Lifeguard counts it against our health
        self._suspicions: dict[str, _Suspicion] = {}
        self.next_reap_at = math.inf
        #: Set once we leave: we no longer refute anything said about us.
        self.leaving = False

    def deadlines(self) -> Iterable[float]:
        """When suspicions run out and gone members are due to be forgotten."""
        yield self.next_reap_at
        yield from (s.deadline() for s in self._suspicions.values())

    def expire_suspicions(self, now: float) -> None:
        """Declare DEAD every suspect whose Lifeguard timeout ran out by ``now``."""
        for node_id, suspicion in list(self._suspicions.items()):
            if now >= suspicion.deadline():
                del self._suspicions[node_id]
                member = self._table.get(node_id)
                if member is not None and member.state is MemberState.SUSPECT:
                    self.on_dead(Dead(node_id, member.incarnation, self._id), now)

    def on_alive(self, alive: Alive, now: float) -> bool:
        if alive.node_id == self._id:
            me = self._self
            if self.leaving or alive.incarnation < me.incarnation:
                return False
            if (
                alive.incarnation == me.incarnation
                and alive.address == me.address
                and alive.meta == me.meta
                and alive.protocol == me.protocol
            ):
                return False
            return self._refute(alive.incarnation)
        member = self._table.get(alive.node_id)
        if member is None:
            member = Member(
                alive.node_id,
                alive.address,
                alive.incarnation,
                MemberState.ALIVE,
                dict(alive.meta),
                now,
                alive.protocol,
            )
            self._table[alive.node_id] = member
            self._on_new_member(alive.node_id)
            self._emit(MemberJoined(member.copy()))
            self._news.queue_member(alive.node_id, alive.wire())
            return False
        if alive.incarnation <= member.incarnation:
            return False
        changed = (
            member.address != alive.address
            or member.meta != alive.meta
            or member.protocol != alive.protocol
        )
        member.incarnation = alive.incarnation
        member.address = alive.address
        member.meta = dict(alive.meta)
        member.protocol = alive.protocol
        if member.state is not MemberState.ALIVE:
            if member.state in (MemberState.DEAD, MemberState.LEFT):
                self._on_new_member(alive.node_id)
            member.state = MemberState.ALIVE
            member.state_since = now
            self._suspicions.pop(alive.node_id, None)
            self._emit(MemberAlive(member.copy()))
        elif changed:
            self._emit(MemberUpdated(member.copy()))
        self._news.queue_member(alive.node_id, alive.wire())
        return False

    def on_suspect(self, suspect: Suspect, now: float) -> bool:
        if suspect.node_id == self._id:
            if self.leaving or suspect.incarnation < self._self.incarnation:
                return False
            return self._refute(suspect.incarnation)
        member = self._table.get(suspect.node_id)
        if member is None or suspect.incarnation < member.incarnation:
            return False
        if member.state is MemberState.SUSPECT:
            suspicion = self._suspicions.get(member.node_id)
            if suspicion is not None and suspect.accuser not in suspicion.accusers:
                suspicion.accusers.add(suspect.accuser)  # Lifeguard: a confirmation
                self._news.queue_member(member.node_id, suspect.wire())
            return False
        if member.state is not MemberState.ALIVE:
            return False
        member.state = MemberState.SUSPECT
        member.incarnation = suspect.incarnation
        member.state_since = now
        n = len(self._table)
        low, high = suspicion_bounds(self._config, n)
        self._suspicions[member.node_id] = _Suspicion(
            now, low, high, expected_confirmations(self._config, n), {suspect.accuser}
        )
        self._emit(MemberSuspected(member.copy()))
        self._news.queue_member(member.node_id, suspect.wire())
        return False

    def on_dead(self, dead: Dead, now: float) -> bool:
        if dead.node_id == self._id:
            if self.leaving or dead.incarnation < self._self.incarnation:
                return False
            return self._refute(dead.incarnation)
        member = self._table.get(dead.node_id)
        if member is None or dead.incarnation < member.incarnation:
            return False
        if member.state in (MemberState.DEAD, MemberState.LEFT):
            return False
        self._set_gone(member, MemberState.DEAD, dead.incarnation, now)
        self._emit(MemberDied(member.copy()))
        self._news.queue_member(member.node_id, dead.wire())
        return False

    def on_left(self, left: Left, now: float) -> bool:
        if left.node_id == self._id:
            if self.leaving or left.incarnation < self._self.incarnation:
                return False
            return self._refute(left.incarnation)
        member = self._table.get(left.node_id)
        if member is None or left.incarnation < member.incarnation:
            return False
        if member.state is MemberState.LEFT:
            return False
        self._set_gone(member, MemberState.LEFT, left.incarnation, now)
        self._emit(MemberLeft(member.copy()))
        self._news.queue_member(member.node_id, left.wire())
        return False

    def _set_gone(self, member: Member, state: MemberState, incarnation: int, now: float) -> None:
        member.state = state
        member.incarnation = incarnation
        member.state_since = now
        self._suspicions.pop(member.node_id, None)
        self.next_reap_at = min(self.next_reap_at, now + self._config.dead_node_reclaim)

    def _refute(self, accused: int) -> bool:
        self._self.incarnation = max(self._self.incarnation, accused) + 1
        self._on_refute()
        self._news.queue_member(self._id, alive_of(self._self).wire())
        return True

    def reap(self, now: float) -> None:
        reclaim = self._config.dead_node_reclaim
        self.next_reap_at = math.inf
        for member in list(self._others()):
            if member.state in (MemberState.DEAD, MemberState.LEFT):
                due = member.state_since + reclaim
                if now >= due:
                    del self._table[member.node_id]
                    self._suspicions.pop(member.node_id, None)
                    self._news.forget_member(member.node_id)
                else:
                    self.next_reap_at = min(self.next_reap_at, due)

    def _others(self) -> Iterable[Member]:
        return (m for m in self._table.values() if m is not self._self)
