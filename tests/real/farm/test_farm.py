"""Issues 4 and 6 with real daemons: deliveries, big scenes, and real renderers through the farm."""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from peerfarm.testing.daemons import LocalFarm, wait_until
from tests.support import ROOT

EXAMPLES = ROOT / "examples"

DETERMINISTIC = """#!/bin/sh
# Deterministic output per frame, so delivered files can be checked byte for byte.
name="frame_$(printf %04d "$PEERFARM_FRAME").txt"
seq "$PEERFARM_FRAME" "$((PEERFARM_FRAME + 300))" > "$PEERFARM_OUTPUT_DIR/$name"
"""


def script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


def expected(frame: int) -> bytes:
    return "".join(f"{n}\n" for n in range(frame, frame + 301)).encode()


def rss_peak_kb(pid: int) -> int:
    """Peak resident memory of ``pid`` (Linux /proc); the test is skipped elsewhere rather
    than passing with 0."""
    status = Path(f"/proc/{pid}/status")
    if not status.exists():
        pytest.skip("peak memory needs /proc/PID/status (Linux)")
    for line in status.read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM in {status}")


def test_240_frames_across_3_peers_are_delivered_byte_identical(
    farm: LocalFarm, tmp_path: Path
) -> None:
    a = farm.start("d1", "--allow-command")
    b = farm.start("d2", "--allow-command", join=a)
    c = farm.start("d3", "--allow-command", join=a)
    wait_until(lambda: c.alive_names() == {"d1", "d2", "d3"}, 20, "farm formed")
    scene = script(tmp_path / "seq.sh", DETERMINISTIC)
    out = tmp_path / "out"
    job = a.cli_json("submit", str(scene), "1-240", "--output", str(out))["job"]
    wait_until(
        lambda: a.status(job)["jobs"][0]["frames_delivered"] == 240, 120, "240 frames delivered"
    )
    files = sorted(out.iterdir())
    assert len(files) == 240
    for frame in range(1, 241):
        assert (out / f"frame_{frame:04d}.txt").read_bytes() == expected(frame)
    status = a.status(job)
    rendered_by = {f["peer"] for f in status["frames"]}
    assert rendered_by == {"d1", "d2", "d3"}
    assert all(f["state"] == "done" and f["delivered"] for f in status["frames"])
    digests = {d.status()["node"]["digest"] for d in (a, b, c)}
    wait_until(
        lambda: len({d.status()["node"]["digest"] for d in (a, b, c)}) == 1, 20, "same digest"
    )
    shares = {p: sum(f["peer"] == p for f in status["frames"]) for p in rendered_by}
    print(f"rendered by: {shares}")
    assert digests


def test_a_200_mb_scene_reaches_every_rendering_peer_with_bounded_memory(
    farm: LocalFarm, tmp_path: Path
) -> None:
    a = farm.start("s1", "--allow-command", "--slots", "0")  # submits, renders nothing
    b = farm.start("s2", "--allow-command", join=a)
    c = farm.start("s3", "--allow-command", join=a)
    wait_until(lambda: a.alive_names() == {"s1", "s2", "s3"}, 20, "farm formed")
    big = tmp_path / "big.sh"
    with big.open("wb") as fh:
        fh.write(b'#!/bin/sh\necho "$PEERFARM_FRAME" > "$PEERFARM_OUTPUT_DIR/f.txt"\nexit 0\n')
        block = hashlib.sha256(b"seed").digest() * (1 << 15)  # 1 MiB of incompressible-ish data
        for _ in range(200):
            fh.write(b"#" + block[1:])
    big.chmod(0o755)
    digest = hashlib.sha256(big.read_bytes()).hexdigest()
    job = a.cli_json("submit", str(big), "1-6", "--output", str(tmp_path / "out"))["job"]
    wait_until(lambda: a.status(job)["jobs"][0]["frames_delivered"] == 6, 180, "job delivered")
    for daemon in (b, c):
        blob = daemon.data_dir / "store" / digest[:2] / digest[2:]
        assert blob.exists() and blob.stat().st_size == big.stat().st_size
        peak_mb = rss_peak_kb(daemon.process.pid) / 1024
        print(f"{daemon.name}: peak RSS {peak_mb:.0f} MB after fetching 200 MB")
        assert peak_mb < 200, f"{daemon.name} used {peak_mb:.0f} MB"


@pytest.mark.skipif(shutil.which("povray") is None, reason="povray is not installed")
def test_povray_frames_render_across_peers(farm: LocalFarm, tmp_path: Path) -> None:
    a = farm.start("p1")
    b = farm.start("p2", join=a)
    wait_until(lambda: b.alive_names() == {"p1", "p2"}, 20, "farm formed")
    out = tmp_path / "out"
    job = a.cli_json(
        "submit",
        str(EXAMPLES / "povray"),
        "1-6",
        "--renderer",
        "povray",
        "--output",
        str(out),
        "--option",
        "width=160",
        "--option",
        "height=120",
    )["job"]
    wait_until(lambda: a.status(job)["jobs"][0]["frames_delivered"] == 6, 120, "povray frames")
    frames = sorted(out.glob("frame_*.png"))
    assert len(frames) == 6
    pixels = set()
    for path in frames:
        with Image.open(path) as image:
            assert image.size == (160, 120)
            pixels.add(image.tobytes())
    assert len(pixels) == 6  # the animation moves
    assert {f["peer"] for f in a.status(job)["frames"]} == {"p1", "p2"}


@pytest.mark.skipif(
    importlib.util.find_spec("bpy") is None, reason="bpy (the blender extra) is not installed"
)
def test_a_blender_scene_with_an_external_texture_renders_after_its_folder_moved(
    farm: LocalFarm, tmp_path: Path
) -> None:
    """Uses bpy (the scene is saved by it): renders whether or not a Blender program is on
    PATH beside it, since each peer picks the newest Blender that opens the file."""
    scene_dir = tmp_path / "project"
    subprocess.run(
        [sys.executable, str(EXAMPLES / "blender" / "make_turntable.py"), "--out", str(scene_dir)],
        check=True,
        capture_output=True,
    )
    a = farm.start("b1", "--slots", "0")  # the submitter renders nothing itself
    farm.start("b2", join=a)
    wait_until(lambda: a.alive_names() == {"b1", "b2"}, 20, "farm formed")
    out = tmp_path / "out"
    job = a.cli_json("submit", str(scene_dir / "turntable.blend"), "1,24", "--output", str(out))[
        "job"
    ]
    shutil.move(str(scene_dir), str(tmp_path / "moved-away"))  # the original folders are gone
    wait_until(lambda: a.status(job)["jobs"][0]["frames_delivered"] == 2, 180, "blender frames")
    frames = sorted(out.glob("frame_*.png"))
    assert [p.name for p in frames] == ["frame_0001.png", "frame_0024.png"]
    for path in frames:
        with Image.open(path) as image:
            assert image.size == (320, 240)
            rgb = image.convert("RGB")
            # The checker texture is orange and blue; a missing texture renders magenta.
            colours = rgb.getcolors(320 * 240) or []
            orange = sum(n for n, (r, g, b) in colours if r > 150 and 60 < g < 170 and b < 80)
            magenta = sum(n for n, (r, g, b) in colours if r > 200 and g < 60 and b > 200)
            assert orange > 500, "the texture did not travel with the scene"
            assert magenta < 100
    with Image.open(frames[0]) as f1, Image.open(frames[1]) as f24:
        assert f1.tobytes() != f24.tobytes()
    assert {f["peer"] for f in a.status(job)["frames"]} == {"b2"}


def test_shared_storage_mode_reads_scenes_in_place_and_writes_outputs_there(
    farm: LocalFarm, tmp_path: Path
) -> None:
    nas = tmp_path / "nas"
    (nas / "shots").mkdir(parents=True)
    mount_b = tmp_path / "mnt-b"
    mount_b.symlink_to(nas)  # the same storage, mounted at another path on the other host
    scene = script(nas / "shots" / "seq.sh", DETERMINISTIC)
    a = farm.start("n1", "--allow-command", "--slots", "0", "--shared-root", str(nas))
    b = farm.start("n2", "--allow-command", "--shared-root", str(mount_b), join=a)
    wait_until(lambda: a.alive_names() == {"n1", "n2"}, 20, "farm formed")
    out = nas / "renders" / "seq"
    job = a.cli_json("submit", str(scene), "1-5", "--output", str(out))["job"]
    wait_until(lambda: a.status(job)["jobs"][0]["frames_delivered"] == 5, 60, "delivered")
    for frame in range(1, 6):
        assert (out / f"frame_{frame:04d}.txt").read_bytes() == expected(frame)
    # Nothing crossed the network: the renderer never fetched the scene, the submitter never
    # fetched an output.
    digest = hashlib.sha256(scene.read_bytes()).hexdigest()
    assert not (b.data_dir / "store" / digest[:2] / digest[2:]).exists()
    store_a = a.data_dir / "store"
    assert not [p for p in store_a.rglob("*") if p.is_file() and p.parent.name != "tmp"]
