"""Who may render a job, and in plain words why a peer does not: every eligibility rule, pure.

This module owns the answer to "can this peer take this job?". The scheduler asks it for a
job's home set (``capable_peers``), and the status views ask it why a job waits
(``waiting_reasons``, ``no_peer_summary``). No trio, no file system: callers pass the job, the
members they see (node id, state, gossiped metadata), the job's bans from the ledger, whether the
job is paused and what each peer is busy with.

Rules, in the order a reason is given:

1. A peer advertising ``slots 0`` only submits and watches.
2. A scene on shared storage needs a peer started with ``--shared-root``.
3. A command job needs a peer started with ``--allow-command``.
4. The peer must advertise the job's renderer. For Blender the advertised version is a string
   (one installation, or a peer older than this rule) or a list of version strings (every
   installation, ascending); the peer can render the job when ANY of them is at least the
   version that saved the file (``blend_version``, "5.0"). A version that does not parse counts
   as able, so a peer is never refused for a string this rule cannot read.
5. The job's requirements: every tag of ``submit --require`` among the peer's ``--tags``, and
   for a Blender job with a ``device`` option other than CPU, that device among the Cycles
   devices the peer advertises (``GPU``: any of them). Requirements travel in the job's
   options (``require``), which peers older than this rule decode but do not obey: see
   ``requirement_reason``.
6. A peer that failed the job too often has banned itself from it (a ledger register).
7. A peer started with ``--max-memory`` refuses a job whose frames peaked above it on some
   peer (``maxmem`` in its metadata against the job's recorded peak; rule in
   :mod:`peerfarm.scheduler.availability`).

Those are lasting reasons: they hold until the farm changes. Then come passing ones, shown only
in ``waiting_reasons``: the peer reports a problem of its own (a full disk, a ledger it cannot
save: ``problem`` in its metadata; it takes no work until it is solved, and it is left out of
the job's home set meanwhile); the peer is held or drained (a ledger register any peer writes:
``peerfarm hold HOST``); the peer is away (outside its ``--schedule``, or its user is at the
machine under ``--when-idle``: ``away`` in its metadata); the job is paused; the peer could
get the job's scene from no peer (its holders are down or out of reach: the job's id prefix in
``noscene`` in its metadata; the peer tries again every few seconds); every slot of the peer is
busy with other jobs. Held and away peers are left out of home sets like troubled ones.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from ..gossip.membership import Member, MemberState
from ..ledger.model import JobSpec
from .availability import memory_reason

_VERSION_RE = re.compile(r"(\d+)\.(\d+)")
_BAN_RE = re.compile(r"^failed (\d+) times on .*?: (.*)$", re.DOTALL)
#: Characters of a ban's last error kept in a reason (a reason is one short line).
MAX_ERROR_CHARS = 160
#: Metadata key: id prefixes (``JOB_PREFIX`` characters) of jobs whose scene the peer could get
#: from no peer, at most ``MAX_NO_SCENE`` of them.
NO_SCENE = "noscene"
JOB_PREFIX = 12
MAX_NO_SCENE = 8
#: What ``waiting_reasons`` says of such a peer.
NO_SCENE_REASON = "cannot get the scene: no peer that has it answers"


def version_tuple(text: str) -> tuple[int, int] | None:
    """``"5.0.1"`` -> (5, 0); ``None`` when the text holds no ``major.minor``."""
    match = _VERSION_RE.search(text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def advertised_versions(value: object) -> list[str]:
    """A renderer's advertised version(s) as a list: a str (one) or a list of str (several)."""
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list | tuple):
        return [str(v) for v in value if isinstance(v, str) and v]
    return []


def version_reason(spec: JobSpec, advertised: object) -> str | None:
    """Why the advertised Blender version(s) cannot open the job's file, or ``None``."""
    need = spec.options.get("blend_version")
    if spec.renderer != "blender" or not need:
        return None
    want = version_tuple(str(need))
    versions = advertised_versions(advertised)
    if want is None or not versions:
        return None
    for text in versions:
        have = version_tuple(text)
        if have is None or have >= want:
            return None
    verb = "is" if len(versions) == 1 else "are"
    return f"blender {', '.join(versions)} {verb} older than the file ({need})"


def _text_list(value: object) -> list[str] | None:
    """A list of strings from gossiped data, or None when it is something else."""
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return [str(v) for v in value]
    return None


def requirement_reason(spec: JobSpec, meta: Mapping[str, Any]) -> str | None:
    """Why a peer does not meet ``spec``'s requirements (rule 5), or ``None``.

    Tags come from ``--tags``; Cycles devices from the peer's ``devices`` metadata (CPU is
    always there, so ``device=CPU`` asks nothing). Requirements this rule cannot read (a
    hostile or much newer peer's shape) are not met: a job is never sent where it may not run.

    Old peers: the ``require`` and ``device`` options ride in the job's options map, which
    every peer decodes (a new field in the spec would make older peers refuse the whole delta
    batch and stop converging). A peer older than this rule ignores both and may take the job;
    ``submit`` warns about such peers (``unaware_peers``) and the README says to upgrade them.
    """
    required = spec.options.get("require")
    if required is not None:
        tags = _text_list(required)
        if tags is None:
            return "cannot read the job's requirements"
        have = _text_list(meta.get("tags")) or []
        missing = [tag for tag in tags if tag not in have]
        if missing:
            return f"not tagged {', '.join(missing)}"
    device = spec.options.get("device") if spec.renderer == "blender" else None
    if device is None or device == "CPU":
        return None
    devices = _text_list(meta.get("devices")) or []
    gpus = [d for d in devices if d != "CPU"]
    if (device == "GPU" and gpus) or device in gpus:
        return None
    have_text = ", ".join(gpus) if gpus else "CPU only"
    return f"no {device} device ({have_text})"


def unaware_peers(spec: JobSpec, members: Iterable[Member]) -> list[str]:
    """Alive peers that do not know rule 5 and do not meet the job's requirements: they may
    take it anyway (node ids). Peers that know it advertise ``req`` in their metadata."""
    if "require" not in spec.options and spec.options.get("device") in (None, "CPU"):
        return []
    out = []
    for member in members:
        if member.state != MemberState.ALIVE or member.meta.get("req"):
            continue
        if member.meta.get("slots") == 0:
            continue
        if requirement_reason(spec, member.meta) is not None:
            out.append(member.node_id)
    return out


def ban_reason(text: str) -> str:
    """A ledger ban ("failed 3 times on b: <error>") as a reason: "banned after 3 failures: ..."."""
    match = _BAN_RE.match(text)
    if match is None:
        return _one_line(f"banned: {text}")
    return _one_line(f"banned after {match.group(1)} failures: {match.group(2)}")


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= MAX_ERROR_CHARS else line[: MAX_ERROR_CHARS - 1] + "…"


def renderer_reason(spec: JobSpec, meta: Mapping[str, Any]) -> str | None:
    """Why a peer with this metadata can never render ``spec`` (rules 1-5), or ``None``."""
    if meta.get("slots") == 0:
        return "slots 0 (submit-only peer)"
    if "shared_scene" in spec.options and not meta.get("shared"):
        return "scene on shared storage not mounted (no --shared-root)"
    if spec.renderer == "command" and not meta.get("cmd"):
        return "not started with --allow-command"
    renderers = meta.get("renderers", {})
    if not isinstance(renderers, Mapping) or spec.renderer not in renderers:
        return f"no {spec.renderer}"
    return version_reason(spec, renderers.get(spec.renderer)) or requirement_reason(spec, meta)


def lasting_reason(
    spec: JobSpec, meta: Mapping[str, Any], ban: str | None = None, peak_memory: int = 0
) -> str | None:
    """Rules 1-7: why a peer does not take ``spec`` until the farm changes, or ``None``."""
    reason = renderer_reason(spec, meta)
    if reason is None and ban is not None:
        reason = ban_reason(ban)
    if reason is None:
        reason = memory_reason(peak_memory, meta.get("maxmem"))
    return reason


def hold_reason(hold: Mapping[str, Any] | None) -> str | None:
    """A host hold register's value as a reason: ``held by ana`` / ``drained by ana``."""
    if not hold:
        return None
    verb = "drained" if hold.get("mode") == "drain" else "held"
    by = str(hold.get("by", ""))
    return f"{verb} by {by}" if by else verb


def away_reason(meta: Mapping[str, Any], hold: Mapping[str, Any] | None = None) -> str | None:
    """Why a peer takes no new work of any job for now: held, or away (schedule, idle)."""
    reason = hold_reason(hold)
    if reason is None and meta.get("away"):
        reason = _one_line(str(meta["away"]))
    return reason


def peer_reason(
    spec: JobSpec,
    meta: Mapping[str, Any],
    *,
    ban: str | None = None,
    paused: bool = False,
    busy_with: Sequence[str] = (),
    hold: Mapping[str, Any] | None = None,
    peak_memory: int = 0,
) -> str | None:
    """Why one peer does not take ``spec`` now, or ``None`` when it can.

    ``busy_with`` lists the job id of every frame the peer is rendering (one per busy slot):
    a peer busy with this very job is taking it.
    """
    reason = lasting_reason(spec, meta, ban, peak_memory)
    if reason is not None:
        return reason
    if meta.get("problem"):
        return _one_line(str(meta["problem"]))
    reason = away_reason(meta, hold)
    if reason is not None:
        return reason
    if paused:
        return "paused"
    if scene_out_of_reach(spec.id, meta):
        return NO_SCENE_REASON
    slots = _slots(meta)
    if len(busy_with) >= slots and spec.id not in busy_with:
        return f"all {slots} slots busy" if slots > 1 else "its slot is busy"
    return None


def scene_out_of_reach(job: str, meta: Mapping[str, Any]) -> bool:
    """Whether a peer's metadata says it could get ``job``'s scene from no peer (a list of id
    prefixes; anything else a peer sent counts as none)."""
    listed = meta.get(NO_SCENE)
    return isinstance(listed, list | tuple) and job[:JOB_PREFIX] in listed


def _slots(meta: Mapping[str, Any]) -> int:
    try:
        return max(1, int(meta.get("slots", 1) or 1))
    except (TypeError, ValueError):
        return 1


def capable_peers(
    spec: JobSpec,
    members: Iterable[Member],
    *,
    banned: Collection[str],
    now: float,
    home_grace: float,
    self_id: str = "",
    stopping: bool = False,
    troubled: bool = False,
    holds: Mapping[str, Mapping[str, Any]] | None = None,
    peak_memory: int = 0,
) -> list[str]:
    """The job's home set: peers that can render it and have not left.

    Excludes LEFT peers, peers DEAD for more than ``home_grace`` seconds (a brief flap keeps
    its homes), peers ``banned`` from the job, this peer (``self_id``) while it is
    ``stopping``, and every peer with a lasting reason (rules 1-5, 7). Peers with a problem,
    held (``holds``: node id -> hold register value) or away are left out too unless
    ``troubled`` (they take no work now). Busy or suspect peers stay: homes are about who can
    render, not who is free right now.
    """
    holds = holds or {}
    out = []
    for member in members:
        if member.state == MemberState.LEFT:
            continue
        if member.state == MemberState.DEAD and now - member.state_since > home_grace:
            continue
        if member.node_id in banned:
            continue
        if stopping and member.node_id == self_id:
            continue
        if renderer_reason(spec, member.meta) is not None:
            continue
        if memory_reason(peak_memory, member.meta.get("maxmem")) is not None:
            continue
        if not troubled and (
            member.meta.get("problem") or away_reason(member.meta, holds.get(member.node_id))
        ):
            continue  # takes no work for now (``troubled``: count it)
        out.append(member.node_id)
    return out


def waiting_reasons(
    spec: JobSpec,
    members: Iterable[Member],
    *,
    banned: Mapping[str, str],
    paused: bool = False,
    busy: Mapping[str, Sequence[str]] | None = None,
    holds: Mapping[str, Mapping[str, Any]] | None = None,
    peak_memory: int = 0,
) -> dict[str, str]:
    """For each ALIVE peer that does not take ``spec`` now: node id -> reason."""
    busy = busy or {}
    holds = holds or {}
    out: dict[str, str] = {}
    for member in members:
        if member.state != MemberState.ALIVE:
            continue
        reason = peer_reason(
            spec,
            member.meta,
            ban=banned.get(member.node_id),
            paused=paused,
            busy_with=busy.get(member.node_id, ()),
            hold=holds.get(member.node_id),
            peak_memory=peak_memory,
        )
        if reason is not None:
            out[member.node_id] = reason
    return out


def no_peer_summary(
    spec: JobSpec,
    members: Iterable[Member],
    *,
    banned: Mapping[str, str],
    names: Mapping[str, str],
    peak_memory: int = 0,
) -> str | None:
    """One line when NO alive peer can ever take ``spec`` as the farm stands, else ``None``.

    e.g. ``"no peer can render it: a, b: blender 3.4.1 is older than the file (5.0); c: no
    blender"``. Passing reasons (busy, paused) never count: such a job will run.
    """
    groups: dict[str, list[str]] = {}
    alive = 0
    for member in members:
        if member.state != MemberState.ALIVE:
            continue
        alive += 1
        reason = lasting_reason(spec, member.meta, banned.get(member.node_id), peak_memory)
        if reason is None:
            return None
        groups.setdefault(reason, []).append(names.get(member.node_id, member.node_id[:8]))
    if alive == 0:
        return "no peer can render it: no peer is alive"
    parts = [f"{', '.join(sorted(peers))}: {reason}" for reason, peers in groups.items()]
    return "no peer can render it: " + "; ".join(sorted(parts))
