"""The suite's layers, one directory each, marked by where a test lives; Hypothesis profiles.

=========  ===============  ==========================================================
marker     directory        what runs there
=========  ===============  ==========================================================
unit       tests/unit       pure modules and Hypothesis properties: no sockets, no
                            processes, no clock but the one a test passes in
sim        tests/sim        SimFarm, the in-memory network and membership simulations
                            under virtual time; the API and the CLI over a simulated peer
real       tests/real       real daemons, sockets, renderers and subprocesses on loopback
cluster    tests/cluster    real daemons in network namespaces (root); also ``real``
web        tests/web        the dashboard in headless Chromium; also ``real``
=========  ===============  ==========================================================

``pytest -m "not real"`` runs unit and sim only; ``--hypothesis-profile=long`` deepens both
(more examples, seeds and histories: tests/support/depth.py). ``pytest --simulate-windows
tests/unit tests/sim`` runs them under a simulated Windows (``tests/support/windows.py``);
tests marked ``posix_only`` are skipped there. Every test file lives in one of these
directories (collection stops with a clear error otherwise); each layer's fixtures are in its
own conftest.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.support import depth

# The default (CI) profile: seeded, Hypothesis's 100 examples unless a test asks for more (see
# tests/support/depth.py); "long" draws fresh random examples, ten times as many for the tests
# that set their own count, and deepens the simulations: ``pytest --hypothesis-profile=long``.
settings.register_profile(
    "default", deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.register_profile(
    "long",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    max_examples=5000,
    derandomize=False,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def pytest_configure(config: pytest.Config) -> None:
    """Tell the tests how deep this run goes, before any test module is imported."""
    profile = config.getoption("hypothesis_profile", None) or os.environ.get("HYPOTHESIS_PROFILE")
    depth.LONG = profile == "long"


TESTS = Path(__file__).resolve().parent
#: Directory -> the markers its tests get.
LAYERS = {
    "unit": ("unit",),
    "sim": ("sim",),
    "real": ("real",),
    "cluster": ("cluster", "real"),
    "web": ("web", "real"),
}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--simulate-windows",
        action="store_true",
        help="run unit and sim tests under a simulated Windows (tests/support/windows.py)",
    )


@pytest.fixture(autouse=True)
def _simulated_windows(request: pytest.FixtureRequest) -> None:
    """With ``--simulate-windows``: every unit and sim test runs under the simulated Windows."""
    if not request.config.getoption("--simulate-windows"):
        return
    if request.node.get_closest_marker("posix_only") is not None:
        pytest.skip("needs a POSIX-only call itself (--simulate-windows)")
    if request.node.get_closest_marker("real") is not None:
        pytest.skip("real processes and renderers are not simulated (--simulate-windows)")
    from tests.support.windows import simulate_windows

    simulate_windows(request.getfixturevalue("monkeypatch"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        try:
            layer = item.path.resolve().relative_to(TESTS).parts[0]
        except ValueError:
            continue  # not under tests/ (a path given on the command line elsewhere)
        if layer not in LAYERS:
            raise pytest.UsageError(
                f"{item.nodeid}: a test belongs in one of tests/{{{','.join(LAYERS)}}}/"
            )
        for marker in LAYERS[layer]:
            item.add_marker(marker)
        if layer == "sim":
            _check_virtual_time(item)


#: The clock fixtures of the simulation layer (tests/sim/conftest.py).
CLOCKS = ("autojump_clock", "mock_clock")


def _check_virtual_time(item: pytest.Item) -> None:
    """A trio test of the simulation layer runs in virtual time. pytest-trio uses a Clock only
    when it is an argument of the test function itself, not when only a fixture asks for it,
    and such a test silently runs on the system clock: its simulated seconds are real ones."""
    function = getattr(item, "obj", None)
    if not inspect.iscoroutinefunction(function):
        return
    if not any(name in inspect.signature(function).parameters for name in CLOCKS):
        raise pytest.UsageError(
            f"{item.nodeid}: a simulation test takes autojump_clock as an argument "
            "(else it runs in real time)"
        )
