"""Issue 22 with real daemons: output checks, stuck renders, job-end webhooks, dependencies."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from peerfarm.testing.daemons import LocalFarm, wait_until
from tests.support import ROOT

EXAMPLES = ROOT / "examples"

WRITES = 'echo "$PEERFARM_FRAME" > "$PEERFARM_OUTPUT_DIR/frame_$PEERFARM_FRAME.txt"'


class Hook:
    """A webhook receiver on 127.0.0.1: every POST's event header and JSON body."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, object]]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(length))
                hook.posts.append((self.headers.get("x-peerfarm-event", ""), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    receiver = Hook()
    try:
        yield receiver
    finally:
        receiver.close()


def test_a_command_frame_that_exits_0_without_output_fails(farm: LocalFarm, tmp_path: Path) -> None:
    a = farm.start("a", allow_command=True)
    silent = farm.script("silent.sh", "exit 0")
    job = farm.submit(a, silent, "1-2", retries=1)
    wait_until(lambda: a.job(job)["state"] == "failed", 60, "the job fails")
    logs = a.client().logs(job, 1)
    assert logs["state"] == "failed"
    assert logs["attempts"][0]["error"] == "exited 0 but wrote no output file"
    # Said to write nothing (--no-output): the same script's frames are done.
    fine = farm.submit(a, silent, "1-2", no_output=True)
    farm.wait_job(a, fine, 60)


def test_a_hanging_render_is_stopped_as_stuck_and_retried_elsewhere(
    farm: LocalFarm, tmp_path: Path
) -> None:
    a = farm.start("a", "--stuck-after", "1.5", allow_command=True)
    farm.start("b", "--stuck-after", "1.5", allow_command=True, join=a)
    farm.wait_converged()
    marker = tmp_path / "hung-once"
    hang_once = farm.script(
        "hang.sh",
        f'if [ ! -e "{marker}" ]; then : > "{marker}"; exec sleep 1000; fi\n{WRITES}',
    )
    job = farm.submit(a, hang_once, "1", retries=3)
    farm.wait_job(a, job, 90)
    logs = a.client().logs(job, 1)
    (attempt,) = logs["attempts"]
    assert attempt["error"].startswith("stuck: no output and no CPU time for 1.5 s")
    assert logs["peer"] != attempt["peer"]  # retried on the other peer


def test_a_webhook_gets_exactly_one_post_per_job_end(
    farm: LocalFarm, tmp_path: Path, hook: Hook
) -> None:
    a, _b = farm.start_all(["a", "b"], allow_command=True)
    writes = farm.script("writes.sh", WRITES)
    done = farm.submit(a, writes, "1-4", name="shot", notify=[hook.url])
    failing = farm.script("fails.sh", "exit 3")
    failed = farm.submit(a, failing, "1", name="broken", notify=[hook.url], retries=1)
    wait_until(lambda: len(hook.posts) >= 2, 60, "two POSTs")
    wait_until(lambda: a.job(done)["state"] == "done", 10, "shot done")
    time.sleep(3.0)  # anything more would come now: the peers look every second
    assert len(hook.posts) == 2, hook.posts
    by_job = {body["id"]: (header, body) for header, body in hook.posts}
    header, body = by_job[done]
    assert body["state"] == "done" and body["frames_done"] == 4 and body["name"] == "shot"
    assert header == body["event"] and str(header).startswith(done)
    assert by_job[failed][1]["state"] == "failed"
    assert "frames" not in body


def test_a_job_after_another_starts_when_it_is_done(farm: LocalFarm, tmp_path: Path) -> None:
    a = farm.start("a", allow_command=True)
    log = tmp_path / "order.log"
    first = farm.script("first.sh", f'sleep 0.3; echo "first $PEERFARM_FRAME" >> {log}\n{WRITES}')
    then = farm.script("then.sh", f'echo "then $PEERFARM_FRAME" >> {log}\n{WRITES}')
    parent = a.cli_json("submit", str(first), "1-3", "--name", "bake", cwd=tmp_path)["job"]
    child = a.cli_json("submit", str(then), "1-2", "--after", "bake", cwd=tmp_path)["job"]
    view = a.job(child)
    assert view["after"] == {"id": parent, "name": "bake", "per_frame": False}
    farm.wait_job(a, child, 60)
    lines = log.read_text().split()
    assert lines.index("then") > max(i for i, w in enumerate(lines) if w == "first")


@pytest.mark.skipif(
    shutil.which("povray") is None or shutil.which("ffmpeg") is None, reason="needs povray, ffmpeg"
)
def test_the_readme_pipeline_renders_then_encodes(farm: LocalFarm, tmp_path: Path) -> None:
    """README's chain: a POV-Ray job, then examples/pipeline/encode.sh after it."""
    shims = tmp_path / "bin"
    shims.mkdir()
    shim = shims / "peerfarm"  # `peerfarm` on PATH, as an installed one would be
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m peerfarm "$@"\n')
    shim.chmod(0o755)
    env = {"PATH": f"{shims}{os.pathsep}{os.environ.get('PATH', '')}"}
    a = farm.start("a", allow_command=True, env=env)
    farm.start("b", allow_command=True, env=env, join=a)
    farm.wait_converged()
    work = tmp_path / "work"
    work.mkdir()
    shot = a.cli_json(
        "submit", str(EXAMPLES / "povray"), "1-6", "--name", "shot",
        "--option", "width=64", "--option", "height=48", cwd=work,
    )["job"]  # fmt: skip
    video = a.cli_json(
        "submit", str(EXAMPLES / "pipeline" / "encode.sh"), "1", "--after", "shot",
        "--name", "shot-video", "--option", 'args=["shot"]', cwd=work,
    )  # fmt: skip
    farm.wait_job(a, video["job"], 120)
    assert a.job(shot)["state"] == "done"
    delivered = Path(video["output"]) / "frame_0001.mp4"
    wait_until(delivered.is_file, 30, "the video delivered")
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-show_entries", "stream=nb_read_frames",
         "-of", "csv=p=0", str(delivered)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert probe.stdout.strip() == "6"
