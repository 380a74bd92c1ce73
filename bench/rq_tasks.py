"""The RQ job of the baseline: run one frame's command in a subprocess, as Buildcat does.

Imported by the RQ workers (``bench.rq_engine``) by its dotted name, so it stays tiny.
"""

from __future__ import annotations

import subprocess


def run_command(argv: list[str]) -> int:
    """Run ``argv``; raise if it fails (RQ then records the job as failed)."""
    return subprocess.run(argv, check=True).returncode
