"""``peerfarm check JOB``: are the delivered files still what the farm rendered?

Runs on the submitting peer (the files are on its disk). For every done frame marked
delivered, each output is looked for where the delivery rule put it (its own name, or the
``name (n)`` variant this job wrote, listed in the data dir's ``deliveries`` file; on shared
storage, the shared output folder) and hashed against the ledger's winning done record. A file
that is gone is "missing"; one whose bytes differ is "damaged". The frames found are what
``peerfarm retry JOB --from-check`` renders again (a retry opens a new epoch, whose outputs
are delivered again, replacing this job's own damaged files).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..ledger.model import FrameRecord
from ..renderers.checks import damaged
from .naming import split_suffix

#: Variants (``name (n)``) looked at for one output.
MAX_VARIANTS = 1000


@dataclass(frozen=True, slots=True)
class Problem:
    frame: int
    file: str
    problem: str  # "missing" | "damaged (...)" | "unreadable (...)"


def delivered_candidates(folder: Path, name: str, ours: Collection[str]) -> list[Path]:
    """Where the delivery rule may have put output ``name``: its own name first, then the
    variants this job wrote."""
    stem, suffix = split_suffix(name)
    out = [folder / name]
    for n in range(2, MAX_VARIANTS):
        variant = f"{stem} ({n}){suffix}"
        if variant in ours:
            out.append(folder / variant)
        elif not (folder / variant).exists():
            break
    return out


def check_delivered(
    records: Mapping[int, FrameRecord], folder: Path, ours: Collection[str]
) -> list[Problem]:
    """Problems of the delivered outputs of ``records`` (frame -> its winning done record)."""
    problems = []
    for frame in sorted(records):
        for output in records[frame].outputs:
            found: str | None = "missing"
            for path in delivered_candidates(folder, output.name, ours):
                if not path.exists() and not path.is_symlink():
                    continue
                why = damaged(None if path.is_symlink() else path, output.digest)
                if why is None:
                    found = None
                    break
                if path.name == output.name or path.name in ours:
                    found = why
            if found is not None:
                problems.append(Problem(frame, output.name, found))
    return problems
