"""Reaching the daemon, and failing well: each mistake is one line, a fixed exit code."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from peerfarm import daemon
from peerfarm.client import FarmClient, read_control_file, write_control_file
from peerfarm.errors import ControlError
from tests.cli.conftest import FarmHandle, Run, one_error_line


def test_no_daemon_names_the_command_that_starts_one(run: Run, tmp_path: Path) -> None:
    data_dir = tmp_path / "empty"
    result = run("status", "--data-dir", data_dir)
    assert result.exit_code == 3
    assert f"peerfarm up --data-dir {data_dir}" in one_error_line(result)
    env = run("peers", env={"PEERFARM_DATA_DIR": str(data_dir)})
    assert env.exit_code == 3 and str(data_dir) in one_error_line(env)


def test_stale_control_file_and_refused_connection(run: Run, tmp_path: Path) -> None:
    stale = tmp_path / "stale"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_control_file(stale, "http://127.0.0.1:9", "t", pid=dead.pid)
    result = run("status", "--data-dir", stale)
    assert result.exit_code == 3 and "is gone" in one_error_line(result)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    refused = tmp_path / "refused"
    write_control_file(refused, f"http://127.0.0.1:{port}", "t")
    result = run("cancel", "job", "--data-dir", refused)
    assert result.exit_code == 3 and "refused the connection" in one_error_line(result)
    assert "peerfarm up --data-dir" in result.stderr


def test_control_file_is_private_and_malformed_is_one_line(run: Run, tmp_path: Path) -> None:
    path = write_control_file(tmp_path, "http://127.0.0.1:1", "secret")
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_control_file(tmp_path).token == "secret"
    path.write_text("{not json")
    result = run("status", "--data-dir", tmp_path)
    assert result.exit_code == 3 and "malformed" in one_error_line(result)


def test_wrong_token(run: Run, farm: FarmHandle) -> None:
    write_control_file(farm.data_dir, farm.url, "wrong-token")
    result = run("status", "--data-dir", farm.data_dir)
    assert result.exit_code == 3 and "refused us (wrong control token)" in one_error_line(result)


def test_a_daemon_that_does_not_answer_times_out() -> None:
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with FarmClient(url, "t", timeout=0.3) as client, pytest.raises(ControlError) as info:
            client.status()
    assert str(info.value) == f"the daemon at {url} is not answering"


def test_farm_unreachable_is_exit_3(run: Run, farm: FarmHandle) -> None:
    farm.fake.broken = True
    result = run("peers", "--data-dir", farm.data_dir)
    assert result.exit_code == 3 and "unreachable" in one_error_line(result)


def test_unexpected_errors_are_one_line_with_a_hint(
    run: Run, farm: FarmHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(self: FarmClient, job: str | None = None) -> dict[str, object]:
        raise RuntimeError("boom")

    monkeypatch.setattr(FarmClient, "status", explode)
    result = run("status", "--data-dir", farm.data_dir)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "peerfarm: unexpected error: RuntimeError: boom",
        "run with --verbose for details",
    ]
    verbose = run("--verbose", "status", "--data-dir", farm.data_dir)
    assert "Traceback" in verbose.stderr and verbose.exit_code == 1


def test_up_parses_every_flag_into_node_options(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[daemon.NodeOptions] = []

    def fake_run_daemon(options: daemon.NodeOptions) -> int:
        seen.append(options)
        return 0

    monkeypatch.setattr(daemon, "run_daemon", fake_run_daemon)
    result = run(
        "up",
        "--data-dir",
        tmp_path,
        "--name",
        "n1",
        "--listen",
        "127.0.0.1:0",
        "--join",
        "10.0.0.2",
        "--join",
        "[::1]:7000",
        "--interface",
        "127.0.0.1",
        "--no-mdns",
        "--slots",
        "2",
        "--tags",
        "gpu, big",
        "--web",
        ":8080",
        "--web-public",
        "--allow-command",
        "--allow-scripts",
        "--preset",
        "fast",
        "--shared-root",
        "nas",
        "--store-limit",
        "1.5G",
        "--frame-timeout",
        "60",
        "--blender",
        "/opt/blender",
        "--blender",
        "/opt/blender-5.0/blender",
        "--verbose",
    )
    assert result.exit_code == 0, result.stderr
    (options,) = seen
    assert options.data_dir == tmp_path and options.name == "n1"
    assert options.listen == ("127.0.0.1", 0)
    assert options.joins == [("10.0.0.2", daemon.DEFAULT_PORT), ("::1", 7000)]
    assert (options.interfaces, options.mdns, options.slots) == (["127.0.0.1"], False, 2)
    assert options.tags == ["gpu", "big"] and options.web == ("0.0.0.0", 8080)
    assert options.web_public and options.allow_command and options.allow_scripts
    assert options.preset == "fast" and options.shared_root == Path.cwd() / "nas"
    assert options.store_limit == int(1.5 * 1024**3) and options.frame_timeout == 60.0
    assert options.blender == ["/opt/blender", "/opt/blender-5.0/blender"] and options.verbose
    run("up", "--data-dir", tmp_path, "--no-web")
    assert seen[-1].web is None and seen[-1].listen == ("0.0.0.0", daemon.DEFAULT_PORT)
    run("up", "--data-dir", tmp_path)
    assert seen[-1].web == ("127.0.0.1", daemon.DEFAULT_WEB_PORT)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--web", "127.0.0.1:1", "--no-web"), "exclude each other"),
        (("--listen", "host:port"), "bad port"),
        (("--join", "[::1"), "missing ']'"),
        (("--store-limit", "lots"), "bad size 'lots'"),
        (("--preset", "moon"), "moon"),
    ],
)
def test_up_mistakes(
    run: Run,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: tuple[str, ...],
    needle: str,
) -> None:
    monkeypatch.setattr(daemon, "run_daemon", lambda options: pytest.fail("must not start"))
    result = run("up", "--data-dir", tmp_path, *args)
    assert result.exit_code == 2 and needle in one_error_line(result)


def test_python_dash_m_and_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "peerfarm", "--version"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0 and "0.1.0" in done.stdout
    usage = subprocess.run(
        [sys.executable, "-m", "peerfarm", "frobnicate"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert usage.returncode == 2
    assert usage.stderr.strip().splitlines() == ["peerfarm: No such command 'frobnicate'."]


def test_json_everywhere(run: Run, farm: FarmHandle) -> None:
    for verb in ("status", "peers"):
        assert isinstance(json.loads(run(verb, "--json", "--data-dir", farm.data_dir).stdout), dict)
