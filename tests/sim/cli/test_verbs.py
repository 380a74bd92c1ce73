"""Every verb against a real HTTP control API: JSON shapes, human output and exit codes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from rich.console import Console

from peerfarm import cli as cli_module
from peerfarm.client import FarmClient, key_file_path
from peerfarm.gossip.crypto import encode_key, generate_key, load_or_create_key_file
from tests.cli.conftest import FarmHandle, Run, one_error_line

PEER_KEYS = {"id", "name", "address", "state", "slots", "busy", "renderers"}
JOB_KEYS = {
    "id",
    "name",
    "state",
    "priority",
    "frames_total",
    "frames_done",
    "frames_failed",
    "frames_rendering",
    "submitted_by",
    "output",
}
FRAME_KEYS = {"frame", "state", "peer", "attempts", "seconds", "delivered"}


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    path = tmp_path / "spin.pov"
    path.write_text("camera {}\n")
    return path


def submit(run: Run, farm: FarmHandle, scene: Path, *extra: str) -> str:
    result = run("submit", scene, "1-4", "--data-dir", farm.data_dir, *extra)
    assert result.exit_code == 0, result.stderr
    return result.stdout.strip().splitlines()[0]


def test_submit_prints_the_job_and_sends_every_field(
    run: Run, farm: FarmHandle, scene: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = run(
        "submit",
        "spin.pov",
        "1-10x2",
        "--data-dir",
        farm.data_dir,
        "--json",
        "--chunk",
        "2",
        "--priority",
        "3",
        "--name",
        "spinny",
        "--option",
        "width=64",
        "--option",
        "label=hello world",
        "--retries",
        "1",
        "--encode",
        "out.mp4",
        "--fps",
        "12",
        "--output",
        "frames",
    )
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["job"] in farm.fake.jobs and data["name"] == "spinny"
    _, request = farm.fake.calls[-1]
    assert request.scene == scene and request.frames == "1-10x2"
    assert (request.chunk, request.priority, request.retries, request.fps) == (2, 3, 1, 12.0)
    assert request.options == {"width": 64, "label": "hello world"}
    assert request.encode == tmp_path / "out.mp4" and request.output == tmp_path / "frames"
    assert request.cwd == tmp_path
    plain = run("submit", scene, "1", "--data-dir", farm.data_dir)
    assert plain.stdout.strip() in farm.fake.jobs


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
    ],
)
def test_submit_mistakes_are_one_line_exit_2(
    run: Run, farm: FarmHandle, scene: Path, args: tuple[str, ...], needle: str
) -> None:
    notes = scene.with_name("notes.txt")
    notes.write_text("x")
    argv = [str(scene) if a == "SCENE" else str(notes) if a == "NOTES" else a for a in args]
    result = run("submit", *argv, "--data-dir", farm.data_dir)
    assert result.exit_code == 2
    assert needle in one_error_line(result)
    assert farm.fake.calls == []  # nothing reached the daemon


def test_unreadable_scene(run: Run, farm: FarmHandle, scene: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads everything")
    scene.chmod(0)
    result = run("submit", scene, "1", "--data-dir", farm.data_dir)
    assert result.exit_code == 2 and "not readable" in one_error_line(result)


@pytest.mark.parametrize(("outcome", "code"), [("done", 0), ("fail", 1)])
def test_submit_wait_exit_code_follows_the_job(
    run: Run, farm: FarmHandle, scene: Path, outcome: str, code: int
) -> None:
    result = run(
        "submit",
        scene,
        "1-3",
        "--data-dir",
        farm.data_dir,
        "--wait",
        "--option",
        f"fake_outcome={outcome}",
    )
    assert result.exit_code == code, result.stderr
    job = result.stdout.strip()
    assert farm.fake.jobs[job].state == ("done" if outcome == "done" else "failed")
    as_json = run(
        "submit",
        scene,
        "1-2",
        "--data-dir",
        farm.data_dir,
        "--wait",
        "--json",
        "--option",
        f"fake_outcome={outcome}",
    )
    assert as_json.exit_code == code
    final = json.loads(as_json.stdout)["final"]
    assert final["frames_done" if outcome == "done" else "frames_failed"] == 2


def test_status_json_shapes_and_human_tables(run: Run, farm: FarmHandle, scene: Path) -> None:
    job = submit(run, farm, scene, "--name", "spin")
    farm.call(farm.fake.finish, job, [1])
    whole = json.loads(run("status", "--json", "--data-dir", farm.data_dir).stdout)
    assert set(whole) >= {"peers", "jobs"}
    assert set(whole["peers"][0]) >= PEER_KEYS and set(whole["jobs"][0]) >= JOB_KEYS
    one = json.loads(run("status", "spin", "--json", "--data-dir", farm.data_dir).stdout)
    assert [j["id"] for j in one["jobs"]] == [job]
    assert set(one["frames"][0]) >= FRAME_KEYS
    assert [f["state"] for f in one["frames"]] == ["done", "pending", "pending", "pending"]
    human = run("status", "--data-dir", farm.data_dir)
    assert human.exit_code == 0
    for text in ("Peers", "Jobs", "spin", "1/4", "alive", job[:10]):
        assert text in human.stdout
    assert "Frames" in run("status", job[:6], "--data-dir", farm.data_dir).stdout


def test_status_watch_redraws(farm: FarmHandle, scene: Path, run: Run) -> None:
    submit(run, farm, scene, "--name", "watched")
    console = Console(record=True, width=120)
    with FarmClient.connect(farm.data_dir) as client:
        code = cli_module.watch_status(client, None, interval=0.01, rounds=2, console=console)
    assert code == 0 and "watched" in console.export_text()


def test_peers(run: Run, farm: FarmHandle) -> None:
    data = json.loads(run("peers", "--json", "--data-dir", farm.data_dir).stdout)
    peer = data["peers"][0]
    assert set(peer) >= PEER_KEYS | {"host", "os", "python", "peerfarm"}
    human = run("peers", "--data-dir", farm.data_dir).stdout
    for text in ("fakehost", "Linux", "3.11.2", "povray 3.7.0", "gpu"):
        assert text in human


def test_job_actions(run: Run, farm: FarmHandle, scene: Path) -> None:
    job = submit(run, farm, scene)
    farm.call(lambda: farm.fake.finish(job, [2, 3], fail=True))
    for action, state in [("pause", "paused"), ("resume", "active"), ("cancel", "cancelled")]:
        result = run(action, job[:8], "--json", "--data-dir", farm.data_dir)
        assert result.exit_code == 0 and json.loads(result.stdout)["state"] == state
    retried = run("retry", job, "--data-dir", farm.data_dir)
    assert "2 frame(s)" in retried.stdout
    some = run("retry", job, "4", "--json", "--data-dir", farm.data_dir)
    assert json.loads(some.stdout)["frames"] == 1
    bad = run("retry", job, "4-", "--data-dir", farm.data_dir)
    assert bad.exit_code == 2 and "'4-'" in one_error_line(bad)


def test_logs(run: Run, farm: FarmHandle, scene: Path) -> None:
    job = submit(run, farm, scene)
    farm.call(lambda: farm.fake.finish(job, [2], fail=True))
    data = json.loads(run("logs", job, "2", "--json", "--data-dir", farm.data_dir).stdout)
    assert data["state"] == "failed" and data["attempts"][0]["error"]
    human = run("logs", job, "2", "--data-dir", farm.data_dir).stdout
    assert "renderer exited with status 1" in human and "PROGRESS 100%" in human
    missing = run("logs", job, "99", "--data-dir", farm.data_dir)
    assert missing.exit_code == 2 and "no frame 99" in one_error_line(missing)
    not_a_number = run("logs", job, "two", "--data-dir", farm.data_dir)
    assert not_a_number.exit_code == 2 and "two" in one_error_line(not_a_number)


def test_fetch_default_dir_and_encode(
    run: Run, farm: FarmHandle, scene: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    job = submit(run, farm, scene, "--name", "spin")
    farm.call(lambda: farm.fake.finish(job))
    fetched = run("fetch", "spin", "--data-dir", farm.data_dir)
    assert fetched.exit_code == 0, fetched.stderr
    assert len(list((tmp_path / "peerfarm-out" / "spin").glob("*.png"))) == 4
    explicit = run("fetch", job, "elsewhere", "--json", "--data-dir", farm.data_dir)
    assert json.loads(explicit.stdout)["dest"] == str(tmp_path / "elsewhere")
    encoded = run("encode", job, "v.mp4", "--fps", "30", "--json", "--data-dir", farm.data_dir)
    assert json.loads(encoded.stdout)["out"] == str(tmp_path / "v.mp4")
    assert (tmp_path / "v.mp4").is_file()


def test_unknown_job_everywhere(run: Run, farm: FarmHandle) -> None:
    for args in (
        ("status", "nope"),
        ("cancel", "nope"),
        ("retry", "nope"),
        ("logs", "nope", "1"),
        ("fetch", "nope"),
        ("encode", "nope", "x.mp4"),
    ):
        result = run(*args, "--data-dir", farm.data_dir)
        assert result.exit_code == 2, args
        assert "no job 'nope'" in one_error_line(result)


def test_key(run: Run, tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    missing = run("key", "--data-dir", data_dir)
    assert missing.exit_code == 2 and "peerfarm up --data-dir" in one_error_line(missing)
    key = load_or_create_key_file(key_file_path(data_dir))
    assert run("key", "--data-dir", data_dir).stdout.strip() == encode_key(key)
    other = encode_key(generate_key())
    from_env = run("key", "--json", "--data-dir", data_dir, env={"PEERFARM_KEY": other})
    assert json.loads(from_env.stdout) == {"key": other}
    bad_env = run("key", "--data-dir", data_dir, env={"PEERFARM_KEY": "not-base64!"})
    assert bad_env.exit_code == 2 and "PEERFARM_KEY" in one_error_line(bad_env)
    key_file = data_dir / "farm.key"
    key_file.chmod(0o644)
    open_file = run("key", "--key-file", key_file)
    assert open_file.exit_code == 2 and "chmod 600" in one_error_line(open_file)
