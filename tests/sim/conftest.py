"""The simulation suite's clock: virtual time that jumps at once, but never over a thread."""

from __future__ import annotations

import pytest
import trio.testing

from peerfarm.testing import sim_clock


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    """pytest-trio runs a test under any Clock among its fixtures: this one, by this name."""
    return sim_clock()
