"""The CLI of issue 22 against a simulated peer: ``submit --after/--per-frame/--notify/
--no-output``, ``check`` and ``retry --from-check``."""

from __future__ import annotations

import json
from pathlib import Path

import trio.testing

from peerfarm.scheduler import dependencies, notices
from tests.sim.cli.conftest import CliFarm, one_error_line


async def test_submit_chains_and_notify_go_into_the_spec(
    farm: CliFarm, autojump_clock: trio.testing.MockClock
) -> None:
    d = ("--data-dir", farm.data_dir)
    bake = await farm.run("submit", farm.script("bake"), "1-3", "--name", "bake", *d)
    assert bake.exit_code == 0, bake.stderr
    parent = bake.stdout.strip()
    result = await farm.run(
        "submit", farm.script("comp"), "1-3", "--after", "bake", "--per-frame",
        "--notify", "http://127.0.0.1:9/hook", "--notify", "desktop", "--no-output", *d,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    spec = farm.peer.node.ledger.job(result.stdout.strip())
    assert spec is not None
    assert dependencies.dependency_of(spec) == dependencies.Dependency(parent, True)
    assert notices.targets_of(spec) == ("http://127.0.0.1:9/hook", "desktop")
    assert spec.options["no_output"] is True
    status = json.loads((await farm.run("status", spec.id, "--json", *d)).stdout)
    assert status["jobs"][0]["after"] == {"id": parent, "name": "bake", "per_frame": True}


async def test_bad_chain_and_notify_flags_are_one_line_errors(
    farm: CliFarm, autojump_clock: trio.testing.MockClock
) -> None:
    d = ("--data-dir", farm.data_dir)
    scene = farm.script("x")
    cases = [
        (("--after", "nope"), "no job 'nope'"),
        (("--per-frame",), "--per-frame goes with --after"),
        (("--notify", "ftp://h/x"), "give an http(s) URL or 'desktop'"),
    ]
    for flags, message in cases:
        result = await farm.run("submit", scene, "1", *flags, *d)
        assert result.exit_code == 2, (flags, result.stdout)
        assert message in one_error_line(result), flags
    pov = Path(farm.root / "s.pov")
    pov.write_text("camera {}\n")
    result = await farm.run("submit", pov, "1", "--no-output", *d)
    assert result.exit_code == 2 and "--no-output is for command jobs" in one_error_line(result)


async def test_check_finds_missing_and_damaged_files_and_retry_takes_them(
    farm: CliFarm, autojump_clock: trio.testing.MockClock
) -> None:
    d = ("--data-dir", farm.data_dir)
    job = (await farm.run("submit", farm.script("shot"), "1-4", *d)).stdout.strip()
    await farm.settle(job)
    clean = await farm.run("check", job, *d)
    assert clean.exit_code == 0 and "4 delivered frame(s) checked, all intact" in clean.stdout
    spec = farm.peer.node.ledger.job(job)
    assert spec is not None
    folder = Path(spec.output)
    files = sorted(folder.iterdir())
    files[1].unlink()
    files[2].write_bytes(b"scribbled over")
    found = await farm.run("check", job, *d)
    assert found.exit_code == 1
    assert f"frame 2: {files[1].name}: missing" in found.stdout
    assert f"frame 3: {files[2].name}: damaged" in found.stdout
    assert "2 to retry: 2-3" in found.stdout
    answer = json.loads((await farm.run("check", job, "--json", *d)).stdout)
    assert answer["frames"] == "2-3" and answer["checked"] == 4
    retried = await farm.run("retry", job, "--from-check", *d)
    assert retried.exit_code == 0 and "2 frame(s) queued again" in retried.stdout, retried.stderr
    await farm.sim.wait_until(
        lambda: farm.peer.node.ledger.delivered_count(job) == 4 and farm.job_state(job) == "done",
        timeout=60,
        what="re-delivered",
    )
    again = await farm.run("check", job, *d)
    assert again.exit_code == 0 and "all intact" in again.stdout, again.stdout
    nothing = await farm.run("retry", job, "--from-check", *d)
    assert "check found nothing missing or damaged" in nothing.stdout
