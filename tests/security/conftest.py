"""Fixtures of the hardening suite: virtual time for simulated farms, real daemons on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trio.testing

from peerfarm.testing import sim_clock
from tests.integration.farmhand import Farmhand, farmhand_fixture


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    """pytest-trio runs a test under any Clock among its fixtures: this one, by this name."""
    return sim_clock()


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[Farmhand]:
    """Real ``peerfarm up`` processes on 127.0.0.1, all stopped at the end."""
    yield from farmhand_fixture(tmp_path)
