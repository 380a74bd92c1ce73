"""The decoders under fuzzing (issue 10): seconds of it in the suite, longer via fuzz/run.py.

With atheris installed, each target runs coverage-guided for a few seconds in a subprocess
(``fuzz/run.py --target T --seconds 2``). Without it, Hypothesis feeds the same targets random
and seed-derived bytes. Either way, every input in ``fuzz/regressions/`` (a crash found once,
or a case that once misbehaved) is replayed as a regression test.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz import targets

ROOT = Path(__file__).resolve().parents[2]
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


@pytest.mark.skipif(not HAS_ATHERIS, reason="atheris not installed: Hypothesis runs instead")
@pytest.mark.parametrize("name", sorted(targets.TARGETS))
def test_coverage_guided_fuzzing_runs_clean(name: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "fuzz" / "run.py"),
            "--target",
            name,
            "--seconds",
            "2",
            "--seed",
            "7",
            "--corpus",
            str(tmp_path / "corpus"),
            "--crashes",
            str(tmp_path / "crashes"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    crashes = list((tmp_path / "crashes").rglob("*"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert not [c for c in crashes if c.is_file()]
    assert "Done" in result.stderr  # libFuzzer really ran


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
