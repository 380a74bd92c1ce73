"""How deep a test run goes: the default (CI) depth, or ``--hypothesis-profile=long``.

The default run keeps every property and simulation but at a size that lets ``pytest -m "not
real"`` finish in a couple of minutes; the long profile (``pytest --hypothesis-profile=long`` or
``HYPOTHESIS_PROFILE=long``) multiplies Hypothesis examples and runs the extra seeds, histories
and virtual minutes of the simulations. ``tests/conftest.py`` registers both profiles and sets
:data:`LONG` before any test module is imported, so a test reads it at import time.
"""

from __future__ import annotations

#: True when the run uses the ``long`` Hypothesis profile (set by ``tests/conftest.py``).
LONG = False
#: How many times more Hypothesis examples a long run draws.
LONG_EXAMPLES_FACTOR = 10


def examples(ci: int) -> int:
    """``max_examples`` for a property: ``ci`` by default, ten times that in a long run."""
    return ci * LONG_EXAMPLES_FACTOR if LONG else ci


def depth(ci: int, long: int) -> int:
    """A simulation's size (seeds, histories, ...): ``ci`` by default, ``long`` in a long run."""
    return long if LONG else ci
