"""Frame ranges as artists write them, parsed in exactly one place.

Accepted: ``7``, ``1-240``, ``1,5,10-20``, ``1-240x2`` (a step), with spaces tolerated around
commas. Frames are integers from 0 to ``MAX_FRAME_NUMBER``; duplicates merge; the order written
is the order rendered. Anything else raises :class:`~peerfarm.errors.FrameRangeError` with one
message that quotes the bad part. The ledger stores frames compactly as runs
``(start, stop, step)``; the helpers here convert both ways.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence

from .errors import FrameRangeError

#: The most frames one range may expand to; protects every peer's memory from a typo.
MAX_FRAMES = 1_000_000
#: The highest frame number (what the ledger accepts from the network, ``codec.MAX_FRAME``).
MAX_FRAME_NUMBER = 10**9

_PART = re.compile(r"^(\d+)(?:-(\d+)(?:x(\d+))?)?$")

Run = tuple[int, int, int]
"""A run of frames: ``(first, last, step)``, inclusive, step >= 1."""


def _q(text: str) -> str:
    """``text`` quoted for an error message, cut short."""
    return repr(text if len(text) <= 40 else text[:37] + "...")


def parse_frames(text: str, *, limit: int = MAX_FRAMES) -> tuple[int, ...]:
    """Parse ``text`` into frame numbers in rendering order, duplicates merged."""
    if not isinstance(text, str) or not text.strip():
        raise FrameRangeError("empty frame range: write frames like 1-240, 7 or 1,5,10-20")
    seen: set[int] = set()
    frames: list[int] = []
    for raw in text.split(","):
        part = raw.strip()
        match = _PART.match(part)
        if match is None:
            raise FrameRangeError(
                f"bad frame range {_q(part)} in {_q(text)}: use N, A-B or A-BxSTEP (e.g. 1-240x2)"
            )
        if any(len(g.lstrip("0")) > 10 for g in match.groups() if g is not None):
            raise FrameRangeError(f"bad frame range {_q(part)}: a number there is far too large")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        step = int(match.group(3)) if match.group(3) is not None else 1
        if last > MAX_FRAME_NUMBER:
            raise FrameRangeError(
                f"bad frame range {_q(part)}: frame numbers go up to {MAX_FRAME_NUMBER:,}"
            )
        if last < first:
            raise FrameRangeError(f"bad frame range {_q(part)}: {last} comes before {first}")
        if step < 1:
            raise FrameRangeError(f"bad frame range {_q(part)}: the step must be at least 1")
        count = (last - first) // step + 1
        if count > limit or len(frames) + count > limit:
            raise FrameRangeError(
                f"frame range {_q(part)} is too large: at most {limit:,} frames per job"
            )
        for frame in range(first, last + 1, step):
            if frame not in seen:
                seen.add(frame)
                frames.append(frame)
    return tuple(frames)


def to_runs(frames: Iterable[int]) -> list[Run]:
    """Compress frames (in order) into runs of constant step, for compact storage."""
    runs: list[Run] = []
    items = list(frames)
    i = 0
    while i < len(items):
        first = items[i]
        if i + 1 < len(items) and items[i + 1] > first:
            step = items[i + 1] - first
            j = i + 1
            while j + 1 < len(items) and items[j + 1] - items[j] == step:
                j += 1
            runs.append((first, items[j], step))
            i = j + 1
        else:
            runs.append((first, first, 1))
            i += 1
    return runs


def from_runs(runs: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """Expand runs back into frames; the inverse of :func:`to_runs`."""
    frames: list[int] = []
    for first, last, step in runs:
        frames.extend(range(first, last + 1, step))
    return tuple(frames)


def frame_position(runs: Sequence[Sequence[int]], frame: int) -> int | None:
    """Where ``frame`` is in the rendering order the runs describe (None: not in them), in
    O(runs) without expanding them."""
    position = 0
    for first, last, step in runs:
        if first <= frame <= last and (frame - first) % step == 0:
            return position + (frame - first) // step
        position += (last - first) // step + 1
    return None


def runs_overlap(runs: Sequence[Sequence[int]]) -> bool:
    """Whether two runs share a frame (a job's frames must be distinct). O(runs log runs) when
    the runs' spans are disjoint, the usual case; exact by expansion when spans overlap."""
    spans = sorted((first, last) for first, last, _step in runs)
    if all(b_first > a_last for (_a, a_last), (b_first, _b) in itertools.pairwise(spans)):
        return False
    seen: set[int] = set()
    for first, last, step in runs:
        for frame in range(first, last + 1, step):
            if frame in seen:
                return True
            seen.add(frame)
    return False


def format_frames(frames: Iterable[int]) -> str:
    """Write frames back the way an artist would (``1-10,12,20-40x2``)."""
    parts = []
    for first, last, step in to_runs(frames):
        if first == last:
            parts.append(str(first))
        elif step == 1:
            parts.append(f"{first}-{last}")
        elif (last - first) // step == 1:
            parts.append(f"{first},{last}")
        else:
            parts.append(f"{first}-{last}x{step}")
    return ",".join(parts)
