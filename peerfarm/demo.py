"""``peerfarm demo``: a farm of 3 peers on loopback renders the example scene end to end.

This module owns the demo's processes. Rules: every peer is a real ``python -m peerfarm up``
bound to 127.0.0.1 only (gossip, mDNS via ``--interface 127.0.0.1``, dashboard), with its own
temporary data dir and one shared key file (mode 0600); the peers always get SIGTERM when the
demo ends, whether it succeeds, fails or is interrupted. The scene is the Blender example when
any Blender is installed (a program or ``bpy``), else the POV-Ray one, else the command-renderer
one. The Blender example is built afresh (examples/blender/make_turntable.py) by the Blender
that will render it, the newest here, so the file is never newer than its renderer. A job no
peer can render makes the demo stop with the reason within ``GIVE_UP_S`` seconds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

from peerfarm.client import FarmClient, read_control_file
from peerfarm.errors import ControlError, PeerfarmError, UsageError
from peerfarm.gossip.crypto import load_or_create_key_file
from peerfarm.renderers.installs import Installation, choose, discover

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
#: Seconds to wait for the peers to start and see each other.
STARTUP_TIMEOUT_S = 90.0
#: Seconds a peer gets to leave after SIGTERM before it is killed.
STOP_TIMEOUT_S = 10.0
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


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free for both TCP and UDP on ``host`` right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
                return port
    raise DemoError("no free port on loopback")


def peer_argv(
    python: str,
    data_dir: Path,
    name: str,
    port: int,
    web_port: int,
    key_file: Path,
    join: int | None,
    allow_command: bool,
) -> list[str]:
    """The command line of one demo peer (pure)."""
    argv = [
        python, "-m", "peerfarm", "up", "--data-dir", str(data_dir), "--name", name,
        "--listen", f"127.0.0.1:{port}", "--interface", "127.0.0.1", "--key-file", str(key_file),
        "--web", f"127.0.0.1:{web_port}", "--preset", "fast",
    ]  # fmt: skip
    if join is not None:
        argv += ["--join", f"127.0.0.1:{join}"]
    if allow_command:
        argv.append("--allow-command")
    return argv


class DemoFarm:
    """Three peer processes and their temporary data dirs."""

    def __init__(self, root: Path, scene: DemoScene, size: int = 3) -> None:
        self.root = root
        self.scene = scene
        self.size = size
        self.processes: list[subprocess.Popen[bytes]] = []
        self.data_dirs: list[Path] = []
        self.web_urls: list[str] = []

    def start(self) -> None:
        key_file = self.root / "farm.key"
        load_or_create_key_file(key_file)
        ports = [free_port() for _ in range(self.size)]
        for i, port in enumerate(ports):
            data_dir = self.root / f"peer{i + 1}"
            data_dir.mkdir(mode=0o700)
            web_port = free_port()
            argv = peer_argv(
                sys.executable, data_dir, f"demo-{i + 1}", port, web_port, key_file,
                None if i == 0 else ports[0], self.scene.allow_command,
            )  # fmt: skip
            log = (self.root / f"peer{i + 1}.log").open("wb")
            self.processes.append(
                subprocess.Popen(
                    argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
                )
            )
            log.close()
            self.data_dirs.append(data_dir)
            self.web_urls.append(f"http://127.0.0.1:{web_port}/")

    def wait_until_connected(self, timeout: float = STARTUP_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        for index, data_dir in enumerate(self.data_dirs):
            while True:
                self.check_running()
                with contextlib.suppress(ControlError):
                    info = read_control_file(data_dir)
                    with FarmClient(info.url, info.token, data_dir=data_dir, timeout=5) as client:
                        peers = client.status()["peers"]
                    if sum(1 for p in peers if p.get("state") == "alive") >= self.size:
                        break
                if time.monotonic() > deadline:
                    raise DemoError(
                        f"peer {index + 1} did not see all {self.size} peers within {timeout:.0f} s"
                        f" (logs in {self.root})"
                    )
                time.sleep(0.3)

    def check_running(self) -> None:
        for index, process in enumerate(self.processes):
            if process.poll() is not None:
                raise DemoError(
                    f"peer {index + 1} exited with status {process.returncode}: see "
                    f"{self.root / f'peer{index + 1}.log'}"
                )

    def client(self, index: int = 0) -> FarmClient:
        return FarmClient.connect(self.data_dirs[index])

    def stop(self) -> None:
        """SIGTERM every peer, then kill any that has not left within the timeout."""
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in self.processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def run_demo(*, frames: str, out_root: Path, keep: bool = False, as_json: bool = False) -> int:
    """Run the demo; returns the exit status (0 when every frame rendered and encoded)."""
    from peerfarm.cli import job_finished, print_json, wait_for_job

    scene = choose_scene()
    say = print if not as_json else (lambda *_: None)
    say(f"demo: {scene.note}")
    root = Path(tempfile.mkdtemp(prefix="peerfarm-demo-"))
    farm = DemoFarm(root, scene)
    ok = False
    try:
        if scene.builder is not None:
            scene = build_scene(scene, root / "scene")
            say(f"demo: built {scene.path}")
        farm.start()
        say(f"demo: starting 3 peers on 127.0.0.1 (data and logs in {root})")
        farm.wait_until_connected()
        out_dir = out_root / scene.name
        video = out_root / f"{scene.name}.mp4"
        with farm.client(0) as client:
            link = client.login_link()["url"]  # actions on the dashboard need a login
            say(f"demo: the farm is up; dashboard at {link} (a one-time login link)")
            fields = {
                "scene": str(scene.path), "frames": frames, "name": scene.name,
                "output": str(out_dir), "cwd": str(Path.cwd()),
            }  # fmt: skip
            result = client.submit(fields)
            if result.get("warning"):
                say(f"demo: warning: {result['warning']}")
            job = str(result["job"])
            final = wait_for_job(client, job, quiet=as_json, give_up_after=GIVE_UP_S)
            if final.get("blocked") and not job_finished(final):
                raise DemoError(
                    f"giving up after {GIVE_UP_S:.0f} s: {final['blocked']} "
                    "(see `peerfarm peers` for what each peer has)"
                )
            if final.get("frames_done", 0) == 0:
                raise DemoError(f"no frame rendered (job state {final.get('state')})")
            fetched = client.fetch(job, out_dir)
            encoded = client.encode(job, video)
        ok = final.get("state") == "done"
        if as_json:
            print_json({"job": result, "final": final, "fetch": fetched, "encode": encoded})
        else:
            say(f"demo: frames in {out_dir}")
            say(f"demo: video  in {encoded.get('out', video)}")
        return 0 if ok else 1
    except UsageError as exc:
        raise DemoError(str(exc)) from None
    except PeerfarmError:
        farm.check_running()  # a peer that died explains the failure better
        raise
    finally:
        farm.stop()
        if (ok and not keep) or not farm.processes:
            shutil.rmtree(root, ignore_errors=True)
        else:
            say(f"demo: peer data dirs and logs kept in {root}")
