from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .farmhand import Farmhand, farmhand_fixture


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[Farmhand]:
    yield from farmhand_fixture(tmp_path)
