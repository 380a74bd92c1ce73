"""Fixtures of the cluster suite: skip when the machine cannot host it, sweep, clean, report.

- Every test here is skipped, with the reason, without root, ``ip``, ``tc`` or ``unshare``.
- The first cluster test of a session sweeps the ``pf-*`` namespaces (and their processes) of
  earlier runs whose pytest process is gone.
- ``cluster(n, ...)`` builds a :class:`~tests.cluster.harness.Cluster` of ``n`` running hosts;
  it is closed by the fixture's finalizer, by ``atexit``, and on SIGTERM (turned into
  KeyboardInterrupt so pytest's teardown runs).
- ``figures`` records a scenario's measurements; they are printed in the terminal summary.
"""

from __future__ import annotations

import atexit
import itertools
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from tests.cluster import harness, netns

_RUNS = itertools.count(1)
_FIGURES: list[tuple[str, dict[str, Any]]] = []
_REASON: list[str | None] = []


def _skip_reason() -> str | None:
    if not _REASON:
        _REASON.append(netns.missing_requirements())
    return _REASON[0]


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def cluster_machine() -> Iterator[None]:
    """The machine can run clusters; earlier runs' leftovers are gone; exits clean up."""
    reason = _skip_reason()
    if reason is not None:
        pytest.skip(reason)
    removed = netns.sweep()
    if removed:
        print(f"\nswept {len(removed)} namespaces left by earlier runs: {', '.join(removed)}")
    atexit.register(harness.close_all)
    previous = signal.getsignal(signal.SIGTERM)
    if previous in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        harness.close_all()
        if previous in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


ClusterFactory = Callable[..., harness.Cluster]


@pytest.fixture
def cluster(cluster_machine: None, tmp_path: Path) -> Iterator[ClusterFactory]:
    """``cluster(n, preset="fast", frame_seconds=0.4, start=True)``: n hosts, daemons up."""
    made: list[harness.Cluster] = []

    def make(
        n: int, *, preset: str = "fast", frame_seconds: float = 0.4, start: bool = True
    ) -> harness.Cluster:
        root = tmp_path / f"cluster{len(made) + 1}"
        root.mkdir()
        built = harness.Cluster(root, next(_RUNS), preset=preset, frame_seconds=frame_seconds)
        made.append(built)
        if start and n:
            built.figures["start_s"] = round(built.start_all(n), 2)
        elif n:
            for _ in range(n):
                built.add_host(start=False)
        return built

    try:
        yield make
    finally:
        for built in made:
            built.close()


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """A scenario's measurements, printed at once and again in the terminal summary."""
    found: dict[str, Any] = {}
    yield found
    if found:
        _FIGURES.append((request.node.name, found))


def report(figures: dict[str, Any], **values: Any) -> None:
    """Record and print figures (visible with -s, and in the summary either way)."""
    figures.update(values)
    print("  " + ", ".join(f"{k}={v}" for k, v in values.items()))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FIGURES:
        return
    terminalreporter.section("cluster figures")
    for name, values in _FIGURES:
        text = ", ".join(f"{k}={v}" for k, v in values.items())
        terminalreporter.write_line(f"{name}: {text}")
