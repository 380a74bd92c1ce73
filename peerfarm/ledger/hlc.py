"""Hybrid logical clock: 48-bit wall milliseconds and a 16-bit counter packed in one int.

Stamps order events across peers whose clocks disagree a little: a stamp never goes backwards on
one peer, and a peer that hears a stamp from the future moves past it. Pure: the wall time is
passed in (milliseconds), so a test drives the clock.
"""

from __future__ import annotations

COUNTER_BITS = 16
COUNTER_MASK = (1 << COUNTER_BITS) - 1
MAX_STAMP = (1 << 64) - 1

#: How far ahead of our wall clock a remote stamp may be before we refuse to follow it (ms).
#: A peer with a clock days ahead would otherwise drag every stamp of the farm with it.
MAX_DRIFT_MS = 24 * 3600 * 1000


def pack(wall_ms: int, counter: int) -> int:
    return (wall_ms << COUNTER_BITS) | (counter & COUNTER_MASK)


def wall_ms(stamp: int) -> int:
    return stamp >> COUNTER_BITS


def to_seconds(stamp: int) -> float:
    """The wall-clock part of a stamp as POSIX seconds (for display only)."""
    return wall_ms(stamp) / 1000.0


class HybridClock:
    """Issues strictly increasing stamps and absorbs the stamps it observes."""

    __slots__ = ("_last",)

    def __init__(self, last: int = 0) -> None:
        self._last = last

    @property
    def last(self) -> int:
        return self._last

    def now(self, wall_ms_now: int) -> int:
        """A new stamp, greater than every stamp issued or observed before."""
        candidate = pack(wall_ms_now, 0)
        self._last = candidate if candidate > self._last else self._last + 1
        return self._last

    def observe(self, stamp: int, wall_ms_now: int) -> None:
        """Move past a stamp seen in a remote update, unless it is absurdly far in the future."""
        if stamp > self._last and wall_ms(stamp) <= wall_ms_now + MAX_DRIFT_MS:
            self._last = stamp
