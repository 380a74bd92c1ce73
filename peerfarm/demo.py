"""``peerfarm demo``: a farm of 3 peers on loopback renders the example scene end to end.

This module owns the demo's processes. Rules: every peer is a real ``python -m peerfarm up``
bound to 127.0.0.1 only (gossip, mDNS via ``--interface 127.0.0.1``, dashboard), with its own
temporary data dir and one shared key file (mode 0600); the peers always get SIGTERM when the
demo ends, whether it succeeds, fails or is interrupted. The scene is the Blender example when
Blender (or ``bpy``) is available, else the POV-Ray one, else the command-renderer one.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from peerfarm.client import FarmClient, read_control_file
from peerfarm.errors import ControlError, PeerfarmError, UsageError
from peerfarm.gossip.crypto import load_or_create_key_file

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
#: Seconds to wait for the peers to start and see each other.
STARTUP_TIMEOUT_S = 90.0
#: Seconds a peer gets to leave after SIGTERM before it is killed.
STOP_TIMEOUT_S = 10.0


class DemoError(PeerfarmError):
    """The demo farm could not start or finish."""


@dataclass(frozen=True, slots=True)
class DemoScene:
    path: Path
    name: str
    note: str  # what was chosen and why
    allow_command: bool = False


def choose_scene(examples: Path = EXAMPLES) -> DemoScene:
    """The Blender example if Blender or bpy is here, else POV-Ray, else the command one."""
    from peerfarm.renderers.blender import bpy_available

    blend = examples / "blender" / "turntable.blend"
    pov = examples / "povray" / "spin.pov"
    script = examples / "command" / "render.sh"
    if blend.is_file() and (bpy_available() or shutil.which("blender")):
        return DemoScene(blend, "turntable", "Blender example (examples/blender/turntable.blend)")
    if pov.is_file() and shutil.which("povray"):
        return DemoScene(pov, "spin", "no Blender/bpy here: using the POV-Ray example")
    if script.is_file():
        return DemoScene(
            script,
            "command-demo",
            "no Blender/bpy or POV-Ray here: using the command-renderer example "
            "(install the `blender` extra for the real demo)",
            allow_command=True,
        )
    raise DemoError(f"no example scenes found under {examples}")


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
    from peerfarm.cli import print_json, wait_for_job

    scene = choose_scene()
    say = print if not as_json else (lambda *_: None)
    say(f"demo: {scene.note}")
    root = Path(tempfile.mkdtemp(prefix="peerfarm-demo-"))
    farm = DemoFarm(root, scene)
    ok = False
    try:
        farm.start()
        say(f"demo: starting 3 peers on 127.0.0.1 (data and logs in {root})")
        farm.wait_until_connected()
        say(f"demo: the farm is up; dashboard at {farm.web_urls[0]}")
        out_dir = out_root / scene.name
        video = out_root / f"{scene.name}.mp4"
        with farm.client(0) as client:
            fields = {
                "scene": str(scene.path), "frames": frames, "name": scene.name,
                "output": str(out_dir), "cwd": str(Path.cwd()),
            }  # fmt: skip
            result = client.submit(fields)
            job = str(result["job"])
            final = wait_for_job(client, job, quiet=as_json)
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
