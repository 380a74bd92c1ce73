"""``peerfarm demo``: a farm of 3 peers on loopback renders the example scene end to end.

This module owns what the demo renders and what it says. Rules: every peer is a real
``python -m peerfarm up`` started by :class:`peerfarm.testing.daemons.LocalFarm`, bound to
127.0.0.1 only (gossip, mDNS via ``--interface 127.0.0.1``, dashboard), with its own temporary
data dir and one shared key file (mode 0600); the peers always get SIGTERM when the demo ends,
whether it succeeds, fails or is interrupted. The scene is the Blender example when
any Blender is installed (a program or ``bpy``), else the POV-Ray one, else the command-renderer
one. The Blender example is built afresh (examples/blender/make_turntable.py) by the Blender
that will render it, the newest here, so the file is never newer than its renderer. A job no
peer can render makes the demo stop with the reason within ``GIVE_UP_S`` seconds.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

from peerfarm.control import SubmitBody
from peerfarm.errors import PeerfarmError, UsageError
from peerfarm.follow import job_finished, wait_for_job
from peerfarm.renderers.installs import Installation, choose, discover
from peerfarm.testing.daemons import DaemonError, LocalFarm

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
#: Seconds to wait for the peers to start and see each other.
STARTUP_TIMEOUT_S = 90.0
#: The demo's peers.
PEERS = ("demo-1", "demo-2", "demo-3")
#: Seconds the demo waits while no peer can render its job, before it stops with the reason.
GIVE_UP_S = 30.0
#: Seconds building the example scene may take.
BUILD_TIMEOUT_S = 180.0


class DemoError(PeerfarmError):
    """The demo farm could not start or finish."""


@dataclass(frozen=True, slots=True)
class DemoScene:
    path: Path
    name: str
    note: str  # what was chosen and why
    allow_command: bool = False
    builder: Installation | None = None  # the Blender that builds (and renders) the scene


def find_blenders() -> list[Installation]:
    """Every Blender the demo's peers will find (they run on this machine, this Python)."""
    return trio.run(discover)


def choose_scene(
    examples: Path = EXAMPLES, installs: Sequence[Installation] | None = None
) -> DemoScene:
    """The Blender example if any Blender is here, else POV-Ray, else the command one."""
    blend = examples / "blender" / "turntable.blend"
    pov = examples / "povray" / "spin.pov"
    script = examples / "command" / "render.sh"
    installs = find_blenders() if installs is None else installs
    newest = choose(installs, None)
    if blend.is_file() and newest is not None:
        how = "bpy" if newest.kind == "bpy" else newest.path
        note = f"Blender example, built and rendered with Blender {newest.version} ({how})"
        if newest.kind == "cli" and not any(i.kind == "bpy" for i in installs):
            note += "; no bpy in this Python, so the Blender program is used"
        return DemoScene(blend, "turntable", note, builder=newest)
    if pov.is_file() and shutil.which("povray"):
        return DemoScene(pov, "spin", "no Blender/bpy here: using the POV-Ray example")
    if script.is_file():
        return DemoScene(
            script,
            "command-demo",
            "no Blender/bpy or POV-Ray here: using the command-renderer example "
            "(install the `blender` extra, or Blender, for the real demo)",
            allow_command=True,
        )
    raise DemoError(f"no example scenes found under {examples}")


def build_argv(builder: Installation, script: Path, out: Path) -> list[str]:
    """The command that runs the scene-building ``script`` with ``builder`` (pure)."""
    if builder.kind == "bpy":
        return [builder.path, str(script), "--out", str(out)]
    return [
        builder.path,
        "-b",
        "--factory-startup",
        "--python",
        str(script),
        "--",
        "--out",
        str(out),
    ]


def build_scene(scene: DemoScene, into: Path) -> DemoScene:
    """The Blender example rebuilt in ``into`` by its ``builder`` (other scenes as they are)."""
    if scene.builder is None:
        return scene
    script = scene.path.parent / "make_turntable.py"
    argv = build_argv(scene.builder, script, into)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, env=env
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DemoError(f"cannot build the example scene with {argv[0]}: {exc}") from None
    built = into / "turntable.blend"
    if done.returncode != 0 or not built.is_file():
        tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
        raise DemoError(
            f"building the example scene with Blender {scene.builder.version} failed "
            f"(status {done.returncode}): " + " | ".join(tail)
        )
    return dataclasses.replace(scene, path=built)


def run_demo(*, frames: str, out_root: Path, keep: bool = False, as_json: bool = False) -> int:
    """Run the demo; returns the exit status (0 when every frame rendered and encoded)."""
    scene = choose_scene()
    say = print if not as_json else (lambda *_: None)
    say(f"demo: {scene.note}")
    root = Path(tempfile.mkdtemp(prefix="peerfarm-demo-"))
    farm = LocalFarm(root, ready_timeout=STARTUP_TIMEOUT_S)
    ok = False
    try:
        if scene.builder is not None:
            scene = build_scene(scene, root / "scene")
            say(f"demo: built {scene.path}")
        say(f"demo: starting {len(PEERS)} peers on 127.0.0.1 (data and logs in {root})")
        first, *_ = farm.start_all(PEERS, mdns=True, web=True, allow_command=scene.allow_command)
        out_dir = out_root / scene.name
        video = out_root / f"{scene.name}.mp4"
        client = first.client()
        link = client.login_link()["url"]  # actions on the dashboard need a login
        say(f"demo: the farm is up; dashboard at {link} (a one-time login link)")
        fields: SubmitBody = {
            "scene": str(scene.path), "frames": frames, "name": scene.name,
            "output": str(out_dir), "cwd": str(Path.cwd()),
        }  # fmt: skip
        result = client.submit(fields)
        if "warning" in result:
            say(f"demo: warning: {result['warning']}")
        job = result["job"]
        final = wait_for_job(client, job, quiet=as_json, give_up_after=GIVE_UP_S)
        if final["blocked"] and not job_finished(final):
            raise DemoError(
                f"giving up after {GIVE_UP_S:.0f} s: {final['blocked']} "
                "(see `peerfarm peers` for what each peer has)"
            )
        if final["frames_done"] == 0:
            raise DemoError(f"no frame rendered (job state {final['state']})")
        fetched = client.fetch(job, out_dir)
        encoded = client.encode(job, video)
        ok = final["state"] == "done"
        if as_json:
            report = {"job": result, "final": final, "fetch": fetched, "encode": encoded}
            print(json.dumps(report, indent=2))
        else:
            say(f"demo: frames in {out_dir}")
            say(f"demo: video  in {encoded['video']}")
        return 0 if ok else 1
    except (UsageError, DaemonError) as exc:
        raise DemoError(str(exc)) from None
    except PeerfarmError:
        try:
            farm.check_running()  # a peer that died explains the failure better
        except DaemonError as exc:
            raise DemoError(str(exc)) from None
        raise
    finally:
        farm.close()
        if (ok and not keep) or not farm.daemons:
            shutil.rmtree(root, ignore_errors=True)
        else:
            say(f"demo: peer data dirs and logs kept in {root}")
