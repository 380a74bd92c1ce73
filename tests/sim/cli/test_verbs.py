"""Every verb against the real app and facade of a simulated peer: the fields sent, the typed
answers read back (JSON shapes, human output) and exit codes."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import pytest
import trio
import trio.testing
from rich.console import Console

from peerfarm import farm as farm_module
from peerfarm import follow
from peerfarm.cli.jobs import watch_status
from peerfarm.client import FarmClient
from peerfarm.control import FrameView, JobView, PeerView, StatusView, SubmitRequest
from peerfarm.ledger.model import Status
from tests.sim.cli.conftest import CliFarm, one_error_line


def keys(view: type) -> set[str]:
    return set(view.__required_keys__)  # type: ignore[attr-defined]


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    """A POV-Ray scene: accepted, but no simulated peer renders it."""
    path = tmp_path / "spin.pov"
    path.write_text("camera {}\n")
    return path


async def submit(farm: CliFarm, scene: Path, frames: str, *extra: str) -> str:
    result = await farm.run("submit", scene, frames, "--data-dir", farm.data_dir, *extra)
    assert result.exit_code == 0, result.stderr
    return result.stdout.strip().splitlines()[0]


async def test_submit_prints_the_job_and_sends_every_field(
    farm: CliFarm,
    scene: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    autojump_clock: trio.testing.MockClock,
) -> None:
    sent: list[SubmitRequest] = []
    real = farm.facade.submit

    async def spy(request: SubmitRequest) -> object:
        sent.append(request)
        return await real(request)

    monkeypatch.setattr(farm.facade, "submit", spy)
    result = await farm.run(
        "submit", "spin.pov", "1-10x2", "--data-dir", farm.data_dir, "--json",
        "--chunk", "2", "--priority", "3", "--name", "spinny",
        "--option", "width=64", "--option", "height=48", "--retries", "1",
        "--encode", "out.mp4", "--fps", "12", "--output", "frames", "--overwrite",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["name"] == "spinny" and data["frames"] == 5 and data["renderer"] == "povray"
    assert "no peer can render it" in data["warning"]
    assert f"peerfarm: warning: {data['warning']}" in result.stderr
    (request,) = sent
    assert request.scene == scene and request.frames == "1-10x2" and request.renderer is None
    assert (request.chunk, request.priority, request.retries, request.fps) == (2, 3, 1, 12.0)
    assert request.options == {"width": 64, "height": 48, "overwrite": True}
    assert request.encode == tmp_path / "out.mp4" and request.output == tmp_path / "frames"
    assert request.cwd == tmp_path and request.name == "spinny"
    spec = farm.peer.node.ledger.job(data["job"])
    assert spec is not None and spec.frames == (1, 3, 5, 7, 9) and spec.output == data["output"]
    plain = await farm.run("submit", scene, "1", "--data-dir", farm.data_dir)
    assert farm.peer.node.ledger.job(plain.stdout.strip()) is not None


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("SCENE", "1-3,5-a"), "'5-a'"),
        (("SCENE", ""), "empty frame range"),
        (("/no/such/scene.pov", "1-3"), "scene not found: /no/such/scene.pov"),
        (("SCENE", "1", "--renderer", "maya"), "unknown renderer 'maya'"),
        (("NOTES", "1"), "no renderer for scenes ending in .txt"),
        (("SCENE", "1", "--option", "width"), "KEY=VALUE"),
        (("SCENE", "1", "--chunk", "0"), "--chunk"),
        (("SCENE", "1", "--option", "width=wide"), "option width"),
    ],
)
async def test_submit_mistakes_are_one_line_exit_2(
    farm: CliFarm,
    scene: Path,
    args: tuple[str, ...],
    needle: str,
    autojump_clock: trio.testing.MockClock,
) -> None:
    notes = scene.with_name("notes.txt")
    notes.write_text("x")
    argv = [str(scene) if a == "SCENE" else str(notes) if a == "NOTES" else a for a in args]
    result = await farm.run("submit", *argv, "--data-dir", farm.data_dir)
    assert result.exit_code == 2
    assert needle in one_error_line(result)
    assert farm.peer.node.ledger.jobs() == []  # nothing was submitted


async def test_unreadable_scene(
    farm: CliFarm, scene: Path, autojump_clock: trio.testing.MockClock
) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads everything")
    scene.chmod(0)
    result = await farm.run("submit", scene, "1", "--data-dir", farm.data_dir)
    assert result.exit_code == 2 and "not readable" in one_error_line(result)


@pytest.mark.parametrize(("fail", "code"), [(False, 0), (True, 1)])
async def test_submit_wait_exit_code_follows_the_job(
    farm: CliFarm, fail: bool, code: int, autojump_clock: trio.testing.MockClock
) -> None:
    if fail:
        farm.failing.update({1, 2, 3})
    result = await farm.run(
        "submit", farm.script(), "1-3", "--data-dir", farm.data_dir, "--wait", "--retries", "0"
    )
    assert result.exit_code == code, result.stderr
    job = result.stdout.strip()
    assert farm.job_state(job) == ("failed" if fail else "done")
    as_json = await farm.run(
        "submit", farm.script("again"), "1-2", "--data-dir", farm.data_dir, "--wait", "--json",
        "--retries", "0",
    )  # fmt: skip
    assert as_json.exit_code == code
    final = json.loads(as_json.stdout)["final"]
    assert set(final) == keys(JobView)
    assert final["frames_failed" if fail else "frames_done"] == 2


async def test_submit_wait_returns_the_moment_the_job_ends(
    farm: CliFarm, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    """``--wait`` follows the job with long polls, never sleeping between them, and learns
    the end from the poll the daemon answers when the last frame is done (not at its next
    poll, which would come up to half a second later)."""
    node = farm.peer.node
    ended_at: list[float] = []
    answered: list[tuple[float, bool]] = []
    slept: list[float] = []
    sleep = follow.sleep
    wait_for_end = farm.facade.wait_for_end

    def ended() -> bool:
        jobs = node.ledger.jobs()
        return bool(jobs) and node.ledger.counts(jobs[0].id).done == 5

    async def witness() -> None:
        while not ended():
            await node.wait_for_change(node.generation, 60)
        ended_at.append(trio.current_time())

    async def held(job: str, timeout: float) -> bool:
        done = await wait_for_end(job, timeout)
        answered.append((trio.current_time(), done))
        return done

    def counted(seconds: float) -> None:
        slept.append(seconds)
        sleep(seconds)

    monkeypatch.setattr(farm.facade, "wait_for_end", held)
    monkeypatch.setattr(follow, "sleep", counted)
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(witness)
            result = await farm.run(
                "submit", farm.script(), "1-5", "--data-dir", farm.data_dir, "--wait"
            )
    assert result.exit_code == 0, result.stderr
    assert farm.job_state(result.stdout.strip()) == "done"
    assert slept == []
    assert [done for _at, done in answered] == [False] * (len(answered) - 1) + [True]
    assert ended_at and answered[-1][0] - ended_at[0] < 0.001


async def test_submit_wait_says_why_a_job_waits(
    farm: CliFarm, scene: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A job no peer can render waits: ``--wait`` says why, until someone cancels it."""
    ledger = farm.peer.node.ledger

    async def cancel_later() -> None:
        await farm.sim.wait_until(lambda: bool(ledger.jobs()), timeout=60, what="the job")
        await trio.sleep(3)
        await farm.facade.act(ledger.jobs()[0].id, "cancel")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(cancel_later)
        result = await farm.run("submit", scene, "1", "--data-dir", farm.data_dir, "--wait")
    assert result.exit_code == 1  # the job did not succeed: it was cancelled
    assert result.stderr.count("spin waits: no peer can render it") == 2  # warning, then --wait


async def test_status_json_shapes_and_human_tables(
    farm: CliFarm, autojump_clock: trio.testing.MockClock
) -> None:
    job = await submit(farm, farm.script(), "1-4", "--name", "spin")
    await farm.sim.wait_until(
        lambda: farm.sim.frame_statuses(job)[1] == Status.DONE, timeout=30, what="frame 1 done"
    )
    whole: StatusView = json.loads(
        (await farm.run("status", "--json", "--data-dir", farm.data_dir)).stdout
    )
    assert set(whole) == keys(StatusView)
    assert set(whole["peers"][0]) == keys(PeerView) and set(whole["jobs"][0]) == keys(JobView)
    one = json.loads(
        (await farm.run("status", "spin", "--json", "--data-dir", farm.data_dir)).stdout
    )
    assert [j["id"] for j in one["jobs"]] == [job]
    assert all(set(f) == keys(FrameView) for f in one["frames"])
    assert [f["state"] for f in one["frames"]] == ["done", "rendering", "pending", "pending"]
    human = await farm.run("status", "--data-dir", farm.data_dir)
    assert human.exit_code == 0
    for text in ("Peers", "Jobs", "spin", "1/4", "alive", job[:10], "spin:2"):
        assert text in human.stdout
    assert "Frames" in (await farm.run("status", job[:6], "--data-dir", farm.data_dir)).stdout


async def test_status_watch_redraws(
    farm: CliFarm, scene: Path, autojump_clock: trio.testing.MockClock
) -> None:
    await submit(farm, scene, "1", "--name", "watched")
    console = Console(record=True, width=120)

    def watch() -> int:
        with FarmClient.connect(farm.data_dir) as client:
            return watch_status(client, None, interval=0.01, rounds=2, out=console)

    assert await farm.in_thread(watch) == 0
    assert "watched" in console.export_text()


async def test_peers(farm: CliFarm, autojump_clock: trio.testing.MockClock) -> None:
    data = json.loads((await farm.run("peers", "--json", "--data-dir", farm.data_dir)).stdout)
    (peer,) = data["peers"]
    assert set(peer) == keys(PeerView)
    assert peer["name"] == farm.peer.name and peer["renderers"] == {"command": "fake-1"}
    human = (await farm.run("peers", "--data-dir", farm.data_dir)).stdout
    for text in (farm.peer.name, platform.python_version(), "command fake-1", "0 busy of 1"):
        assert text in human


async def test_job_actions(farm: CliFarm, autojump_clock: trio.testing.MockClock) -> None:
    farm.failing.update({2, 3})
    job = await submit(farm, farm.script(), "1-4", "--retries", "0")
    for action, state in [("pause", "paused"), ("resume", "active")]:
        result = await farm.run(action, job[:8], "--json", "--data-dir", farm.data_dir)
        assert result.exit_code == 0 and json.loads(result.stdout)["state"] == state
    paused = await farm.run("pause", job[:8], "--data-dir", farm.data_dir)
    assert paused.stdout.strip() == f"pause: {job[:8]} (paused)"
    await farm.run("resume", job, "--data-dir", farm.data_dir)
    await farm.settle(job)
    farm.failing.clear()
    retried = await farm.run("retry", job, "--data-dir", farm.data_dir)
    assert retried.stdout.strip() == f"retry: {job}: 2 frame(s) queued again"
    some = await farm.run("retry", job, "4", "--json", "--data-dir", farm.data_dir)
    assert json.loads(some.stdout)["frames"] == 1
    bad = await farm.run("retry", job, "4-", "--data-dir", farm.data_dir)
    assert bad.exit_code == 2 and "'4-'" in one_error_line(bad)
    cancelled = await farm.run("cancel", job, "--json", "--data-dir", farm.data_dir)
    assert json.loads(cancelled.stdout)["state"] == "cancelled"


async def test_logs(farm: CliFarm, autojump_clock: trio.testing.MockClock) -> None:
    farm.failing.add(2)
    job = await submit(farm, farm.script(), "1-4", "--retries", "0")
    await farm.settle(job)
    data = json.loads(
        (await farm.run("logs", job, "2", "--json", "--data-dir", farm.data_dir)).stdout
    )
    assert data["state"] == "failed" and data["attempts"][0]["error"]
    human = (await farm.run("logs", job, "2", "--data-dir", farm.data_dir)).stdout
    assert "error: fake failure of frame 2" in human and "boom" in human
    missing = await farm.run("logs", job, "99", "--data-dir", farm.data_dir)
    assert missing.exit_code == 2 and "frame 99 is not part of job" in one_error_line(missing)
    not_a_number = await farm.run("logs", job, "two", "--data-dir", farm.data_dir)
    assert not_a_number.exit_code == 2 and "two" in one_error_line(not_a_number)


async def test_fetch_default_dir_and_encode(
    farm: CliFarm,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def encode_video(frames: list[Path], out: Path, fps: float) -> Path:
        """ffmpeg's stand-in (tests/real/farm/test_cli.py encodes for real)."""
        out.write_bytes(b"\x00\x00\x00\x18ftypmp42")
        return out

    monkeypatch.setattr(farm_module, "encode_video", encode_video)
    job = await submit(farm, farm.script(), "1-4", "--name", "spin", "--output", "delivered")
    await farm.settle(job)
    fetched = await farm.run("fetch", "spin", "--data-dir", farm.data_dir)
    assert fetched.exit_code == 0, fetched.stderr
    folder = tmp_path / "peerfarm-out" / "spin"
    assert fetched.stdout.strip() == f"4 file(s) in {folder}"
    assert len(list(folder.glob("*.txt"))) == 4
    explicit = await farm.run("fetch", job, "elsewhere", "--json", "--data-dir", farm.data_dir)
    assert json.loads(explicit.stdout)["dest"] == str(tmp_path / "elsewhere")
    args = ("encode", job, "v.mp4", "--fps", "30", "--data-dir", farm.data_dir)
    encoded = await farm.run(*args, "--json")
    video = str(tmp_path / "v.mp4")
    assert json.loads(encoded.stdout) == {"job": job, "video": video, "frames": 4, "fps": 30.0}
    human = await farm.run(*args)
    assert human.stdout.strip() == f"{video} (4 frames at 30 fps)"


async def test_unknown_job_everywhere(
    farm: CliFarm, autojump_clock: trio.testing.MockClock
) -> None:
    for args in (
        ("status", "nope"),
        ("cancel", "nope"),
        ("retry", "nope"),
        ("logs", "nope", "1"),
        ("fetch", "nope"),
        ("encode", "nope", "x.mp4"),
    ):
        result = await farm.run(*args, "--data-dir", farm.data_dir)
        assert result.exit_code == 2, args
        assert "no job 'nope'" in one_error_line(result)


async def test_hold_drain_and_release_a_host(
    farm: CliFarm, autojump_clock: trio.testing.MockClock
) -> None:
    name = farm.peer.name
    held = await farm.run("hold", name, "--data-dir", farm.data_dir)
    assert held.exit_code == 0 and held.stdout.strip() == f"hold: {name} (held by {name})"
    human = (await farm.run("peers", "--data-dir", farm.data_dir)).stdout
    assert f"held by {name}" in human
    drained = await farm.run("drain", name, "--now", "--json", "--data-dir", farm.data_dir)
    answer = json.loads(drained.stdout)
    assert answer["availability"] == f"drained by {name}" and answer["changed"] == 1
    assert farm.peer.node.ledger.host_hold(farm.peer.node_id) == {"mode": "drain", "by": name}
    released = await farm.run("release", name, "--data-dir", farm.data_dir)
    assert released.stdout.strip() == f"release: {name} (takes work)"
    assert farm.peer.node.ledger.host_hold(farm.peer.node_id) is None
    unknown = await farm.run("hold", "nobody", "--data-dir", farm.data_dir)
    assert unknown.exit_code == 2
    assert one_error_line(unknown) == (
        "peerfarm: no peer 'nobody': see `peerfarm peers` for this farm's peers"
    )
