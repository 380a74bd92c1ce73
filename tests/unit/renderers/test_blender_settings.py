"""The generated settings script, pure: run against a stand-in ``bpy`` (the real one runs it in
tests/real), and the cheap Cycles device detection."""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from peerfarm.renderers import devices
from peerfarm.renderers.base import RenderFailed
from peerfarm.renderers.blender import BlenderRenderer
from peerfarm.renderers.blender_settings import failure_line, settings_script
from peerfarm.renderers.installs import Installation
from tests.support.renderers import make_task


def fake_bpy(monkeypatch: pytest.MonkeyPatch, backends: tuple[str, ...] = ()) -> Any:
    """Just enough of bpy for the script: a scene, objects, view layers, Cycles preferences."""
    camera = SimpleNamespace(name="Side", type="CAMERA")
    cube = SimpleNamespace(name="Cube", type="MESH")
    layers = [SimpleNamespace(name="Main", use=True), SimpleNamespace(name="Fog", use=True)]

    class Prefs:
        compute_device_type = "NONE"
        devices: list[Any] = []

        def __setattr__(self, name: str, value: Any) -> None:
            if name == "compute_device_type" and value not in (*backends, "NONE"):
                raise TypeError(f"enum {value!r} not found")
            object.__setattr__(self, name, value)

        def get_devices(self) -> None:
            self.devices = [SimpleNamespace(type=self.compute_device_type, use=False)]

    scene = SimpleNamespace(
        cycles=SimpleNamespace(device="CPU", samples=128),
        eevee=SimpleNamespace(taa_render_samples=64),
        render=SimpleNamespace(
            resolution_percentage=100,
            threads_mode="AUTO",
            threads=1,
            image_settings=SimpleNamespace(file_format="PNG"),
        ),
        view_layers=layers,
        camera=None,
    )
    objects = {o.name: o for o in (camera, cube)}
    module = ModuleType("bpy")
    module.context = SimpleNamespace(  # type: ignore[attr-defined]
        scene=scene,
        preferences=SimpleNamespace(addons={"cycles": SimpleNamespace(preferences=Prefs())}),
    )
    module.data = SimpleNamespace(objects=_Objects(objects))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "bpy", module)
    return module


class _Objects(dict[str, Any]):
    def __iter__(self) -> Any:  # bpy.data.objects iterates over objects, not names
        return iter(list(self.values()))


def run(script: str) -> None:
    exec(compile(script, "<settings>", "exec"), {})


def test_no_options_no_script() -> None:
    assert settings_script({}) == ""
    assert settings_script({"fps": 24, "order": "spread"}) == ""


def test_every_option_lands_on_the_scene(monkeypatch: pytest.MonkeyPatch) -> None:
    bpy = fake_bpy(monkeypatch)
    options = {
        "device": "CPU",
        "samples": 16,
        "percentage": 50,
        "camera": "Side",
        "view_layer": "Fog",
        "threads": 3,
        "format": "JPEG",
    }
    run(settings_script(options))
    scene = bpy.context.scene
    assert scene.cycles.device == "CPU" and scene.cycles.samples == 16
    assert scene.eevee.taa_render_samples == 16
    assert scene.render.resolution_percentage == 50
    assert scene.camera.name == "Side"
    assert [layer.use for layer in scene.view_layers] == [False, True]
    assert (scene.render.threads_mode, scene.render.threads) == ("FIXED", 3)
    assert scene.render.image_settings.file_format == "JPEG"
    run(settings_script({"threads": 0}))
    assert scene.render.threads_mode == "AUTO"


def test_a_gpu_device_picks_a_backend_cycles_has(monkeypatch: pytest.MonkeyPatch) -> None:
    bpy = fake_bpy(monkeypatch, backends=("HIP",))
    run(settings_script({"device": "GPU"}))
    prefs = bpy.context.preferences.addons["cycles"].preferences
    assert bpy.context.scene.cycles.device == "GPU" and prefs.compute_device_type == "HIP"
    with pytest.raises(RuntimeError, match=r"^peerfarm: no CUDA device for Cycles on this peer"):
        run(settings_script({"device": "CUDA"}))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"camera": "Cube"}, "peerfarm: no camera named 'Cube' (cameras: Side)"),
        ({"camera": "x'); import os; ('"}, "peerfarm: no camera named"),
        ({"view_layer": "Sky"}, "peerfarm: no view layer named 'Sky' (view layers: Main, Fog)"),
    ],
)
def test_a_name_the_scene_lacks_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, options: dict[str, Any], message: str
) -> None:
    """Names are data (``repr``), never code: a quote in a name stays inside the string."""
    fake_bpy(monkeypatch)
    with pytest.raises(RuntimeError) as error:
        run(settings_script(options))
    assert str(error.value).startswith(message)


def test_the_scripts_error_is_found_in_blenders_log() -> None:
    log = (
        'Traceback (most recent call last):\n  File "<string>", line 12\n'
        "RuntimeError: peerfarm: no camera named 'Top' (cameras: Camera)\n"
        "Error: Python script failed, check the message in the system console\n"
    )
    assert failure_line(log) == "no camera named 'Top' (cameras: Camera)"
    assert failure_line("Fra:1 Mem:10M | peerfarm: rendering") is None


@pytest.mark.parametrize(
    ("system", "machine", "files", "found"),
    [
        ("Linux", "x86_64", set(), ["CPU"]),
        ("Linux", "x86_64", {"/dev/nvidiactl"}, ["CPU", "CUDA", "OPTIX"]),
        ("Linux", "x86", {"/proc/driver/nvidia/version", "/dev/kfd"}, ["CPU", "CUDA", "OPTIX", "HIP"]),  # noqa: E501
        ("Darwin", "arm64", set(), ["CPU", "METAL"]),
        ("Darwin", "x86_64", set(), ["CPU"]),
        ("Windows", "AMD64", {r"C:\Windows\System32\nvcuda.dll".replace("\\", "/")}, ["CPU"]),
    ],
)  # fmt: skip
def test_devices_are_guessed_from_driver_files(
    system: str, machine: str, files: set[str], found: list[str]
) -> None:
    got = devices.detect(
        system=system, machine=machine, exists=files.__contains__, matches=lambda _: [], environ={}
    )
    assert got == found


def test_the_environment_replaces_the_guess() -> None:
    env = {devices.ENV_DEVICES: "cuda, cpu, tpu"}
    assert devices.detect(system="Linux", exists=lambda _: True, environ=env) == ["CPU", "CUDA"]


async def test_a_bad_option_from_the_network_fails_the_frame_before_blender_starts(
    tmp_path: Path,
) -> None:
    renderer = BlenderRenderer(mode="cli")
    renderer.installs = [Installation("cli", "3.4.1", "/nonexistent/blender", "PATH")]
    scene = tmp_path / "s.blend"
    scene.write_bytes(b"BLENDER-v304" + bytes(64))
    task = make_task(tmp_path, scene, (1,), options={"samples": "1; import os"})
    with pytest.raises(RenderFailed, match=r"^bad job option: option samples: expected a whole"):
        await renderer.render(task, on_progress=lambda p: None)
