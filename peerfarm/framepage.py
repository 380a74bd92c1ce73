"""Pages of one job's frames: which frames a ``status JOB`` answer carries, and the state map.

A job may have a million frames; its summary (``JobView``) is kept by the ledger as frames
change, so only the frame list costs time in proportion to the job. This module owns choosing
that list, pure over a ledger:

- A :class:`~peerfarm.control.FrameQuery` names the frames wanted: a range as ``submit``
  takes it (``1-10,20``), some states (``failed``, ``pending,rendering``), and a cap. Frames
  come in the job's rendering order.
- :func:`select_frames` picks the page and says how many frames matched in all (the summary
  counts stay whole whatever the page) and the first matching frame left out (``next``). It
  stops as soon as the page is full and the next frame is known: a state asked for alone is
  counted by the ledger's counters, the frames claimed now come from the ledger's claim index.
- :func:`state_map` is every frame's state as one character per frame, in rendering order
  (``p`` pending, ``r`` rendering, ``d`` done, ``f`` failed): the dashboard draws its frame map
  from that, 100 KB for 100,000 frames instead of 100,000 JSON objects.
- A :class:`FrameJournal` numbers every frame change a peer sees (``seq``), so a client that
  holds a job's map as of ``seq`` asks only for what changed since (:func:`changed_states`);
  it remembers the last ``keep`` changes (a few MB), and a client further behind reloads the
  whole map.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from .control import FramePage, FrameQuery
from .frames import frame_position, parse_frames
from .ledger import Ledger
from .ledger.model import JobSpec, Status

#: Frames in one ``status JOB`` answer over HTTP when the request names no ``limit``: about
#: 200 KB of JSON, 20 ms to build; a script asks for more with ``limit`` or pages on ``next``.
DEFAULT_LIMIT = 1000
#: A ledger status -> the state people see (a released or retrying frame waits: pending).
STATE_OF = {
    Status.PENDING: "pending",
    Status.RELEASED: "pending",
    Status.RETRYING: "pending",
    Status.CLAIMED: "rendering",
    Status.DONE: "done",
    Status.FAILED: "failed",
}
#: One character per state in :func:`state_map` (documented in the README; append-only).
STATE_CODES = {"pending": "p", "rendering": "r", "done": "d", "failed": "f"}
_CODE_BYTE = {status: ord(STATE_CODES[state]) for status, state in STATE_OF.items()}


@dataclass(frozen=True, slots=True)
class Selection:
    """The frames of one page, in rendering order, and what was left out."""

    frames: list[int]
    matched: int  # frames matching the query in the whole job
    next: int | None  # the first matching frame not in ``frames`` (None: none left out)


#: Beyond this many runs, a job's positions come from an index of its frames, not its runs.
_FEW_RUNS = 16


def position_of(spec: JobSpec) -> Callable[[int], int | None]:
    """frame -> its position in the job's rendering order (None: not the job's): arithmetic
    for one run, a walk of the runs for a few, an index of every frame for many."""
    runs = spec.runs
    if len(runs) == 1:
        first, last, step = runs[0]

        def one_run(frame: int) -> int | None:
            inside = first <= frame <= last and (frame - first) % step == 0
            return (frame - first) // step if inside else None

        return one_run
    if len(runs) <= _FEW_RUNS:
        return lambda frame: frame_position(runs, frame)
    return {frame: i for i, frame in enumerate(spec.frames)}.get


def _in_order(spec: JobSpec, frames: Iterable[int]) -> list[int]:
    """The job's frames among ``frames``, in its rendering order."""
    position = position_of(spec)
    placed = [(at, f) for f in frames if (at := position(f)) is not None]
    placed.sort()
    return [f for _at, f in placed]


def _candidates(spec: JobSpec, wanted: str | None) -> Iterable[int]:
    """The job's frames in rendering order, within ``wanted`` when given."""
    if wanted is None:
        return spec.frames
    asked = parse_frames(wanted)
    if len(asked) < spec.frame_count:
        return _in_order(spec, asked)
    keep = set(asked)
    return (f for f in spec.frames if f in keep)


def _counted(ledger: Ledger, spec: JobSpec, states: tuple[str, ...]) -> int:
    """How many of the job's frames are in ``states``, from the ledger's counters."""
    counts = ledger.counts(spec.id)
    by_state = {
        "pending": counts.pending,
        "rendering": counts.rendering,
        "done": counts.done,
        "failed": counts.failed,
    }
    return sum(by_state[s] for s in states)


def select_frames(ledger: Ledger, spec: JobSpec, query: FrameQuery) -> Selection:
    """The frames of ``spec`` that ``query`` asks for (see the module's rules)."""
    limit = query.limit
    if not query.filtered:
        total = spec.frame_count
        if limit is None or limit >= total:
            return Selection(list(spec.frames), total, None)
        return Selection(list(spec.frames[:limit]), total, spec.frames[limit])
    known: int | None = None  # the match count, when the ledger's counters give it
    if query.frames is None:
        known = _counted(ledger, spec, query.states)
        if query.states == ("rendering",):
            claimed = [frame for frame, _record in ledger.claimed_frames(spec.id)]
            return _page(iter(_in_order(spec, claimed)), limit, known)
        if known == 0:
            return Selection([], 0, None)
    candidates: Iterator[int] = iter(_candidates(spec, query.frames))
    if query.states:
        wanted = set(query.states)
        candidates = (f for f in candidates if STATE_OF[ledger.frame_status(spec.id, f)] in wanted)
    return _page(candidates, limit, known)


def _page(frames: Iterator[int], limit: int | None, known: int | None) -> Selection:
    """Take up to ``limit`` frames and the next one; count the rest unless ``known``."""
    page: list[int] = []
    following: int | None = None
    seen = 0
    for frame in frames:
        seen += 1
        if limit is None or len(page) < limit:
            page.append(frame)
        elif following is None:
            following = frame
            if known is not None:
                break
        if known is not None and seen >= known:
            break
    return Selection(page, seen if known is None else known, following)


def page_view(query: FrameQuery, selection: Selection) -> FramePage:
    """What a page of frames holds, for ``StatusView["frames_page"]``."""
    return {
        "frames": query.frames,
        "states": list(query.states),
        "limit": query.limit,
        "matched": selection.matched,
        "returned": len(selection.frames),
        "next": selection.next,
    }


def state_map(ledger: Ledger, spec: JobSpec) -> str:
    """Every frame's state as one character (``STATE_CODES``), in rendering order.

    Work is in proportion to the frames that have a record (frames never touched are pending),
    with no object made per frame."""
    out = bytearray(b"p") * spec.frame_count
    statuses = ledger.frame_statuses(spec.id)  # done records stay packed (ledger.compact)
    runs = spec.runs
    if len(runs) == 1:  # the usual job: no call per frame
        first, _last, step = runs[0]
        for frame, status in statuses:
            out[(frame - first) // step] = _CODE_BYTE[status]
    else:
        index = {frame: i for i, frame in enumerate(spec.frames)}.get
        for frame, status in statuses:
            at = index(frame)
            if at is not None:
                out[at] = _CODE_BYTE[status]
    return out.decode("ascii")


class FrameJournal:
    """The frames that changed on this peer, in order, numbered: ``seq`` counts every change."""

    def __init__(self, keep: int = 50_000) -> None:
        self.seq = 0
        self._log: deque[tuple[str, int]] = deque(maxlen=keep)
        self._ids: dict[str, str] = {}  # one string per job id (deltas bring their own copies)

    def note(self, job: str, frame: int) -> None:
        job = self._ids.setdefault(job, job)
        if len(self._ids) > 10_000:  # ids of jobs long gone: forget them (only sharing is lost)
            self._ids = {job: job}
        self._log.append((job, frame))
        self.seq += 1

    def since(self, seq: int, job: str) -> set[int] | None:
        """The frames of ``job`` changed after ``seq``; None when the journal no longer holds
        every change since then (or ``seq`` is not one it gave)."""
        first = self.seq - len(self._log)
        if not first <= seq <= self.seq:
            return None
        return {frame for j, frame in itertools.islice(self._log, seq - first, None) if j == job}


def changed_states(ledger: Ledger, spec: JobSpec, frames: Iterable[int]) -> tuple[list[int], str]:
    """(positions, one state character per position) of ``frames`` of the job, by position."""
    position = position_of(spec)
    found = []
    for frame in frames:
        at = position(frame)
        if at is not None:
            found.append((at, chr(_CODE_BYTE[ledger.frame_status(spec.id, frame)])))
    found.sort()
    return [at for at, _code in found], "".join(code for _at, code in found)
