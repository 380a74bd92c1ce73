"""Fixtures for CLI tests: a real HTTP control API on 127.0.0.1:0 serving a FakeFarm.

The server runs in its own thread with its own trio loop (the CLI is synchronous), and its
address and token are written to a temporary data dir's ``control.json``, exactly as a daemon
does. To run these tests against a real daemon, replace the ``farm`` fixture with one that
starts ``peerfarm up`` and returns a handle with the same ``data_dir``.
"""

from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio
from click.testing import CliRunner, Result

from peerfarm import cli as cli_module
from peerfarm.api import create_app, serve_http
from peerfarm.client import write_control_file
from tests.api.fakes import FakeFarm

TOKEN = "cli-test-token"
T = TypeVar("T")


@dataclass
class FarmHandle:
    data_dir: Path
    url: str
    fake: FakeFarm
    token: trio.lowlevel.TrioToken

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` on the server's trio thread (the fake is not thread-safe)."""
        return trio.from_thread.run_sync(fn, *args, trio_token=self.token)


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[FarmHandle]:
    data_dir = tmp_path / "data"
    fake = FakeFarm(tmp_path / "farm")
    started: queue.Queue[tuple[str, trio.lowlevel.TrioToken, trio.Event] | BaseException] = (
        queue.Queue()
    )

    async def run() -> None:
        shutdown = trio.Event()
        app = create_app(
            fake,
            token=TOKEN,
            login_password="pw",
            public=False,
            upload_dir=tmp_path / "uploads",
            shutdown=shutdown,
        )
        async with trio.open_nursery() as nursery:
            serve = functools.partial(serve_http, shutdown=shutdown)
            urls = await nursery.start(serve, app, ["127.0.0.1:0"])
            started.put((urls[0], trio.lowlevel.current_trio_token(), shutdown))

    def thread_main() -> None:
        try:
            trio.run(run)
        except BaseException as exc:  # reported to the test thread
            started.put(exc)

    thread = threading.Thread(target=thread_main, daemon=True)
    thread.start()
    item = started.get(timeout=10)
    if isinstance(item, BaseException):
        raise item
    url, token, shutdown = item
    write_control_file(data_dir, url, TOKEN)
    try:
        yield FarmHandle(data_dir, url, fake, token)
    finally:
        trio.from_thread.run_sync(shutdown.set, trio_token=token)
        thread.join(timeout=10)
        assert not thread.is_alive()


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_module, "POLL_INTERVAL_S", 0.01)


Run = Callable[..., Result]


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch) -> Run:
    """Invoke the CLI like a shell would (env isolated from the user's data dir and key)."""
    monkeypatch.delenv("PEERFARM_DATA_DIR", raising=False)
    monkeypatch.delenv("PEERFARM_KEY", raising=False)

    def invoke(*args: str | Path, env: dict[str, str] | None = None) -> Result:
        runner = CliRunner()
        return runner.invoke(
            cli_module.cli, [str(a) for a in args], env=env, catch_exceptions=False
        )

    return invoke


def one_error_line(result: Result) -> str:
    """The single stderr line of a failed command (asserting it is one line, no traceback)."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output + result.stderr
    assert lines[0].startswith("peerfarm: ")
    return lines[0]
