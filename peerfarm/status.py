"""The farm as people and scripts see it: pure views over a ledger and a member table.

Builds the views typed in :mod:`peerfarm.control` (``status``, ``status JOB``, ``peers``,
``logs``). No I/O: the node passes in what it knows, including its monotonic ``now``. Why a job
waits (``waiting``, ``blocked``) comes from :mod:`peerfarm.scheduler.eligibility`, the rules
the scheduler itself follows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .control import (
    AfterView,
    ArchivedView,
    AttemptView,
    FrameView,
    JobView,
    LogsView,
    OutputView,
    PeerView,
    RenderingItem,
)
from .gossip.membership import Member, MemberState
from .ledger import Ledger
from .ledger.hlc import to_seconds
from .ledger.model import JobSpec, JobState, Status
from .scheduler import dependencies, eligibility
from .stills import still_of

PEER_STATES = {
    MemberState.ALIVE: "alive",
    MemberState.SUSPECT: "suspect",
    MemberState.DEAD: "dead",
    MemberState.LEFT: "left",
}
FRAME_STATES = {
    Status.PENDING: "pending",
    Status.RELEASED: "pending",
    Status.RETRYING: "pending",
    Status.CLAIMED: "rendering",
    Status.DONE: "done",
    Status.FAILED: "failed",
}


def peer_view(
    member: Member,
    busy: Mapping[str, list[RenderingItem]],
    holds: Mapping[str, Mapping[str, Any]] | None = None,
) -> PeerView:
    meta = member.meta
    rendering = busy.get(member.node_id, [])
    hold = (holds or {}).get(member.node_id)
    availability = eligibility.hold_reason(hold) or eligibility.away_reason(meta) or ""
    if not availability and meta.get("problem"):
        availability = str(meta["problem"])
    return {
        "id": member.node_id,
        "name": str(meta.get("name", member.node_id[:8])),
        "address": f"{member.address[0]}:{member.address[1]}",
        "state": PEER_STATES.get(member.state, "unknown"),
        "slots": int(meta.get("slots", 1)),
        "busy": len(rendering),
        "renderers": dict(meta.get("renderers", {})),
        "host": str(meta.get("host", "")),
        "os": str(meta.get("os", "")),
        "python": str(meta.get("py", "")),
        "peerfarm": str(meta.get("pf", "")),
        "protocol": member.protocol,
        "tags": list(meta.get("tags", [])),
        "allow_command": bool(meta.get("cmd", False)),
        "rendering": rendering,
        "devices": _strings(meta.get("devices")),
        "availability": availability,
    }


def _strings(value: object) -> list[str]:
    """A short list of strings from gossiped metadata; anything else is []."""
    if not isinstance(value, list):
        return []
    return [item[:32] for item in value if isinstance(item, str)][:8]


def incompatible_view(
    node_id: str, name: str | None, address: tuple[str, int] | None, reason: str, protocol: int
) -> PeerView:
    """A peer refused for its protocol version, in the shape of ``peer_view``: its state says
    why (``incompatible: speaks protocol 2, this peer 1``)."""
    return {
        "id": node_id,
        "name": name or node_id[:8],
        "address": f"{address[0]}:{address[1]}" if address else "",
        "state": reason,
        "slots": 0,
        "busy": 0,
        "renderers": {},
        "host": "",
        "os": "",
        "python": "",
        "peerfarm": "",
        "protocol": protocol,
        "tags": [],
        "allow_command": False,
        "rendering": [],
        "devices": [],
        "availability": "",
    }


def archived_view(job: str, summary: Mapping[str, Any]) -> ArchivedView:
    """A tombstone's summary (written by ``Ledger.archive``) with its job id."""
    # The summary's keys are whatever the archiving peer's version wrote: passed on as they are.
    return {"id": job, **summary}  # type: ignore[typeddict-item]


def busy_by_peer(ledger: Ledger) -> dict[str, list[RenderingItem]]:
    """What every peer is rendering, from the ledger's live claims."""
    out: dict[str, list[RenderingItem]] = {}
    for spec in ledger.jobs():
        if ledger.job_state(spec.id).value != "active":
            continue  # a cancelled job's leftover claims are not work anyone is doing
        for frame, record in ledger.claimed_frames(spec.id):
            out.setdefault(record.node, []).append(
                RenderingItem(job=spec.id, name=spec.name, frame=frame)
            )
    return out


def names_by_id(members: Sequence[Member]) -> dict[str, str]:
    return {m.node_id: str(m.meta.get("name", m.node_id[:8])) for m in members}


def _labels(members: Sequence[Member]) -> dict[str, str]:
    """Peer names, made unique with an id prefix where two peers share one."""
    names = names_by_id(members)
    count: dict[str, int] = {}
    for name in names.values():
        count[name] = count.get(name, 0) + 1
    return {i: f"{n} ({i[:8]})" if count[n] > 1 else n for i, n in names.items()}


def waiting_view(
    ledger: Ledger,
    spec: JobSpec,
    members: Sequence[Member],
    busy: Mapping[str, list[RenderingItem]],
    *,
    paused: bool = False,
) -> tuple[dict[str, str], str | None]:
    """Why ``spec`` waits: {peer name: reason} for every alive peer that does not take it now,
    and one line when no alive peer ever can as the farm stands (else None)."""
    banned = ledger.banned(spec.id)
    labels = _labels(members)
    jobs_of = {node: [item["job"] for item in items] for node, items in busy.items()}
    peak = ledger.peak_memory(spec.id)
    reasons = eligibility.waiting_reasons(
        spec,
        members,
        banned=banned,
        paused=paused,
        busy=jobs_of,
        holds=ledger.host_holds(),
        peak_memory=peak,
    )
    blocked = eligibility.no_peer_summary(
        spec, members, banned=banned, names=labels, peak_memory=peak
    )
    named = sorted((labels[node], reason) for node, reason in reasons.items())
    return dict(named), blocked


#: Job states after which none of its frames renders again.
ENDED_STATES = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED})


def job_ended(ledger: Ledger, job: str) -> bool:
    """Whether ``job`` is over as ``submit --wait`` sees it (``follow.job_finished``): every
    frame done or failed, the job done, failed or cancelled, or gone from the ledger (archived).
    O(1): the ledger keeps the counts."""
    if ledger.job(job) is None:
        return True
    if ledger.job_state(job) in ENDED_STATES:
        return True
    counts = ledger.counts(job)
    return counts.total > 0 and counts.done + counts.failed >= counts.total


def job_view(
    ledger: Ledger,
    spec: JobSpec,
    *,
    peer_slots: int,
    members: Sequence[Member] = (),
    busy: Mapping[str, list[RenderingItem]] | None = None,
) -> JobView:
    """One job's summary. ``waiting``/``blocked`` (see ``waiting_view``) are filled for an
    active job with pending frames when ``members`` are given; else ``{}`` and None."""
    counts = ledger.counts(spec.id)
    state = ledger.job_state(spec.id).value
    if state == "cancelled" and counts.rendering:
        # Claims left behind by peers that stopped: nobody renders a cancelled job.
        counts = type(counts)(
            counts.total, counts.pending + counts.rendering, 0, counts.done, counts.failed
        )
    # Every figure below is kept by the ledger as frames change: no scan of the job's frames.
    delivered = ledger.delivered_count(spec.id)
    mean = ledger.mean_frame_seconds(spec.id)
    eta = None
    remaining = counts.pending + counts.rendering
    if remaining and mean is not None and peer_slots > 0:
        eta = round(remaining * mean / peer_slots, 1)
    elif remaining == 0:
        eta = 0.0
    waiting: dict[str, str] = {}
    blocked: str | None = None
    if members and state == JobState.ACTIVE.value and counts.pending:
        waiting, blocked = waiting_view(ledger, spec, members, busy or {})
    ready = dependencies.readiness(ledger, spec)
    if ready.reason is not None and state == JobState.ACTIVE.value and counts.pending:
        waiting = {dependencies.WAITING_KEY: ready.reason, **waiting}
    view: JobView = {
        "id": spec.id,
        "name": spec.name,
        "state": state,
        "priority": ledger.priority(spec.id),
        "frames_total": counts.total,
        "frames_done": counts.done,
        "frames_failed": counts.failed,
        "frames_rendering": counts.rendering,
        "frames_pending": counts.pending,
        "frames_delivered": delivered,
        "submitted_by": spec.submitter_name,
        "submitted_by_id": spec.submitted_by,
        "submitted_at": to_seconds(spec.stamp),
        "output": spec.output,
        "renderer": spec.renderer,
        "scene": spec.scene.name,
        "chunk": spec.chunk,
        "eta_seconds": eta,
        "seconds_rendered": round(ledger.done_seconds(spec.id), 3),
        "banned": ledger.banned(spec.id),
        "waiting": waiting,
        "blocked": blocked,
    }
    if (still := still_of(spec.options)) is not None:
        view["tiles"], view["tile_frame"] = still.count, still.frame
    after = after_view(ledger, spec)
    if after is not None:
        view["after"] = after
    if (ended := ledger.halted(spec.id)) is not None:
        view["ended"] = ended
    return view


def after_view(ledger: Ledger, spec: JobSpec) -> AfterView | None:
    """The job ``spec`` starts after ({id, name, per_frame}), or None."""
    dep = dependencies.dependency_of(spec)
    if dep is None:
        return None
    parent = ledger.job(dep.job)
    name = parent.name if parent is not None else ledger.archived().get(dep.job, {}).get("name")
    return {"id": dep.job, "name": str(name or dep.job[:8]), "per_frame": dep.per_frame}


def frames_view(
    ledger: Ledger,
    spec: JobSpec,
    names: Mapping[str, str],
    frames: Iterable[int] | None = None,
) -> list[FrameView]:
    """The job's ``frames`` (default: all, in rendering order; see ``peerfarm.framepage``)."""
    out: list[FrameView] = []
    records = ledger.frame_records(spec.id)
    failures: dict[int, int] = {}
    for key, _attempt in ledger.attempts_of_job(spec.id):
        failures[key[2]] = failures.get(key[2], 0) + 1
    for frame in spec.frames if frames is None else frames:
        record = records.get(frame)
        if record is None:
            out.append(
                {
                    "frame": frame,
                    "state": "pending",
                    "peer": None,
                    "attempts": 0,
                    "seconds": None,
                    "memory": None,
                    "delivered": False,
                    "outputs": [],
                    "error": None,
                    "failures": failures.get(frame, 0),
                }
            )
            continue
        out.append(
            {
                "frame": frame,
                "state": FRAME_STATES[record.status],
                "peer": names.get(record.node, record.node[:8]) if record.node else None,
                "attempts": record.attempt,
                "seconds": record.seconds if record.status == Status.DONE else None,
                "memory": record.memory or None,
                "delivered": ledger.delivered(spec.id, frame),
                "outputs": [
                    OutputView(name=o.name, sha256=o.digest.hex(), size=o.size)
                    for o in record.outputs
                ],
                "error": record.error or None,
                "failures": failures.get(frame, 0),
            }
        )
    return out


def logs_view(
    ledger: Ledger,
    spec: JobSpec,
    frame: int,
    names: Mapping[str, str],
    progress: str | None,
    *,
    members: Sequence[Member] = (),
    busy: Mapping[str, list[RenderingItem]] | None = None,
) -> LogsView:
    """A frame's log; a pending frame of an active or paused job also says why it waits."""
    record = ledger.frame(spec.id, frame)
    attempts = [
        AttemptView(
            epoch=key[3],
            attempt=key[4],
            peer=names.get(key[5], key[5][:8]),
            error=a.error,
            log_tail=a.log_tail,
            seconds=a.seconds,
        )
        for key, a in ledger.attempts(spec.id, frame)
    ]
    state = ledger.job_state(spec.id)
    waiting: dict[str, str] = {}
    blocked: str | None = None
    pending = FRAME_STATES[record.status] == "pending"
    if members and pending and state in (JobState.ACTIVE, JobState.PAUSED):
        paused = state == JobState.PAUSED
        waiting, blocked = waiting_view(ledger, spec, members, busy or {}, paused=paused)
        ready = dependencies.readiness(ledger, spec)
        if ready.reason is not None and (ready.blocked or frame in ready.held):
            waiting = {dependencies.WAITING_KEY: ready.reason, **waiting}
    view: LogsView = {
        "job": spec.id,
        "frame": frame,
        "state": FRAME_STATES[record.status],
        "peer": names.get(record.node, record.node[:8]) if record.node else None,
        "attempts": attempts,
        "progress": progress,
        "waiting": waiting,
        "blocked": blocked,
    }
    if (ended := ledger.halted(spec.id)) is not None:
        view["ended"] = ended
    return view
