"""peerfarm's benchmarks (``python bench/run.py`` runs them all; see docs/bench/).

Real daemons come from :mod:`peerfarm.testing.daemons`, the module the tests and the demo use:
:func:`local_farm` starts the benchmarks' farms with it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from peerfarm.errors import PeerfarmError

if TYPE_CHECKING:
    from peerfarm.testing.daemons import LocalFarm

ROOT = Path(__file__).resolve().parents[1]
#: Seconds a benchmark daemon may take to start (a loaded machine starts them slowly).
START_TIMEOUT_S = 60.0


class BenchError(PeerfarmError):
    """A benchmark could not run (a daemon did not start, a wait timed out)."""


def local_farm(peers: int, *, preset: str = "lan", slots: int = 1) -> LocalFarm:
    """``peers`` daemons (peer1..N) on 127.0.0.1, all joined to the first, taking command jobs,
    every one ready and seeing every other. The caller closes it (or uses it in ``with``)."""
    # Imported here: the RQ baseline's fork worker imports this package (for bench.rq_tasks)
    # in every job's fresh process, and the daemons' test tooling took it 0.4 s a job.
    from peerfarm.testing.daemons import LocalFarm

    farm = LocalFarm(preset=preset, ready_timeout=START_TIMEOUT_S)
    try:
        farm.start_all([f"peer{i + 1}" for i in range(peers)], allow_command=True, slots=slots)
    except BaseException:
        farm.close()
        raise
    return farm


def proc_cpu_seconds(pid: int) -> float:
    """User+system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return ticks / os.sysconf("SC_CLK_TCK")


def proc_rss_bytes(pid: int) -> int:
    """Resident set size of a process (Linux /proc; pid 0 is this process)."""
    for line in Path(f"/proc/{pid or 'self'}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS for pid {pid}")
