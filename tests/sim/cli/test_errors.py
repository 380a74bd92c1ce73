"""Failing well against the real facade of a simulated peer: a refused token, an unreachable
farm, a surprise; and JSON everywhere."""

from __future__ import annotations

import json

import pytest
import trio.testing

from peerfarm.client import FarmClient, write_control_file
from peerfarm.errors import ControlError
from tests.sim.cli.conftest import URL, CliFarm, one_error_line


async def test_wrong_token(farm: CliFarm, autojump_clock: trio.testing.MockClock) -> None:
    write_control_file(farm.data_dir, URL, "wrong-token")
    result = await farm.run("status", "--data-dir", farm.data_dir)
    assert result.exit_code == 3 and "refused us (wrong control token)" in one_error_line(result)


async def test_farm_unreachable_is_exit_3(
    farm: CliFarm, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    def unreachable() -> object:
        raise ControlError("the farm is unreachable")

    monkeypatch.setattr(farm.facade, "peers", unreachable)
    result = await farm.run("peers", "--data-dir", farm.data_dir)
    assert result.exit_code == 3 and "unreachable" in one_error_line(result)


async def test_unexpected_errors_are_one_line_with_a_hint(
    farm: CliFarm, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    def explode(self: FarmClient, job: str | None = None, frames: object = None) -> object:
        raise RuntimeError("boom")

    monkeypatch.setattr(FarmClient, "status", explode)
    result = await farm.run("status", "--data-dir", farm.data_dir)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "peerfarm: unexpected error: RuntimeError: boom",
        "run with --verbose for details",
    ]
    verbose = await farm.run("--verbose", "status", "--data-dir", farm.data_dir)
    assert "Traceback" in verbose.stderr and verbose.exit_code == 1


async def test_json_everywhere(farm: CliFarm, autojump_clock: trio.testing.MockClock) -> None:
    for verb in ("status", "peers"):
        result = await farm.run(verb, "--json", "--data-dir", farm.data_dir)
        assert isinstance(json.loads(result.stdout), dict)
