"""Job requirements and Blender options against real daemons (issue 18).

``--require gpu`` renders only on the peer started with ``--tags gpu`` (command jobs: no
renderer needed); with no such peer alive, submit warns and the job waits with the reason. A
Blender ``device`` matches the Cycles devices a peer advertises (one peer told it has CUDA
through ``PEERFARM_CYCLES_DEVICES``; nothing renders). A bad Blender option is refused at
submit with one line.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from peerfarm.testing.daemons import LocalFarm, wait_until
from tests.real.farm.test_farm import DETERMINISTIC, script
from tests.support.renderers import EXAMPLES, needs_bpy


def test_require_gpu_runs_only_on_peers_tagged_gpu(farm: LocalFarm, tmp_path: Path) -> None:
    plain = farm.start("plain", "--allow-command")
    gpu = farm.start("gpu", "--allow-command", "--tags", "gpu,fast", join=plain)
    wait_until(lambda: plain.alive_names() == {"plain", "gpu"}, 20, "farm formed")
    scene = script(tmp_path / "seq.sh", DETERMINISTIC)
    out = tmp_path / "out"
    submitted = plain.cli("submit", str(scene), "1-8", "--require", "gpu", "--output", str(out))
    assert submitted.stderr == ""
    job = submitted.stdout.strip()
    wait_until(lambda: plain.job(job)["frames_delivered"] == 8, 60, "8 frames delivered")
    assert {f["peer"] for f in plain.status(job)["frames"]} == {"gpu"}
    assert len(list(out.glob("frame_*.txt"))) == 8

    # Only the untagged peer left: submit warns, and the job waits with the reason.
    assert gpu.stop() == 0
    wait_until(lambda: plain.alive_names() == {"plain"}, 20, "gpu left")
    submitted = plain.cli("submit", str(scene), "1-2", "--require", "gpu", "--json")
    assert "no peer can render it: plain: not tagged gpu" in submitted.stderr
    job = json.loads(submitted.stdout)["job"]
    view = plain.job(job)
    assert view["waiting"] == {"plain": "not tagged gpu"}
    assert view["frames_pending"] == 2
    assert "not tagged gpu" in plain.cli("status").stdout


@needs_bpy
def test_a_blender_device_matches_the_devices_peers_advertise(
    farm: LocalFarm, tmp_path: Path
) -> None:
    """Uses bpy only to be a peer that has Blender: nothing renders."""
    cpu = farm.start("cpu")
    cuda = farm.start("cuda", join=cpu, env={"PEERFARM_CYCLES_DEVICES": "CPU,CUDA,OPTIX"})
    wait_until(lambda: cpu.alive_names() == {"cpu", "cuda"}, 20, "farm formed")
    devices = {p["name"]: set(p["devices"]) for p in cpu.peers()}
    assert devices == {"cpu": {"CPU"}, "cuda": {"CPU", "CUDA", "OPTIX"}}
    scene = EXAMPLES / "blender" / "turntable.blend"
    answer = cpu.cli_json("submit", str(scene), "1", "--option", "device=cuda")
    assert "warning" not in answer and answer["capable_peers"] == 1  # cuda only
    cpu.cli("cancel", answer["job"])

    assert cuda.stop() == 0
    wait_until(lambda: cpu.alive_names() == {"cpu"}, 20, "cuda left")
    submitted = cpu.cli("submit", str(scene), "1", "--option", "device=cuda", "--json")
    assert "no peer can render it: cpu: no CUDA device (CPU only)" in submitted.stderr
    view = cpu.job(json.loads(submitted.stdout)["job"])
    assert view["waiting"] == {"cpu": "no CUDA device (CPU only)"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--option", "device=TPU"], "peerfarm: option device: expected one of CPU, GPU, OPTIX"),
        (["--option", "samples=0"], "peerfarm: option samples: must be from 1 to 1000000, got 0"),
        (["--option", "percentage=half"], "peerfarm: option percentage: expected a whole number"),
        (["--option", "camera="], "peerfarm: option camera: expected a name in the scene"),
        (["--option", "require=gpu"], "peerfarm: option require: set by peerfarm itself"),
        ([f"--require=t{n}" for n in range(9)], "peerfarm: require: at most 8 tags, got 9"),
    ],
)
def test_a_bad_blender_option_is_refused_at_submit(
    farm: LocalFarm, tmp_path: Path, args: list[str], message: str
) -> None:
    peer = farm.start("p")
    scene = tmp_path / "shot.blend"
    scene.write_bytes(b"BLENDER-v304" + bytes(200))
    refused = peer.cli("submit", str(scene), "1", *args, check=False)
    assert refused.returncode == 2
    assert refused.stderr.startswith(message) and refused.stderr.count("\n") == 1
    assert peer.status()["jobs"] == []


def test_a_damaged_blend_file_is_one_line_at_submit(farm: LocalFarm, tmp_path: Path) -> None:
    peer = farm.start("p")
    scene = tmp_path / "shot.blend"
    scene.write_bytes(b"BLENDER-v304" + bytes(200))
    refused = peer.cli("submit", str(scene), "1", check=False)
    assert refused.returncode == 2
    assert refused.stderr.startswith("peerfarm: cannot read shot.blend: ")
    assert refused.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (
            "camera=Top",
            "peerfarm: option camera: no camera named 'Top' in turntable.blend (cameras: Camera)",
        ),
        (
            "view_layer=Fog",
            "peerfarm: option view_layer: no view layer named 'Fog' in turntable.blend "
            "(view layers: ViewLayer)",
        ),
    ],
)
def test_a_name_the_file_lacks_is_refused_at_submit(
    farm: LocalFarm, option: str, message: str
) -> None:
    """The file (saved by bpy 5, zstd) is read without Blender: the peer needs none."""
    peer = farm.start("p")
    scene = EXAMPLES / "blender" / "turntable.blend"
    refused = peer.cli("submit", str(scene), "1", "--option", option, check=False)
    assert (refused.returncode, refused.stderr) == (2, message + "\n")
    accepted = peer.cli_json("submit", str(scene), "1", "--option", "camera=Camera")
    peer.cli("cancel", accepted["job"])
