"""The contract between a running daemon and its interfaces (control API, dashboard, CLI).

This module owns every shape that crosses that line, as types: the facade
(:class:`peerfarm.farm.Farm`) returns them, the HTTP app (``peerfarm.api``) sends them as JSON,
the client (:class:`peerfarm.client.FarmClient`) hands them back typed, and the CLI reads them,
so mypy catches a key one side reads and the other never writes. Rules:

- Answers are ``TypedDict``: plain dicts at run time (JSON as it is), checked keys for mypy.
  ``NotRequired`` marks a key that only some answers carry (``warning``, ``frames``...).
- JSON keys are only ever added, never renamed or removed: scripts read them (the README's
  "JSON shapes" section lists the ones scripts rely on).
- The CLI talks to the daemon over HTTP only and never reaches into gossip internals.

States: a peer is alive | suspect | dead | left (or ``incompatible: ...`` in ``peers``); a job
is active | paused | cancelled | done | failed; a frame is pending | rendering | done | failed.
"""

# No ``from __future__ import annotations`` here: TypedDict needs real annotations at run time to
# know which keys are ``NotRequired`` (``__required_keys__``, ``__optional_keys__``).
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NotRequired, Protocol, TypedDict

from .errors import UsageError
from .frames import MAX_FRAMES, parse_frames

#: Every renderer a job may name (the plugins live in :mod:`peerfarm.renderers`).
RENDERERS = ("blender", "povray", "command")

Action = Literal["cancel", "pause", "resume", "retry"]
ACTIONS: tuple[Action, ...] = ("cancel", "pause", "resume", "retry")
#: What may be done to a host from any peer (``peerfarm hold / release / drain HOST``).
HostAction = Literal["hold", "release", "drain"]
HOST_ACTIONS: tuple[HostAction, ...] = ("hold", "release", "drain")
#: A frame's states as status shows them (a query may name any of them).
FRAME_STATES = ("pending", "rendering", "done", "failed")

# --- status ----------------------------------------------------------------------------------


class NodeInfo(TypedDict):
    """The peer that answered."""

    id: str
    name: str
    address: str  # "host:port" of its gossip transport
    farm: str  # the farm id (a hash of the farm key; never the key)
    version: str  # peerfarm's version
    protocol: int  # the wire protocol version of this build
    digest: str  # a hash of the whole ledger: equal on every peer once gossip converged


class RenderingItem(TypedDict):
    """One frame a peer is rendering now (from the ledger's live claims)."""

    job: str
    name: str  # the job's name
    frame: int


class PeerView(TypedDict):
    id: str
    name: str
    address: str
    state: str  # alive | suspect | dead | left | "incompatible: ..." (``peers`` only)
    slots: int
    busy: int
    #: renderer -> version; Blender with several installations: every version, ascending
    renderers: dict[str, str | list[str]]
    host: str
    os: str
    python: str
    peerfarm: str
    protocol: int
    tags: list[str]
    allow_command: bool
    rendering: list[RenderingItem]
    devices: list[str]  # the Cycles devices it found (``CPU`` first); [] without Blender
    #: "" when the peer takes work; else why not: "held by ana", "drained by ana", "outside
    #: its schedule (Mon-Fri 19:00-08:00)", "its user is at the machine (...)", a problem
    availability: str


class AfterView(TypedDict):
    """The job another job starts after (``submit --after``)."""

    id: str
    name: str
    per_frame: bool  # frame N waits for frame N only


class JobView(TypedDict):
    id: str
    name: str
    state: str  # active | paused | cancelled | done | failed
    priority: int
    frames_total: int
    frames_done: int
    frames_failed: int
    frames_rendering: int
    frames_pending: int
    frames_delivered: int
    submitted_by: str  # the submitting peer's name
    submitted_by_id: str
    submitted_at: float  # seconds since the epoch
    output: str  # the submitter's output folder
    renderer: str
    scene: str  # the scene's file name
    chunk: int
    eta_seconds: float | None
    seconds_rendered: float
    banned: dict[str, str]  # peer id -> why it stopped taking the job
    #: alive peer name -> why it does not take the job now (active jobs with pending frames)
    waiting: dict[str, str]
    #: one line when no alive peer can ever take it as the farm stands, else None
    blocked: str | None
    #: a split still: its frames are tiles 1..tiles of scene frame tile_frame
    tiles: NotRequired[int]
    tile_frame: NotRequired[int]
    after: NotRequired[AfterView]  # submit --after: the job it waits for
    #: why the farm ended the job before every frame ended (no peer can render it); absent
    #: for a job the farm did not end
    ended: NotRequired[str]


class ArchivedView(TypedDict):
    """A finished job whose records were dropped: its tombstone's summary."""

    id: str
    name: str
    state: str
    frames: int
    done: int
    failed: int
    submitted_by: str
    output: str


class OutputView(TypedDict):
    name: str
    sha256: str
    size: int


class FrameView(TypedDict):
    frame: int
    state: str  # pending | rendering | done | failed
    peer: str | None  # the name of the peer that holds (or held) it
    attempts: int
    seconds: float | None  # render seconds of a done frame
    memory: int | None  # peak resident bytes of a done frame's render (None: unknown)
    delivered: bool  # the submitter holds its outputs
    outputs: list[OutputView]
    error: str | None
    failures: int  # failed attempts so far, every epoch


class FramePage(TypedDict):
    """Which of the job's frames ``StatusView["frames"]`` holds (``status JOB`` only)."""

    frames: str | None  # the range asked for (None: every frame)
    states: list[str]  # the states asked for ([]: any)
    limit: int | None  # the cap on ``returned`` (None: none)
    matched: int  # frames of the whole job that match the range and states
    returned: int  # frames in this answer
    next: int | None  # the first matching frame left out (None: nothing left out)


class StatusView(TypedDict):
    """``status()``; ``status(job)`` has only that job in ``jobs`` and adds ``frames`` (the
    page of frames asked for, in rendering order) and ``frames_page`` (what the page holds).
    The job's counts in ``jobs`` are always the whole job's."""

    node: NodeInfo
    peers: list[PeerView]
    jobs: list[JobView]
    archived: list[ArchivedView]
    frames: NotRequired[list[FrameView]]
    frames_page: NotRequired[FramePage]
    #: With ``wait`` (``GET /api/status?job=J&wait=S``): whether the job had ended when the
    #: daemon answered (it answers at once when it does, else after ``S`` seconds).
    ended: NotRequired[bool]


class FrameStatesView(TypedDict):
    """``frame_states(job, since)``: every frame's state, compact, for the dashboard's frame
    map; with ``since`` (a ``seq`` of an earlier answer), only the frames changed since then
    when this peer still knows them (``positions`` is there), else every frame."""

    job: str
    runs: list[list[int]]  # the job's frames as [first, last, step] runs, in rendering order
    count: int  # frames in the job
    seq: int  # this peer's count of frame changes: ask again with since=seq
    #: one character per frame in rendering order: p pending, r rendering, d done, f failed;
    #: with ``positions``, one character per position listed there
    states: str
    positions: NotRequired[list[int]]  # the positions (in rendering order) that changed


class PeersView(TypedDict):
    """``peers()``: every member, and refused peers of another protocol version."""

    peers: list[PeerView]


# --- one frame's log -------------------------------------------------------------------------


class AttemptView(TypedDict):
    """One failed attempt at a frame."""

    epoch: int
    attempt: int
    peer: str
    error: str
    log_tail: str
    seconds: float


class LogsView(TypedDict):
    """``logs(job, frame)``: a pending frame of an active or paused job says why it waits."""

    job: str
    frame: int
    state: str
    peer: str | None
    attempts: list[AttemptView]
    progress: str | None  # the renderer's last progress line while it renders here
    waiting: dict[str, str]
    blocked: str | None
    ended: NotRequired[str]  # why the farm ended the frame's job, as in JobView


# --- requests and answers --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FrameQuery:
    """Which of a job's frames ``status(job)`` lists (checked by ``peerfarm.framepage``).

    Empty ``states``: any state; ``limit`` None: no cap. ``GET /api/status?job=`` takes them
    as ``frames``, ``state`` (comma-separated) and ``limit``."""

    frames: str | None = None  # a frame range as submit takes it, e.g. "1-10,20"
    states: tuple[str, ...] = ()  # pending | rendering | done | failed
    limit: int | None = None

    @property
    def filtered(self) -> bool:
        return self.frames is not None or bool(self.states)


#: A job's summary without its frames (``status(job, SUMMARY_ONLY)``): quick at any size.
SUMMARY_ONLY = FrameQuery(limit=0)


def frame_query(
    frames: str | None = None, state: str | None = None, limit: int | None = None
) -> FrameQuery:
    """A checked :class:`FrameQuery` from text (CLI options, URL parameters): ``state`` is one
    state or several comma-separated; ``UsageError`` (one line) when anything is bad."""
    if frames is not None:
        parse_frames(frames)  # raises FrameRangeError (a UsageError) quoting the bad part
    states: tuple[str, ...] = ()
    if state is not None:
        names = [part.strip().lower() for part in state.split(",") if part.strip()]
        if not names or any(name not in FRAME_STATES for name in names):
            raise UsageError(
                f"bad frame state {state[:40]!r}: choose from {', '.join(FRAME_STATES)} "
                "(several: comma-separated)"
            )
        states = tuple(s for s in FRAME_STATES if s in names)
        if len(states) == len(FRAME_STATES):
            states = ()  # every state: no filter
    if limit is not None and not 0 <= limit <= MAX_FRAMES:
        raise UsageError(f"bad frame limit {limit}: from 0 to {MAX_FRAMES:,}")
    return FrameQuery(frames=frames, states=states, limit=limit)


@dataclass(frozen=True, slots=True)
class SubmitRequest:
    """A submit, as the CLI or the dashboard's upload form sends it."""

    scene: Path  # a file or folder on the daemon's machine (uploads are saved first)
    frames: str  # as the artist wrote it: "1-240", "1,5,10-20x2"
    renderer: str | None = None  # None: from the scene's extension
    chunk: int = 1
    priority: int = 0
    name: str | None = None  # None: the scene's file name without extension
    output: Path | None = None  # None: ./peerfarm-out/<name>/ relative to cwd
    cwd: Path | None = None  # the submitter's working directory (for the default output)
    options: dict[str, Any] = field(default_factory=dict)  # renderer options (width, ...)
    encode: Path | None = None  # encode an mp4 here when the job completes
    fps: float | None = None
    retries: int = 3
    allow_scripts: bool = False  # let Python inside a .blend run (peers must allow it too)
    tiles: int | None = None  # split the one frame into this many tiles (peerfarm.stills)
    after: str | None = None  # start when this job (id, prefix or name) is done
    per_frame: bool = False  # with ``after``: frame N starts when frame N of it is done
    notify: tuple[str, ...] = ()  # http(s) URLs and/or "desktop": told when the job ends
    no_output: bool = False  # command jobs: a frame that writes no file is fine
    require: tuple[str, ...] = ()  # tags a peer must have (``up --tags``) to take the job


class SubmitBody(TypedDict, total=False):
    """``POST /api/jobs``: a :class:`SubmitRequest` as JSON (paths absolute, as text).

    ``overwrite`` lets deliveries replace files the job did not write (it becomes an option)."""

    scene: str
    frames: str
    renderer: str
    chunk: int
    priority: int
    name: str
    output: str
    cwd: str
    options: dict[str, Any]
    encode: str
    fps: float
    retries: int
    allow_scripts: bool
    overwrite: bool
    tiles: int
    after: str
    per_frame: bool
    notify: list[str]
    no_output: bool
    require: list[str]  # or "gpu,big": tags a peer needs (``submit --require``)


class SubmitAnswer(TypedDict):
    job: str  # the new job's id
    name: str
    frames: int  # how many frames the job has
    renderer: str
    output: str
    capable_peers: int  # alive peers that could render it now
    warning: NotRequired[str]  # one line when no alive peer can render the job


class ActionAnswer(TypedDict):
    job: str
    action: str  # cancel | pause | resume | retry
    state: str  # the job's state after the action
    changed: int  # ledger entries written (frames, and bans lifted by a retry)
    frames: NotRequired[int]  # retry only: how many frames were queued again


class HostAnswer(TypedDict):
    id: str  # the host's node id
    name: str
    action: str  # hold | release | drain
    availability: str  # what every peer will show for it ("" once released)
    changed: int  # ledger entries written (0: it was so already)


class FetchAnswer(TypedDict):
    job: str
    dest: str  # the folder the files were copied into
    files: int


class CheckProblem(TypedDict):
    frame: int
    file: str  # the output's name in the job's output folder
    problem: str  # "missing", "damaged (...)"


class CheckAnswer(TypedDict):
    """``check(job)``: delivered files that are missing or differ from the rendered frames."""

    job: str
    checked: int  # delivered frames looked at
    problems: list[CheckProblem]
    frames: str  # the frames with problems, compact ("3,7-9"): what ``retry --from-check`` takes


class EncodeAnswer(TypedDict):
    job: str
    video: str  # the video's absolute path
    frames: int  # frames in the video
    fps: float


class SessionView(TypedDict):
    """``GET /api/session``: what this browser may do here (the dashboard asks first)."""

    loopback: bool  # the request came over loopback
    logged_in: bool  # its session cookie is valid
    login: bool  # password logins are possible on this peer
    actions: bool  # its action key is valid


class LoginAnswer(TypedDict):
    """``POST /api/login`` (``key``: the session's action key) and ``/api/logout``."""

    logged_in: bool
    key: NotRequired[str]


class LoginLink(TypedDict):
    """``POST /api/login-link``: a one-time dashboard login code."""

    code: str
    path: str  # "/?login=CODE"
    expires_in: float  # seconds


class DashboardLink(TypedDict):
    """``peerfarm dashboard --json``: a one-time login link a browser can open."""

    url: str
    expires_in: float  # seconds


#: ``metrics()``: counters and gauges by name, shaped for :mod:`peerfarm.metrics` (a number,
#: ``{"label", "values"}`` for one label, or ``{"info": {key: text}}``).
MetricsView = dict[str, Any]


class FarmControl(Protocol):
    """What a daemon offers its interfaces. Errors a user can fix raise ``UsageError``."""

    def status(self, job: str | None = None, frames: FrameQuery | None = None) -> StatusView:
        """The farm; with ``job``, that job and the page of its frames ``frames`` asks for
        (None: every frame)."""
        ...

    def frame_states(self, job: str, since: int | None = None) -> FrameStatesView:
        """Every frame's state of ``job`` as one character per frame (the frame map), or with
        ``since`` only those changed after that ``seq`` when this peer can tell."""
        ...

    def peers(self) -> PeersView: ...

    def resolve_job(self, ref: str) -> str:
        """A job id, unique id prefix or job name -> the job id (UsageError if none/ambiguous)."""
        ...

    async def submit(self, request: SubmitRequest) -> SubmitAnswer: ...

    async def act(self, job: str, action: Action, frames: str | None = None) -> ActionAnswer:
        """cancel | pause | resume | retry (frames: failed ones by default, or the given range)."""
        ...

    async def host(self, host: str, action: HostAction, *, now: bool = False) -> HostAnswer:
        """Hold (finish current frames, take no more), release, or drain a peer (``now``: hand
        its frames back at once; else like hold). ``host``: name, host name or id prefix."""
        ...

    def logs(self, job: str, frame: int) -> LogsView: ...

    async def fetch(self, job: str, dest: Path) -> FetchAnswer:
        """Copy every done frame's outputs into ``dest`` (fetching from peers as needed)."""
        ...

    async def encode(self, job: str, out: Path, fps: float | None = None) -> EncodeAnswer: ...

    async def check(self, job: str) -> CheckAnswer:
        """On the submitting peer: delivered files missing or damaged (see ``peer.verify``)."""
        ...

    async def thumbnail(self, job: str, frame: int) -> bytes | None:
        """A small PNG of a done frame's first image output, or None."""
        ...

    async def output_file(self, job: str, frame: int, index: int = 0) -> Path | None:
        """A local path holding a done frame's output (fetched into the store if needed)."""
        ...

    async def wait_for_change(self, since: int, timeout: float) -> int:
        """Block until the farm's view changes after generation ``since`` (or timeout); returns
        the current generation. Drives server-sent events."""
        ...

    async def wait_for_end(self, job: str, timeout: float) -> bool:
        """Block until every frame of ``job`` ended (done or failed), the job ended or left the
        ledger, or ``timeout`` passed; returns whether it ended. Drives ``submit --wait``."""
        ...

    def metrics(self) -> MetricsView:
        """Counters for /metrics: frames rendered/failed/duplicated, gossip, leases, bytes."""
        ...
