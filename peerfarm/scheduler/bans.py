"""When a peer stops taking a job, and when a job ends because nobody can take it. Pure.

Both verdicts are read from the replicated ledger, never from counters kept in memory, so every
peer reaches the same verdict and a restart forgets nothing:

* a peer stops taking a job (a ban, with the reason) once ``limit`` attempts of that job failed
  on it since its last ban was lifted (a user's ``retry`` lifts every ban of the job);
* a job ends — failed, with the reason — when peers stopped taking it and no peer that could
  render it remains (:func:`halt_reason` says why, naming the peers and their last errors).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..gossip.membership import Member
from ..ledger import Ledger


def ban_verdict(
    ledger: Ledger, job: str, node: str, limit: int, name: str, last_error: str
) -> str | None:
    """The reason ``node`` (called ``name``) must stop taking ``job``, or None."""
    if node in ledger.banned(job):
        return None
    failures = ledger.failures_by(job, node, since=ledger.ban_lifted_at(job, node))
    if failures < max(1, limit):
        return None
    return f"failed {failures} times on {name}: {last_error}"


def halt_reason(banned: Mapping[str, str], members: Sequence[Member]) -> str:
    """One line for a job every capable peer stopped taking."""
    names = {m.node_id: str(m.meta.get("name", m.node_id[:8])) for m in members}
    if len(banned) == 1:
        ((_node, why),) = banned.items()
        return f"no peer can render it: {why}"
    parts = [f"{names.get(node, node[:8])}: {why}" for node, why in sorted(banned.items())]
    text = "; ".join(parts)
    return f"no peer can render it ({len(banned)} stopped taking it) - {text}"
