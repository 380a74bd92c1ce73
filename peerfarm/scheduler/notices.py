"""Job-end notifications: what the events are, and which peer sends each one. Pure.

A job submitted with ``--notify URL`` (an HTTP POST of its summary) or ``--notify desktop``
(the submitter's desktop) is announced when it *ends*: every frame done ("done"), or it failed
(every frame finished with some failed, or the farm halted it). Cancelled jobs are not
announced. An event is numbered by the sum of the job's frame epochs, so a job retried and
ending again is a new event (a retry opens a new epoch for every frame it touches).

Who sends, with ``grace`` seconds:

1. the submitter, as soon as it sees the event (desktop targets: only ever the submitter);
2. while the submitter is not alive (in this peer's view) for ``grace`` seconds after the
   event was seen, the alive peer with the lowest node id among the others;
3. a claim whose sender is gone for ``grace`` seconds without a result is taken over by rule
   1/2's peer, and a peer that finds its own claim from an earlier life (it restarted while
   sending) sends again.

Before sending in another peer's place (rules 2 and 3), a peer syncs with that peer directly
(as a lease takeover is confirmed with its owner): if it answers, it is up and this peer does
not send. The ledger's notice register ``(N, job, event)`` makes it once: a peer writes ``claimed``
(saved to disk first) BEFORE it sends, and ``sent`` (or ``failed``) after; nobody sends for an
event whose register says sent/failed, or claimed by a peer that is alive.

What is guaranteed, precisely: every send is preceded by a durable claim; the sender journals
the send on its own disk (fsync) before it records ``sent``, so a sender restarted after the
send records it instead of sending again; and no peer sends for an event whose register says
sent/failed, or claimed by a peer that is alive (or gone for less than ``grace``). Within one
connected farm each event is therefore sent once, whatever peers crash and restart. A repeat
remains possible in two cases only: (a) the sender crashed during the send itself, after its
claim was saved and before its journal line (the next claim sends again: at-least-once wins
over at-most-once there), and (b) the farm was split for longer than ``grace`` with the
submitter on one side (each side's rule picks a sender: no serverless farm can tell a dead
peer from an unreachable one). Each POST carries the event's id (``X-Peerfarm-Event`` and the
``event`` field) so a receiver can drop such a repeat. When no peer of the farm is up, nothing
is sent until one is.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..errors import UsageError
from ..ledger import Ledger
from ..ledger.model import JobSpec, JobState

#: The spec option holding the targets (wire name: never rename).
NOTIFY = "notify"
DESKTOP = "desktop"
MAX_TARGETS = 4
MAX_URL = 500
#: Register phases (wire values).
CLAIMED = "claimed"
SENT = "sent"
FAILED = "failed"
PHASES = (CLAIMED, SENT, FAILED)
#: Default seconds another peer waits for the submitter before it sends in its place.
DEFAULT_GRACE = 60.0


def check_targets(items: Iterable[str]) -> list[str]:
    """Submit-time check: "desktop" or http(s) URLs, at most :data:`MAX_TARGETS`."""
    out: list[str] = []
    for item in items:
        text = item.strip()
        if text.lower() == DESKTOP:
            text = DESKTOP
        else:
            parts = urlsplit(text)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise UsageError(f"--notify {text[:80]!r}: give an http(s) URL or 'desktop'")
            if len(text) > MAX_URL or any(c.isspace() or ord(c) < 32 for c in text):
                raise UsageError(f"--notify: a URL of at most {MAX_URL} plain characters")
        if text not in out:
            out.append(text)
    if len(out) > MAX_TARGETS:
        raise UsageError(f"--notify: at most {MAX_TARGETS} targets")
    return out


def targets_of(spec: JobSpec) -> tuple[str, ...]:
    """The job's targets as read from a spec of the network (anything odd is dropped)."""
    value = spec.options.get(NOTIFY)
    if not isinstance(value, list | tuple):
        return ()
    try:
        return tuple(check_targets([v for v in value if isinstance(v, str)]))
    except UsageError:
        return ()


@dataclass(frozen=True, slots=True)
class JobEvent:
    job: str
    number: int  # the sum of the job's frame epochs: a retried job's next end is a new event
    state: str  # "done" | "failed"

    @property
    def id(self) -> str:
        """What a receiver dedupes on."""
        return f"{self.job}:{self.number}:{self.state}"


def event_of(ledger: Ledger, job: str) -> JobEvent | None:
    """The job's current end event, or None while it runs (or when it was cancelled)."""
    state = ledger.job_state(job)
    if state not in (JobState.DONE, JobState.FAILED):
        return None
    number = ledger.epoch_sum(job)  # kept by every write: no walk over the frames
    return JobEvent(job, number, state.value)


@dataclass(frozen=True, slots=True)
class Mark:
    """The notice register of one event as this replica holds it."""

    phase: str
    node: str  # who wrote it


def mark_of(value: Any, node: str) -> Mark | None:
    if isinstance(value, list) and len(value) == 2 and value[1] in PHASES:
        return Mark(str(value[1]), node)
    return None


class Decision(enum.Enum):
    NOTHING = "nothing"  # sent already, not ours to send, or nothing to send
    WAIT = "wait"  # someone else should send; look again later
    SEND = "send"  # claim (durably), then send


@dataclass(frozen=True, slots=True)
class Situation:
    """Everything :func:`decide` looks at, as one peer sees it now."""

    me: str
    submitter: str
    desktop_only: bool  # every target is "desktop": only the submitter may send
    mark: Mark | None  # the event's register
    sending: bool  # this peer (this life) holds a claim of the event and is sending now
    alive: frozenset[str]  # peers alive in this peer's view (itself included)
    gone_for: Mapping[str, float]  # peer -> seconds it has been not alive (absent: alive)
    seen_for: float  # seconds since this peer first saw the event
    grace: float


def fallback(alive: Iterable[str], submitter: str) -> str | None:
    """The peer that sends in the submitter's place: the lowest alive node id but its own."""
    others = sorted(p for p in alive if p != submitter)
    return others[0] if others else None


def decide(s: Situation) -> Decision:
    if s.sending:
        return Decision.NOTHING
    mark = s.mark
    if mark is not None and mark.phase in (SENT, FAILED):
        return Decision.NOTHING
    if mark is not None and mark.node == s.me:
        return Decision.SEND  # our claim from an earlier life: the send may not have gone out
    submitter_gone = s.gone_for.get(s.submitter)
    if s.me == s.submitter:
        if mark is None:
            return Decision.SEND
        return _take_over(s, mark)
    if s.desktop_only:
        return Decision.NOTHING
    if submitter_gone is None or min(submitter_gone, s.seen_for) < s.grace:
        return Decision.WAIT
    if fallback(s.alive, s.submitter) != s.me:
        return Decision.WAIT
    if mark is None:
        return Decision.SEND
    return _take_over(s, mark)


def _take_over(s: Situation, mark: Mark) -> Decision:
    """Another peer claimed the event: leave it while that peer is alive (or gone briefly)."""
    gone = s.gone_for.get(mark.node)
    if gone is None or gone < s.grace:
        return Decision.WAIT
    return Decision.SEND
