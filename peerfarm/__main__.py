"""``python -m peerfarm``: the same as the ``peerfarm`` console script."""

from peerfarm.cli import main

raise SystemExit(main())
