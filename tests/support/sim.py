"""One simulated peer and its control facade (:class:`peerfarm.farm.Farm`): what the API, the
CLI and the dashboard tests talk to when they need the daemon's real answers but not a daemon.

Runs under whatever clock the test has: a MockClock in tests/sim, real time in the real and web
layers (where a real HTTP server or a browser is on the other end).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peerfarm.farm import Farm
from peerfarm.testing import SimFarm, SimPeer

FARM_ID = "0123456789abcdef"


@dataclass
class OnePeer:
    sim: SimFarm
    peer: SimPeer
    facade: Farm


@asynccontextmanager
async def one_peer(root: Path, **options: Any) -> AsyncIterator[OnePeer]:
    """A one-peer :class:`SimFarm` in ``root`` (``options`` go to it) and the peer's facade."""
    options.setdefault("invariants", "converged")
    sim = SimFarm(root, **options)
    async with sim.running():
        (peer,) = await sim.start(1)
        yield OnePeer(sim, peer, Farm(peer.node, farm_id=FARM_ID))
