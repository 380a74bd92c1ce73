"""When a peer gives its machine to the farm and how much of it: every availability rule, pure.

Owns the ``--schedule`` language (parsing, one-line errors, "does it allow this local time"),
the idle rule of ``--when-idle``, the reasons a peer gives for taking nothing new now
(:func:`away_reasons`), and the reason a peer with ``--max-memory`` refuses a job whose frames
peaked above it (:func:`memory_reason`). No clock, no platform: callers pass the local time,
the desktop's idle seconds (from :mod:`peerfarm.peer.idle`) and the job's recorded peak.

The schedule language: entries separated by commas; an entry is days, a time window, or both::

    Mon-Fri 19:00-08:00, Sat-Sun       weeknights and the whole weekend
    22:00-06:00                        every night
    Mon Wed Fri                        three whole days

Days are ``Mon`` .. ``Sun`` (any case, three letters or the full name), ranges wrap
(``Fri-Mon``); ``daily`` means every day. A window whose end is not after its start runs past
midnight and belongs to the day it starts on: ``Mon-Fri 19:00-08:00`` covers Friday 19:00 to
Saturday 08:00, but not Monday 00:00-08:00 (that is Sunday's night).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from ..errors import UsageError

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
FULL_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MINUTES_PER_DAY = 24 * 60
_TIME_RANGE_RE = re.compile(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")

#: Waiting reasons (the ``away`` metadata of a peer and its log lines).
OUTSIDE_SCHEDULE = "outside its schedule"
USER_ACTIVE = "its user is at the machine"
#: The stop reason of renders ended because the user came back (their frames are handed back).
USER_RETURNED = "user returned"


@dataclass(frozen=True, slots=True)
class Window:
    """Days (0 = Monday) and minutes of the day ``[start, end)``; ``end <= start`` wraps."""

    days: frozenset[int]
    start: int = 0
    end: int = MINUTES_PER_DAY

    def allows(self, weekday: int, minute: int) -> bool:
        if self.start < self.end:
            return weekday in self.days and self.start <= minute < self.end
        # Past midnight: the evening of a listed day, or the morning after one.
        return (weekday in self.days and minute >= self.start) or (
            (weekday - 1) % 7 in self.days and minute < self.end
        )


@dataclass(frozen=True, slots=True)
class Schedule:
    """The hours a peer takes new work (``--schedule``), in the peer's local time."""

    text: str
    windows: tuple[Window, ...]

    @classmethod
    def parse(cls, text: str) -> Schedule:
        """Parse ``--schedule``; a spec that does not parse is a one-line ``UsageError``."""
        entries = [e.strip() for e in text.split(",")]
        if not text.strip() or any(not e for e in entries):
            raise UsageError(
                f"bad --schedule {text!r}: expected e.g. 'Mon-Fri 19:00-08:00, Sat-Sun'"
            )
        return cls(" ".join(text.split()), tuple(_parse_entry(e, text) for e in entries))

    def allows(self, when: datetime) -> bool:
        """Whether the schedule lets the peer claim new work at local time ``when``."""
        weekday, minute = when.weekday(), when.hour * 60 + when.minute
        return any(window.allows(weekday, minute) for window in self.windows)


def _parse_entry(entry: str, text: str) -> Window:
    days: set[int] = set()
    start, end = 0, MINUTES_PER_DAY
    timed = False
    for token in entry.split():
        match = _TIME_RANGE_RE.match(token)
        if match is not None:
            if timed:
                raise UsageError(f"bad --schedule {text!r}: one time window per entry ({entry!r})")
            h1, m1, h2, m2 = (int(g) for g in match.groups())
            if h1 > 24 or h2 > 24 or m1 > 59 or m2 > 59 or (h1 == 24 and m1) or (h2 == 24 and m2):
                raise UsageError(f"bad --schedule {text!r}: no such time in {token!r}")
            start, end = h1 * 60 + m1, h2 * 60 + m2
            if start == end:
                raise UsageError(f"bad --schedule {text!r}: {token!r} is an empty window")
            timed = True
        elif ":" in token:
            raise UsageError(f"bad --schedule {text!r}: write a time window as HH:MM-HH:MM")
        elif timed:
            raise UsageError(f"bad --schedule {text!r}: days come before the time ({entry!r})")
        else:
            days.update(_parse_days(token, text))
    if not days:
        days = set(range(7))
    if start == MINUTES_PER_DAY:
        start = 0
    return Window(frozenset(days), start, end)


def _day(name: str, text: str) -> int:
    lowered = name.lower()
    for names in (DAY_NAMES, FULL_DAY_NAMES):
        if lowered in names:
            return names.index(lowered)
    raise UsageError(
        f"bad --schedule {text!r}: {name!r} is not a day (Mon..Sun) or a time (19:00-08:00)"
    )


def _parse_days(token: str, text: str) -> set[int]:
    if token.lower() in ("daily", "every", "all"):
        return set(range(7))
    if "-" not in token:
        return {_day(token, text)}
    first, _, last = token.partition("-")
    a, b = _day(first, text), _day(last, text)
    return {(a + i) % 7 for i in range((b - a) % 7 + 1)}


def away_reasons(
    *,
    schedule: Schedule | None,
    local_now: datetime,
    when_idle: float | None,
    idle_seconds: float | None,
) -> dict[str, str]:
    """Why this peer takes no new work now, by source (``schedule``, ``idle``); empty: it does.

    ``when_idle`` is the idle time (seconds) the desktop needs before the peer claims;
    ``idle_seconds`` is how long the desktop has been idle (``None``: unknown, counted as idle).
    """
    out: dict[str, str] = {}
    if schedule is not None and not schedule.allows(local_now):
        out["schedule"] = f"{OUTSIDE_SCHEDULE} ({schedule.text})"
    if when_idle is not None and idle_seconds is not None and idle_seconds < when_idle:
        out["idle"] = f"{USER_ACTIVE} (idle {_minutes(idle_seconds)} of {_minutes(when_idle)})"
    return out


def _minutes(seconds: float) -> str:
    if seconds < 60:
        return f"{int(seconds)} s"
    return f"{seconds / 60:.0f} min"


# --- memory ---------------------------------------------------------------------------------


def format_size(size: int) -> str:
    """Bytes for people: ``1.5 GiB``, ``600 MiB``, ``12 KiB``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if value >= 10 or unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover - the loop always returns


def memory_reason(peak: int, max_memory: object) -> str | None:
    """Why a peer advertising ``max_memory`` (bytes, its ``--max-memory``) refuses a job whose
    frames peaked at ``peak`` bytes on some peer, or ``None``. No figure on either side: no
    refusal (a value that is not a positive integer is ignored)."""
    if type(max_memory) is not int or max_memory <= 0 or peak <= max_memory:
        return None
    return f"frames peaked at {format_size(peak)}, over its --max-memory {format_size(max_memory)}"
