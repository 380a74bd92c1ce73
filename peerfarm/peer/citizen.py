"""A good citizen on a workstation: when this peer takes work, and host holds and drains.

Owns the loop that reads the ``--schedule`` and the desktop's idle time (``--when-idle``)
every :data:`POLL_INTERVAL` seconds and turns them into this peer's *away* reasons (gossiped
in its metadata, so every ``status`` says why it takes nothing), stopping the running renders
the moment the user comes back, and the reaction to a host hold written by any peer
(``peerfarm hold / drain HOST``): a drain of this peer stops its renders at once. Stopped
renders hand their frames back (a release in the ledger), so another peer takes them without
waiting out a lease. The rules are pure (:mod:`peerfarm.scheduler.availability`); the idle
time comes from :mod:`peerfarm.peer.idle`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

from ..scheduler.availability import USER_RETURNED, away_reasons
from .idle import IdleSource, UnknownIdle, detect_idle_source

if TYPE_CHECKING:
    from .node import Node

log = logging.getLogger("peerfarm")

#: Seconds between two looks at the schedule and the idle time: a returning user waits at
#: most this long (plus the renderer's stop) for the machine.
POLL_INTERVAL = 0.5
#: The stop reason of renders ended by ``peerfarm drain HOST --now``.
DRAINED = "drained"


class Citizen:
    """Availability of one node: its away reasons and its reaction to holds."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.source: IdleSource | None = node.parts.idle_source
        #: Set once the schedule and the idle time were read (the worker claims after that).
        self.ready = trio.Event()

    async def run(self) -> None:
        node = self.node
        parts = node.parts
        if parts.schedule is None and parts.when_idle is None:
            self.ready.set()
            return
        if parts.when_idle is not None and self.source is None:
            self.source = await trio.to_thread.run_sync(detect_idle_source)
            if isinstance(self.source, UnknownIdle):
                log.warning(
                    "--when-idle: this machine does not tell its desktop's idle time "
                    "(no logind session, xprintidle, ioreg or GetLastInputInfo): counted as idle"
                )
            else:
                log.info("--when-idle: the desktop's idle time comes from %s", self.source.name)
        while True:
            await node.gate()
            try:
                await self.check()
            except Exception:  # an idle source's surprise must not stop the peer
                log.exception("reading the schedule / idle time failed")
            self.ready.set()
            await trio.sleep(POLL_INTERVAL)

    async def check(self) -> None:
        """Read the schedule and the idle time once; act on a change."""
        node = self.node
        parts = node.parts
        idle = None
        if parts.when_idle is not None and self.source is not None:
            if self.source.blocking:
                idle = await trio.to_thread.run_sync(self.source.idle_seconds)
            else:
                idle = self.source.idle_seconds()
        reasons = away_reasons(
            schedule=parts.schedule,
            local_now=parts.local_time(),
            when_idle=parts.when_idle,
            idle_seconds=idle,
        )
        returned = "idle" in reasons and "idle" not in node.away
        node.set_away(reasons)
        if returned and node.worker.renders():
            log.info("the user is back: handing this peer's frames back")
            node.worker.stop_renders(USER_RETURNED)

    def host_changed(self, node_id: str, hold: dict[str, Any] | None) -> None:
        """A hold register changed (any peer may write it): a drain of this peer stops its
        renders now; a hold lets them finish (the worker takes nothing new meanwhile)."""
        node = self.node
        if node_id != node.node_id:
            return
        if hold is None:
            log.info("this peer was released: it takes work again")
            return
        log.info(
            "this peer was %s by %s", "drained" if hold["mode"] == "drain" else "held", hold["by"]
        )
        if hold["mode"] == "drain":
            node.worker.stop_renders(DRAINED)
