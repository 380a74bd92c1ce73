"""The contract between a running daemon and its interfaces (control API, dashboard, CLI).

The daemon (:class:`peerfarm.node.Node`) implements :class:`FarmControl`; the HTTP app in
``peerfarm.api`` exposes it as JSON; the CLI talks to that API over HTTP only (it never reaches
into gossip internals). Every JSON shape that scripts rely on is documented here and in the
README; keys may be added, never renamed or removed.

``status()`` returns::

    {"node": {"id", "name", "address", "farm", "version", "protocol", "digest"},
     "peers": [{"id", "name", "address", "state", "slots", "busy", "renderers", "host", "os",
                "python", "peerfarm", "protocol", "tags", "rendering"}],
     "jobs": [{"id", "name", "state", "priority", "frames_total", "frames_done",
               "frames_failed", "frames_rendering", "frames_pending", "frames_delivered",
               "submitted_by", "submitted_at", "output", "renderer", "scene", "chunk",
               "eta_seconds", "seconds_rendered", "banned", "waiting", "blocked"}],
     "archived": [{"id", "name", "state", "frames", "done", "failed"}]}

peer ``state``: alive | suspect | dead | left; job ``state``: active | paused | cancelled | done
| failed. A peer's ``renderers`` is ``{name: version}``, where Blender's version may be a list of
every installed version, ascending. A job's ``waiting`` is ``{peer name: reason}`` for each
alive peer that does not take it now (active jobs with pending frames; else ``{}``) and
``blocked`` one line when no alive peer can ever take it (else None); both come from
:mod:`peerfarm.scheduler.eligibility`.

``status(job)`` has the same keys with only that job in ``jobs`` and adds ``"frames": [{"frame",
"state", "peer", "attempts", "seconds", "delivered", "outputs", "error"}]`` where frame ``state``
is pending | rendering | done | failed and ``peer`` is the peer's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

Action = Literal["cancel", "pause", "resume", "retry"]


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


class FarmControl(Protocol):
    """What a daemon offers its interfaces. Errors a user can fix raise ``UsageError``."""

    def status(self, job: str | None = None) -> dict[str, Any]: ...

    def peers(self) -> dict[str, Any]: ...

    def resolve_job(self, ref: str) -> str:
        """A job id, unique id prefix or job name -> the job id (UsageError if none/ambiguous)."""
        ...

    async def submit(self, request: SubmitRequest) -> dict[str, Any]:
        """Returns at least ``{"job": id, "name": name, "frames": n, "output": dir}``, and
        ``"warning"`` (one line) when no alive peer can render the job."""
        ...

    async def act(self, job: str, action: Action, frames: str | None = None) -> dict[str, Any]:
        """cancel | pause | resume | retry (frames: failed ones by default, or the given range)."""
        ...

    def logs(self, job: str, frame: int) -> dict[str, Any]:
        """``{"job", "frame", "state", "peer", "attempts": [{"attempt", "peer", "error",
        "log_tail", "seconds"}], "progress": str | None, "waiting": {peer: reason},
        "blocked": str | None}`` (why a pending frame of an active or paused job waits)."""
        ...

    async def fetch(self, job: str, dest: Path) -> dict[str, Any]:
        """Copy every done frame's outputs into ``dest`` (fetching from peers as needed)."""
        ...

    async def encode(self, job: str, out: Path, fps: float | None = None) -> dict[str, Any]: ...

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

    def metrics(self) -> dict[str, Any]:
        """Counters for /metrics: frames rendered/failed/duplicated, gossip, leases, bytes."""
        ...
