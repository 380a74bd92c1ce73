"""Fixtures of the real layer: ``peerfarm up`` processes on 127.0.0.1 (``farm``), and a check
that every test leaves no daemon running.

Daemons come from :mod:`peerfarm.testing.daemons` (the library the benchmarks and the demo use
too): loopback only, mDNS only when a test asks (bound to 127.0.0.1), each in its own process
group, all stopped when the test ends, pass or fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from peerfarm.testing import daemons
from peerfarm.testing.daemons import LocalFarm


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[LocalFarm]:
    """An empty farm in ``tmp_path`` (``farm.start(name, ...)``); stopped at the end."""
    with LocalFarm(tmp_path) as farm:
        yield farm


@pytest.fixture(autouse=True)
def no_daemon_left_behind() -> Iterator[None]:
    """Fails a test that leaves a farm of its own running (after stopping it). Farms of
    module-scoped fixtures that were open before the test are left alone."""
    before = list(daemons._OPEN)
    yield
    leaked = [farm for farm in daemons._OPEN if farm not in before]
    for farm in leaked:
        farm.close()
    assert not leaked, f"daemons left running by the test: {[str(f.root) for f in leaked]}"
