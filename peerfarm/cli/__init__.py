"""The ``peerfarm`` command line: a thin layer of click and rich over the control API.

Every verb but ``up``, ``key`` and ``demo`` talks to the local daemon only through
:mod:`peerfarm.client` (the same HTTP API the dashboard uses) and reads its typed answers
(:mod:`peerfarm.control`). The package:

- :mod:`~peerfarm.cli.app` — the click group, exit codes, one-line errors, shared options;
- :mod:`~peerfarm.cli.jobs` — submit, status, peers, cancel/pause/resume/retry, logs, fetch, encode;
- :mod:`~peerfarm.cli.host` — up, key, dashboard, demo;
- :mod:`~peerfarm.cli.hosts` — hold, release, drain (another peer's availability);
- :mod:`~peerfarm.cli.parsing` and :mod:`~peerfarm.cli.views` — arguments in, text out (pure).

Verb modules are imported when their verb runs (``app.VERBS``), which keeps a short command
quick to start. ``main`` runs a command; the console script is :func:`peerfarm.console.run`.
"""

from peerfarm.cli.app import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NO_DAEMON,
    EXIT_OK,
    EXIT_USAGE,
    cli,
    main,
)

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_NO_DAEMON",
    "EXIT_OK",
    "EXIT_USAGE",
    "cli",
    "main",
]
