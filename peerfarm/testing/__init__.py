"""Fakes and harnesses that are part of the library (trio.testing style).

* :mod:`peerfarm.testing.fakes` — a fake renderer, a render log, a deterministic clock;
* :mod:`peerfarm.testing.sim` — many real nodes in one process on the in-memory network;
* :mod:`peerfarm.testing.daemons` — real ``peerfarm up`` processes on loopback (imported by
  name: tests, benchmarks and the demo);
"""

from .fakes import (
    WALL_EPOCH_MS,
    FakeRenderer,
    RenderLog,
    RenderRecord,
    expected_output,
    rendered_by,
    sim_clock,
)
from .sim import Invariants, SimFarm, SimPeer, frames_of, output_files

__all__ = [
    "WALL_EPOCH_MS",
    "FakeRenderer",
    "Invariants",
    "RenderLog",
    "RenderRecord",
    "SimFarm",
    "SimPeer",
    "expected_output",
    "frames_of",
    "output_files",
    "rendered_by",
    "sim_clock",
]
