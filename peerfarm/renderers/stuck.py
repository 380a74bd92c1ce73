"""Stuck renders: the rule that says a render makes no progress any more. Pure.

A render is *stuck* when, for ``after`` seconds, it printed no new output line and its
process group used no more CPU time (less than ``CPU_EPSILON`` seconds). Either sign of life
resets the clock: a long quiet render still burns CPU, and a render waiting on the network
still prints. The sampling (lines counted by the output pump, CPU time read with psutil over
the renderer's process group) lives in ``renderers.base.run_logged``; the setting is
``peerfarm up --stuck-after SECONDS`` (:data:`DEFAULT_AFTER`; 0 turns the check off), carried
to ``run_logged`` in :data:`STUCK_AFTER` so every plugin that starts a process gets it.
A stuck render is stopped and its frames fail with a reason starting "stuck", so they are
retried on another peer by the normal retry rules.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass

#: Default seconds without progress before a render counts as stuck (generous: 10 minutes).
DEFAULT_AFTER = 600.0
#: CPU seconds of growth that count as progress (below it: clock-tick noise).
CPU_EPSILON = 0.01
#: Seconds a render may go without progress before it is stopped; 0 or less: never.
STUCK_AFTER: contextvars.ContextVar[float] = contextvars.ContextVar("stuck_after", default=0.0)


def sample_interval(after: float) -> float:
    """How often to sample: a quarter of the limit, between 0.05 s and 5 s."""
    return min(5.0, max(0.05, after / 4))


@dataclass(frozen=True, slots=True)
class Watch:
    """The last sign of life seen: when, and the line count and CPU seconds then."""

    after: float
    since: float
    lines: int = 0
    cpu: float = 0.0

    def observe(self, now: float, lines: int, cpu: float) -> Watch:
        """The watch after a sample (a new line or more CPU time resets the clock)."""
        if lines != self.lines or cpu > self.cpu + CPU_EPSILON:
            return Watch(self.after, now, lines, max(cpu, self.cpu))
        return self

    def stuck(self, now: float) -> bool:
        return self.after > 0 and now - self.since >= self.after


def reason(after: float) -> str:
    return f"stuck: no output and no CPU time for {after:g} s"
