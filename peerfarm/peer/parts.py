"""What a peer is built from and what it counts: value objects shared by the peer's services.

Owns :class:`NodeParts` (everything a node needs, built by the daemon from real parts or by a
simulation from fakes), :class:`NodeStats` (the counters behind ``/metrics``), :class:`Running`
(a render in progress) and :class:`IncompatiblePeer` (a peer refused for its protocol).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import trio

from ..files.store import ContentStore
from ..gossip.config import GossipConfig
from ..gossip.transport import ForeignPeer, Transport
from ..ledger import Ledger
from ..ledger.model import FrameRecord
from ..ledger.store import LedgerStore
from ..renderers.base import Progress, Renderer, RenderLimits
from ..scheduler.availability import Schedule
from .idle import IdleSource

T = TypeVar("T")

#: Seconds between two notices to a peer that speaks a protocol we do not (it logs them).
INCOMPATIBLE_NOTICE_INTERVAL = 5.0
#: Seconds of silence after which an incompatible peer leaves ``peers``.
INCOMPATIBLE_FORGET_AFTER = 600.0


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """A daemon's way to run a blocking call: a trio worker thread (not cancellable)."""
    return await trio.to_thread.run_sync(fn, *args)


async def inline(fn: Callable[..., T], *args: Any) -> T:
    """A simulation's way: run it now on the event loop, then yield as a thread call would
    (without raising a cancellation: like a thread call, it cannot be cancelled midway)."""
    result = fn(*args)
    await trio.lowlevel.cancel_shielded_checkpoint()
    return result


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
    renderers: dict[str, Renderer]  # the plugins of the first render slot
    slots: int = 1
    #: The plugins of slots 2, 3...: one instance per slot, since a plugin renders one task at
    #: a time (a warm Blender keeps one scene loaded). Missing slots share ``renderers``.
    slot_renderers: list[dict[str, Renderer]] = field(default_factory=list)
    tags: Sequence[str] = ()
    allow_command: bool = False
    allow_scripts: bool = False
    ledger_store: LedgerStore | None = None
    frame_timeout: float | None = None
    #: Seconds a render may go with no new output line and no CPU time before it is stopped
    #: and its frames fail as "stuck" (``peerfarm.renderers.stuck``); None or 0: never.
    stuck_after: float | None = None
    #: Sends one job-end notification (``peerfarm.peer.notify``): (target, event id, summary).
    #: None: the real sender (HTTP POST, desktop). Simulations record instead.
    notify_sender: Callable[[str, str, dict[str, Any]], Awaitable[None]] | None = None
    #: Seconds another peer waits for an absent submitter before it sends a notification.
    notify_grace: float = 60.0
    #: Failed attempts of one job on this peer after which it stops taking the job (counted
    #: from the replicated ledger, so a restart does not forget them).
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
    #: Renderer name -> version (or, for Blender, the versions of every installation).
    renderer_versions: dict[str, Any] = field(default_factory=dict)
    #: Shared-storage mode (a NAS mounted on every peer, perhaps at different paths): scenes
    #: under it are read in place and outputs written there; nothing is transferred.
    shared_root: Path | None = None
    #: ``--schedule``: the local hours this peer takes new work (None: always).
    schedule: Schedule | None = None
    #: ``--when-idle`` in seconds: claim only after the desktop was idle that long, and hand
    #: running frames back when its user returns (None: render whatever the user does).
    when_idle: float | None = None
    #: Where the desktop's idle time comes from (None: detected when ``when_idle`` is set).
    idle_source: IdleSource | None = None
    #: The local wall time the schedule is read in (simulations pass one that follows trio's).
    local_time: Callable[[], datetime] = field(default=datetime.now)
    #: ``--threads``: renders use at most this many threads (None: the renderer decides).
    threads: int | None = None
    #: ``--nice``: renders run at a lower priority.
    nice: bool = False
    #: ``--max-memory`` in bytes: refuse jobs whose frames peaked above it, stop renders over it.
    max_memory: int | None = None
    #: Simulations only: awaited by every loop of the node before each step, so a test can
    #: freeze the whole peer (SIGSTOP). None in a real daemon.
    gate: Callable[[], Awaitable[None]] | None = None
    #: Runs one blocking file operation (``Node.blocking``): in a worker thread in a daemon;
    #: :func:`inline` in simulations, so that virtual time never passes while a thread works
    #: and a loaded machine cannot change what a simulation sees.
    offload: Callable[..., Awaitable[Any]] = field(default=in_thread)


def render_limits(parts: NodeParts) -> RenderLimits:
    """A fresh :class:`RenderLimits` (caps, and the meter of one render) for this peer."""
    return RenderLimits(threads=parts.threads, nice=parts.nice, max_memory=parts.max_memory)


@dataclass(slots=True)
class NodeStats:
    frames_rendered: int = 0
    frames_failed: int = 0
    frames_lost: int = 0  # renders stopped because another peer won the claim
    takeovers: int = 0
    takeovers_refused: int = 0  # lapsed leases whose owner said it still renders
    steals_refused: int = 0  # steals the chunk's home refused (taken or promised already)
    steals_unanswered: int = 0  # order-keeping steals dropped: the home did not answer
    steals_granted: int = 0  # frames this peer, as their home, promised to a thief
    render_seconds: float = 0.0
    deltas_sent: int = 0
    deltas_received: int = 0
    syncs: int = 0
    sync_deltas_received: int = 0  # ledger entries received in push-pulls
    sync_failures: int = 0
    bad_messages: int = 0
    stream_errors: int = 0
    delivered: int = 0
    delivery_failures: int = 0
    transfer_bytes: int = 0
    #: Renders this peer finished of a frame whose winning result (same epoch) is another
    #: peer's: summed over the farm, every completed render beyond the first of a frame.
    duplicate_frames: int = 0
    render_seconds_by_peer: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class Running:
    """A render in progress on this peer (one chunk of one job)."""

    job: str
    frames: tuple[int, ...]
    claims: dict[int, FrameRecord]
    scope: trio.CancelScope
    started: float
    slot: int = 0
    progress: Progress | None = None
    stop_reason: str | None = None
    slot_freed: bool = False
    renewed: float | None = None  # when its claims were last renewed (None: never since start)


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
