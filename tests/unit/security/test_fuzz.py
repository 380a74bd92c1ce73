"""The decoders under fuzzing (issue 10): seconds of it in the suite, longer via fuzz/run.py.

Hypothesis feeds every target random and seed-derived bytes (fewer when atheris is installed:
then tests/real/security/test_fuzz.py runs each target coverage-guided in a subprocess). Every
input in ``fuzz/regressions/`` (a crash found once, or a case that once misbehaved) is replayed
as a regression test.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz import targets
from tests.support import ROOT

REGRESSIONS = sorted((ROOT / "fuzz" / "regressions").glob("*/*"))
HAS_ATHERIS = importlib.util.find_spec("atheris") is not None


@pytest.mark.parametrize(
    "path", REGRESSIONS, ids=[f"{p.parent.name}/{p.name}" for p in REGRESSIONS]
)
def test_saved_fuzz_inputs_stay_fixed(path: Path) -> None:
    targets.TARGETS[path.parent.name](path.read_bytes())


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
def test_seed_inputs_decode(name: str) -> None:
    for data in targets.seeds()[name]:
        targets.TARGETS[name](data)


def _mutations(name: str) -> st.SearchStrategy[bytes]:
    seeds = targets.seeds()[name]

    @st.composite
    def mutate(draw: st.DrawFn) -> bytes:
        data = bytearray(draw(st.sampled_from(seeds)))
        for _ in range(draw(st.integers(0, 8))):
            if not data:
                break
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        cut = draw(st.integers(0, len(data)))
        return bytes(data[:cut]) + draw(st.binary(max_size=32))

    return st.one_of(st.binary(max_size=2048), mutate())


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
def test_hypothesis_fuzzing_runs_clean(name: str) -> None:
    @settings(
        max_examples=300 if HAS_ATHERIS else 3000,
        derandomize=True,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(_mutations(name))
    def run(data: bytes) -> None:
        targets.TARGETS[name](data)

    run()
