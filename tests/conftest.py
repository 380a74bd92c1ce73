"""Shared test configuration: Hypothesis profiles and helpers used across layers."""

from __future__ import annotations

import os

import pytest
import trio.testing
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default", deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.register_profile(
    "long", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=5000
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    """Virtual time that jumps ahead whenever every task has waited a few real milliseconds.

    Not 0: a node hands file copies to worker threads, and a zero threshold would jump the
    clock while a thread is busy, as if a 1 ms copy took until the next timer.
    """
    return trio.testing.MockClock(autojump_threshold=0.005)
