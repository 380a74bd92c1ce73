"""``python -m peerfarm``: the same as the ``peerfarm`` console script."""

from peerfarm.console import run

raise SystemExit(run())
