"""The simulation suite's clock: virtual time that jumps at once, but never over a thread."""

from __future__ import annotations

import pytest
import trio.testing

from peerfarm.testing import sim_clock


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    """The clock of a simulation test. pytest-trio runs a test under a Clock only when the
    test function itself takes it as an argument (one a fixture asks for is not used): every
    async test here does (checked at collection, tests/conftest.py)."""
    return sim_clock()
