"""Reaching the daemon over real sockets and processes: a stale control file, a refused
connection, a daemon that never answers, ``python -m peerfarm``."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from peerfarm.client import FarmClient, write_control_file
from peerfarm.errors import ControlError
from tests.support.cli import Run, one_error_line


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


def test_a_daemon_that_does_not_answer_times_out() -> None:
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with FarmClient(url, "t", timeout=0.3) as client, pytest.raises(ControlError) as info:
            client.status()
    assert str(info.value) == f"the daemon at {url} is not answering"


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
