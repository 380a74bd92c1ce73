"""Failing well without a daemon: each mistake is one line and a fixed exit code; `up` flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from peerfarm import daemon
from peerfarm.client import read_control_file, write_control_file
from tests.support.cli import Run, one_error_line


def test_no_daemon_names_the_command_that_starts_one(run: Run, tmp_path: Path) -> None:
    data_dir = tmp_path / "empty"
    result = run("status", "--data-dir", data_dir)
    assert result.exit_code == 3
    assert f"peerfarm up --data-dir {data_dir}" in one_error_line(result)
    env = run("peers", env={"PEERFARM_DATA_DIR": str(data_dir)})
    assert env.exit_code == 3 and str(data_dir) in one_error_line(env)


def test_control_file_is_private_and_malformed_is_one_line(run: Run, tmp_path: Path) -> None:
    path = write_control_file(tmp_path, "http://127.0.0.1:1", "secret")
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_control_file(tmp_path).token == "secret"
    path.write_text("{not json")
    result = run("status", "--data-dir", tmp_path)
    assert result.exit_code == 3 and "malformed" in one_error_line(result)


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
        (("--schedule", "Mon-Fri 19:00-8"), "write a time window as HH:MM-HH:MM"),
        (("--schedule", "Moon"), "bad --schedule 'Moon'"),
        (("--max-memory", "lots"), "bad size 'lots'"),
        (("--max-memory", "0"), "bad --max-memory '0'"),
        (("--threads", "0"), "--threads"),
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
