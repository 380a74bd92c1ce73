"""Issue 5: every verb of the CLI against real daemons on loopback, JSON shapes (every key of the
typed contract in peerfarm.control), what each verb prints, and exit codes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from peerfarm.control import FrameView, JobView, LogsView, PeerView
from peerfarm.testing.daemons import PEERFARM, LocalFarm, wait_until

SLOW = """#!/bin/sh
sleep 0.3
name="frame_$(printf %04d "$PEERFARM_FRAME").ppm"
printf 'P6\\n4 4\\n255\\n' > "$PEERFARM_OUTPUT_DIR/$name"
head -c 48 /dev/zero | tr '\\0' "\\\\$(printf %03o $((PEERFARM_FRAME % 200 + 20)))" \\
    >> "$PEERFARM_OUTPUT_DIR/$name"
"""
FAILING = "#!/bin/sh\necho 'out of cheese' >&2\nexit 3\n"

PEER_KEYS = set(PeerView.__required_keys__)
JOB_KEYS = set(JobView.__required_keys__)
FRAME_KEYS = set(FrameView.__required_keys__)


def script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_every_verb_against_real_daemons(farm: LocalFarm, tmp_path: Path) -> None:
    a = farm.start("v1", "--allow-command")
    b = farm.start("v2", "--allow-command", join=a)
    wait_until(lambda: a.alive_names() == {"v1", "v2"}, 20, "farm formed")

    # key: prints the farm key (works without asking the daemon)
    key = a.cli("key", "--key-file", str(farm.key_file)).stdout.strip()
    assert key == farm.key_file.read_text().strip()

    # peers --json: worker-info for every peer
    peers = a.cli_json("peers")["peers"]
    assert {p["name"] for p in peers} == {"v1", "v2"}
    for peer in peers:
        assert set(peer) == PEER_KEYS
        assert "command" in peer["renderers"]

    # submit --json, then status / status JOB --json shapes
    scene = script(tmp_path / "slow.sh", SLOW)
    out = tmp_path / "out"
    # 40 frames of 0.3 s on two peers: long enough to pause it before it ends.
    submitted = a.cli_json("submit", str(scene), "1-40", "--name", "shot", "--output", str(out))
    job = submitted["job"]
    status = b.status()
    assert {p["state"] for p in status["peers"]} == {"alive"}
    assert set(status["peers"][0]) == PEER_KEYS
    assert set(status["jobs"][0]) == JOB_KEYS
    one = b.cli_json("status", job[:6])  # a unique prefix works
    assert [j["id"] for j in one["jobs"]] == [job]
    assert len(one["frames"]) == 40 and all(set(f) == FRAME_KEYS for f in one["frames"])

    # pause / resume by name, from the other peer
    b.cli("pause", "shot")
    wait_until(lambda: a.status(job)["jobs"][0]["state"] == "paused", 10, "paused everywhere")
    # The renders stop at once; the hand-back of a frame rendering on the other peer reaches
    # this one a gossip push after the pause itself (seen once: 1 frame rendering right then).
    wait_until(lambda: a.status(job)["jobs"][0]["frames_rendering"] == 0, 2, "renders stopped")
    b.cli("resume", "shot")
    wait_until(lambda: a.status(job)["jobs"][0]["frames_done"] == 40, 60, "job done")
    wait_until(lambda: a.status(job)["jobs"][0]["frames_delivered"] == 40, 30, "delivered")
    assert a.status(job)["jobs"][0]["state"] == "done"

    # logs JOB FRAME
    logs = b.cli_json("logs", job, "3")
    assert (
        logs["frame"] == 3
        and logs["state"] == "done"
        and set(logs) == set(LogsView.__required_keys__)
    )

    # fetch JOB DIR (from whichever peers hold the frames)
    fetched = tmp_path / "fetched"
    printed = b.cli("fetch", job, str(fetched)).stdout.strip()
    assert printed == f"40 file(s) in {fetched}"
    assert sorted(p.name for p in fetched.iterdir()) == [f"frame_{f:04d}.ppm" for f in range(1, 41)]

    # encode JOB OUT.mp4: prints the video, how many frames it has and at what rate
    if shutil.which("ffmpeg"):
        video = tmp_path / "shot.mp4"
        printed = a.cli("encode", job, str(video), "--fps", "12").stdout.strip()
        assert printed == f"{video} (40 frames at 12 fps)"
        assert video.stat().st_size > 0
        again = a.cli_json("encode", job, str(tmp_path / "again.mp4"))
        assert again == {"job": job, "video": str(tmp_path / "again.mp4"), "frames": 40, "fps": 24}

    # retry JOB FRAMES: re-renders exactly those frames, and says how many were queued again
    printed = a.cli("retry", job, "2-3").stdout.strip()
    assert printed == f"retry: {job}: 2 frame(s) queued again"
    wait_until(lambda: a.status(job)["jobs"][0]["state"] == "done", 30, "retried frames done")
    frames = {f["frame"]: f for f in a.status(job)["frames"]}
    assert frames[2]["state"] == frames[3]["state"] == "done"

    # cancel: final, everywhere
    long_job = a.cli_json("submit", str(scene), "1-200", "--name", "long")["job"]
    wait_until(lambda: a.status(long_job)["jobs"][0]["frames_done"] >= 2, 30, "long job started")
    a.cli("cancel", long_job)
    wait_until(lambda: b.status(long_job)["jobs"][0]["state"] == "cancelled", 10, "cancelled")
    done_at_cancel = b.status(long_job)["jobs"][0]["frames_done"]
    a.cli("resume", long_job)  # cancel is final: resume does not bring it back
    import time

    time.sleep(1.5)
    after = b.status(long_job)["jobs"][0]
    assert after["state"] == "cancelled" and after["frames_done"] <= done_at_cancel + 2

    # a failing job: submit --wait exits 1, retry limit reached, logs keep the error
    bad = script(tmp_path / "bad.sh", FAILING)
    result = a.cli("submit", str(bad), "1", "--retries", "2", "--wait", check=False, timeout=120)
    assert result.returncode == 1, result.stderr
    failed = a.status("bad")
    assert failed["jobs"][0]["state"] == "failed"
    attempts = a.cli_json("logs", "bad", "1")["attempts"]
    assert len(attempts) == 2 and "out of cheese" in attempts[0]["log_tail"]
    # retry JOB: the failed frames, counted as the daemon queued them
    assert a.cli("retry", "bad").stdout.strip() == "retry: bad: 1 frame(s) queued again"


def test_mistakes_give_one_line_and_no_traceback(farm: LocalFarm, tmp_path: Path) -> None:
    a = farm.start("e1", "--allow-command")
    scene = script(tmp_path / "ok.sh", SLOW)
    cases = [
        (("submit", str(scene), "1-"), "'1-'"),
        (("submit", str(scene), "10-1"), "'10-1'"),
        (("submit", str(tmp_path / "missing.blend"), "1-3"), "missing.blend"),
        (("submit", str(scene), "1-3", "--renderer", "maya"), "maya"),
        (("status", "no-such-job"), "no-such-job"),
        (("logs", "no-such-job", "1"), "no-such-job"),
    ]
    for args, quoted in cases:
        result = a.cli(*args, check=False)
        assert quoted in one_line_error(result), (args, result.stderr)
    # no daemon for a data dir
    result = subprocess.run(
        [*PEERFARM, "status", "--data-dir", str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    line = one_line_error(result)
    assert result.returncode == 3 and "peerfarm up" in line
    # a wrong key: the daemon refuses to start with one clear line
    bad_key = tmp_path / "bad.key"
    bad_key.write_text("not a key\n")
    bad_key.chmod(0o600)
    result = subprocess.run(
        [
            *PEERFARM,
            "up",
            "--data-dir",
            str(tmp_path / "x"),
            "--key-file",
            str(bad_key),
            "--no-mdns",
            "--no-web",
            "--listen",
            "127.0.0.1:0",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
