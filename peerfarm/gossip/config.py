"""Every gossip timer and limit, in one frozen object, plus the formulas derived from them.

This module owns the numbers (hashicorp memberlist ``config.go`` style): each field says its
unit, its default (the LAN profile) and what trading it up or down costs. Derived values
(retransmit limits, SWIM/Lifeguard suspicion timeouts) are small pure functions so the
membership core, the broadcast queue and the tests compute them the same way.

Presets: :meth:`GossipConfig.lan` (the defaults), :meth:`GossipConfig.wan` (slower timers for
high-latency links, after memberlist's WAN profile) and :meth:`GossipConfig.fast` (about ten
times faster, for tests and simulations). Tune one field with ``cfg.replace(probe_timeout=0.3)``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class GossipConfig:
    """Timers (float seconds, monotonic clock) and limits of the gossip layer."""

    # --- dissemination -------------------------------------------------------------------
    #: Seconds between gossip rounds (default 0.2). Each round sends queued broadcasts to
    #: ``gossip_fanout`` random peers. Lower spreads news faster at the cost of more datagrams.
    gossip_interval: float = 0.2
    #: Peers per gossip round (default 3). Higher converges faster but multiplies traffic.
    gossip_fanout: int = 3
    #: Peers a fresh ledger write is pushed to at once (default 32): every alive peer in farms
    #: of that size, so a claim or a finished frame is known everywhere within one datagram
    #: hop and concurrent claims of one frame are rare; in larger farms a random sample of that
    #: many (gossip carries it to the rest). Higher costs one small datagram per peer a write.
    push_fanout: int = 32
    #: Seconds at most a write nobody waits for waits to ride a push of one somebody does
    #: (default 1.0): a finished frame (sent at once to its job's submitter alone, which passes
    #: it on) and a delivery mark reach the other peers with the writer's next claim, or this
    #: long after, or as soon as they end their job. Longer saves datagrams in big farms; it
    #: must stay well inside the shortest time to declare a member dead (at most a quarter of
    #: ``suspicion_mult * probe_interval``), so a frame finished by a peer that died right after
    #: is known before its lease is lost.
    push_defer_max: float = 1.0
    #: Seconds a dead member still receives gossip (default 30). Lets a wrongly-declared peer
    #: hear that it is dead and refute; longer wastes datagrams on peers that really are gone.
    gossip_to_dead_time: float = 30.0
    #: Multiplier of the retransmit limit, ``retransmit_mult * ceil(log10(n + 1))`` sends of one
    #: broadcast (default 4). Higher makes delivery more certain under loss, costs bandwidth.
    retransmit_mult: int = 4

    # --- failure detection (SWIM + Lifeguard) ----------------------------------------------
    #: Seconds between probes of the next member in the round-robin order (default 1.0).
    #: Lower detects failures sooner; every probe costs a ping and an ack.
    probe_interval: float = 1.0
    #: Seconds to wait for a direct ack before asking others to ping indirectly (default 0.5).
    #: Must exceed the network's round trip (99th percentile) or healthy peers get suspected.
    probe_timeout: float = 0.5
    #: Members asked to ping a silent member on our behalf (default 3). More reduces false
    #: suspicion from one lossy path; each costs four datagrams.
    indirect_checks: int = 3
    #: Multiplier of the minimum suspicion timeout,
    #: ``suspicion_mult * max(1, log10(n)) * probe_interval`` (default 4). Higher gives a
    #: suspected peer more time to refute; lower detects real failures sooner.
    suspicion_mult: int = 4
    #: Lifeguard: the suspicion timeout starts at this multiple of the minimum (default 6) and
    #: shrinks towards the minimum as independent peers confirm the suspicion.
    suspicion_max_timeout_mult: int = 6
    #: Lifeguard local health: probe interval and timeout are multiplied by up to this value
    #: (default 8) while this node misses acks and nacks, i.e. while it is itself slow.
    awareness_max_multiplier: int = 8
    #: Seconds between attempts to reach a random DEAD member (default 10). A peer on the other
    #: side of a healed partition hears it was declared dead and refutes. 0 disables.
    reconnect_interval: float = 10.0

    # --- membership lifetime -------------------------------------------------------------
    #: Seconds a DEAD or LEFT member stays listed with its state and time (default 300), after
    #: which it is forgotten. Shorter frees memory; longer keeps it visible to status/dashboard
    #: and lets a long partition heal through reconnects. Must exceed ``home_grace``.
    dead_node_reclaim: float = 300.0
    #: Seconds a dead peer still counts when computing frame "homes" (default 60), so a brief
    #: flap does not reshuffle every frame's preferred renderer.
    home_grace: float = 60.0
    #: Seconds between join attempts to the seeds while we know no other member (default 1).
    join_retry_interval: float = 1.0
    #: Seconds between push-pull exchanges over TCP with one random peer (default 3). Repairs
    #: what datagram gossip missed; each sends the member table and only the ledger entries
    #: the other side lacks. Must stay well inside ``lease_timeout`` (at most a third of it),
    #: so a frame finished or renewed while its news was lost is known before its lease
    #: could lapse anywhere. Lower repairs sooner at the cost of a connection per interval.
    push_pull_interval: float = 3.0
    #: Seconds a TCP stream (push-pull, file chunk) may stay silent before it is dropped.
    stream_timeout: float = 10.0

    # --- leases (used by the scheduler) ----------------------------------------------------
    #: Seconds without a renewal after which any peer considers a frame lease expired
    #: (default 10). Shorter recovers from stuck renderers faster but risks false takeovers.
    lease_timeout: float = 10.0
    #: Age in seconds at which a render's claims are renewed (default 2; looked at every half
    #: interval, so renewals come at most 1.5 intervals apart); well below ``lease_timeout``
    #: so a couple of lost renewals do not expire a healthy lease.
    lease_renew_interval: float = 2.0

    # --- sizes ----------------------------------------------------------------------------
    #: Bytes in one whole UDP datagram, envelope included (default 1400: fits a 1500-byte
    #: Ethernet MTU with IP/UDP headers to spare). Larger risks IP fragmentation and loss.
    udp_payload_limit: int = 1400
    #: Bytes the transport adds when sealing a message (default 32: nonce, tag, version).
    #: The message budget is ``udp_payload_limit - envelope_overhead``.
    envelope_overhead: int = 32
    #: Bytes of msgpack-encoded member metadata (default 600), so an alive message always
    #: fits one datagram with room for a header.
    meta_limit: int = 600
    #: Items held by a broadcast queue (default 4096); beyond it the oldest are dropped.
    broadcast_queue_cap: int = 4096
    #: User broadcast ids remembered for de-duplication (default 8192).
    seen_broadcast_cap: int = 8192

    def __post_init__(self) -> None:
        if self.push_pull_interval * 3 > self.lease_timeout:
            raise ValueError(
                f"push_pull_interval ({self.push_pull_interval} s) must be at most a third of "
                f"lease_timeout ({self.lease_timeout} s)"
            )
        if self.lease_renew_interval * 3 > self.lease_timeout:
            raise ValueError("lease_renew_interval must be at most a third of lease_timeout")
        if self.push_defer_max * 4 > self.suspicion_mult * self.probe_interval + 1e-9:
            raise ValueError(
                f"push_defer_max ({self.push_defer_max} s) must be at most a quarter of "
                f"suspicion_mult * probe_interval ({self.suspicion_mult * self.probe_interval} s)"
            )

    @property
    def message_budget(self) -> int:
        """Bytes one encoded message may take: ``udp_payload_limit - envelope_overhead``."""
        return self.udp_payload_limit - self.envelope_overhead

    def replace(self, **changes: Any) -> GossipConfig:
        """A copy with some fields changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def lan(cls) -> GossipConfig:
        """The defaults: memberlist's LAN profile."""
        return cls()

    @classmethod
    def wan(cls) -> GossipConfig:
        """Slower timers for high-latency, lossy links (memberlist's WAN profile)."""
        return cls(
            gossip_interval=0.5,
            gossip_fanout=4,
            gossip_to_dead_time=60.0,
            probe_interval=5.0,
            probe_timeout=3.0,
            suspicion_mult=6,
            reconnect_interval=30.0,
            push_pull_interval=10.0,
            stream_timeout=30.0,
            lease_timeout=30.0,
            lease_renew_interval=6.0,
            join_retry_interval=3.0,
            push_defer_max=2.0,
        )

    @classmethod
    def fast(cls) -> GossipConfig:
        """About ten times faster than LAN, for tests and simulations on loopback."""
        return cls(
            gossip_interval=0.02,
            gossip_to_dead_time=3.0,
            probe_interval=0.1,
            probe_timeout=0.05,
            reconnect_interval=1.0,
            dead_node_reclaim=30.0,
            home_grace=6.0,
            join_retry_interval=0.1,
            push_pull_interval=0.3,
            stream_timeout=1.0,
            lease_timeout=1.0,
            lease_renew_interval=0.2,
            push_defer_max=0.1,
        )


def retransmit_limit(mult: int, n: int) -> int:
    """How many times one broadcast is sent in a cluster of ``n``: ``mult*ceil(log10(n+1))``."""
    return mult * math.ceil(math.log10(max(0, n) + 1))


def suspicion_timeout(mult: int, n: int, interval: float) -> float:
    """SWIM's (Lifeguard's minimum) suspicion timeout: ``mult*max(1, log10(max(1, n)))*interval``.

    Grows with log N because news takes about log N gossip hops to reach everyone.
    """
    return mult * max(1.0, math.log10(max(1, n))) * interval


def suspicion_bounds(config: GossipConfig, n: int) -> tuple[float, float]:
    """Lifeguard's (minimum, maximum) suspicion timeout in a cluster of ``n`` members."""
    low = suspicion_timeout(config.suspicion_mult, n, config.probe_interval)
    return low, low * config.suspicion_max_timeout_mult


def expected_confirmations(config: GossipConfig, n: int) -> int:
    """Independent suspicions Lifeguard waits for to reach the minimum timeout.

    ``suspicion_mult - 2`` (memberlist's choice), or 0 when the cluster is too small to
    produce that many (the timeout is then the minimum from the start).
    """
    k = max(0, config.suspicion_mult - 2)
    return 0 if n - 2 < k else k


def lifeguard_timeout(low: float, high: float, confirmations: int, expected: int) -> float:
    """Lifeguard's suspicion timeout after ``confirmations`` independent suspicions.

    ``high - log(c + 1) / log(k + 1) * (high - low)``, never below ``low``; with ``k == 0``
    confirmations expected it is ``low``. Starts at ``high`` and drops fast with the first
    confirmations, so a truly dead peer is declared quickly while a lone, possibly wrong,
    accuser gives the accused the longest time to refute.
    """
    if expected < 1:
        return low
    fraction = math.log(max(0, confirmations) + 1) / math.log(expected + 1)
    return max(low, high - fraction * (high - low))


def awareness_multiplier(score: int, config: GossipConfig) -> int:
    """Lifeguard local-health multiplier of probe interval/timeout: ``score + 1``, capped."""
    return min(max(0, score), config.awareness_max_multiplier - 1) + 1
