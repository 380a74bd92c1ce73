"""Which peers can render a job, and why not. Pure.

(Placeholder with today's rules; the full module with waiting reasons comes from issue 14.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..gossip.membership import Member, MemberState
from ..ledger.model import JobSpec


def version_ok(spec: JobSpec, version: Any) -> bool:
    need = spec.options.get("blend_version")
    if spec.renderer != "blender" or not need or not isinstance(version, str):
        return True
    try:
        have = tuple(int(p) for p in version.split(".")[:2])
        want = tuple(int(p) for p in str(need).split(".")[:2])
    except ValueError:
        return True
    return have >= want


def capable_peers(
    spec: JobSpec,
    members: Sequence[Member],
    *,
    banned: Mapping[str, str],
    me: str,
    stopping: bool,
    now: float,
    home_grace: float,
) -> list[str]:
    """The job's home set: peers that can render it and have not left (dead: for a while)."""
    out = []
    for member in members:
        if member.state == MemberState.LEFT:
            continue
        if member.state == MemberState.DEAD and now - member.state_since > home_grace:
            continue
        if member.node_id in banned:
            continue
        if member.node_id == me and stopping:
            continue
        meta = member.meta
        if meta.get("slots") == 0 or meta.get("problem"):
            continue
        if "shared_scene" in spec.options and not meta.get("shared"):
            continue
        renderers = meta.get("renderers", {})
        if not isinstance(renderers, dict) or spec.renderer not in renderers:
            continue
        if spec.renderer == "command" and not meta.get("cmd"):
            continue
        if not version_ok(spec, renderers.get(spec.renderer)):
            continue
        out.append(member.node_id)
    return out
