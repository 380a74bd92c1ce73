"""FakeFarm: a test double of ``FarmControl`` (an in-memory farm with no network, no renderer).

Jobs live in a dict; frames move only when a test says so (``finish``), or - for CLI tests that
poll - one frame per ``status()`` call when the job was submitted with the renderer option
``fake_outcome`` = "done" | "fail". Outputs are small real files under ``root``, so archive,
fetch, output and thumbnail routes serve real bytes. ``calls`` records every mutating call.
"""

from __future__ import annotations

import io
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from PIL import Image

from peerfarm.control import Action, SubmitRequest
from peerfarm.errors import ControlError, UsageError
from peerfarm.frames import parse_frames
from peerfarm.renderers import renderer_for_scene

RENDERERS = ("blender", "povray", "command")


@dataclass
class FakeJob:
    id: str
    name: str
    request: SubmitRequest
    renderer: str
    frames: dict[int, str]
    state: str = "active"
    outcome: str | None = None
    errors: dict[int, str] = field(default_factory=dict)


class FakeFarm:
    """An in-memory ``FarmControl`` for tests of the API and the CLI."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.jobs: dict[str, FakeJob] = {}
        self.calls: list[tuple[str, Any]] = []
        self.generation = 1
        self._changed = trio.Event()
        self.broken = False  # True: every call fails as if the farm were unreachable
        self.wait_hook: Any = None  # called at each wait_for_change (tests stop streams with it)

    # --- test controls ---------------------------------------------------------------------

    def changed(self) -> None:
        self.generation += 1
        self._changed.set()
        self._changed = trio.Event()

    def finish(self, job_id: str, frames: list[int] | None = None, *, fail: bool = False) -> None:
        job = self.jobs[job_id]
        for frame in frames if frames is not None else list(job.frames):
            job.frames[frame] = "failed" if fail else "done"
            if fail:
                job.errors[frame] = "renderer exited with status 1"
            else:
                self._write_output(job, frame)
        self._settle(job)
        self.changed()

    def _write_output(self, job: FakeJob, frame: int) -> Path:
        path = self.root / "outputs" / job.id / f"{job.name}_{frame:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 6), (frame % 256, 40, 90)).save(path)
        return path

    def _settle(self, job: FakeJob) -> None:
        states = set(job.frames.values())
        if job.state in ("cancelled", "paused"):
            return
        if states <= {"done"}:
            job.state = "done"
        elif states <= {"done", "failed"}:
            job.state = "failed"
        else:
            job.state = "active"

    def _advance(self) -> None:
        for job in self.jobs.values():
            if job.outcome is None or job.state != "active":
                continue
            pending = [f for f, s in job.frames.items() if s == "pending"]
            if pending:
                self.finish(job.id, [pending[0]], fail=job.outcome == "fail")

    def _check(self) -> None:
        if self.broken:
            raise ControlError("the farm is unreachable (fake)")

    # --- FarmControl -----------------------------------------------------------------------

    def _job_json(self, job: FakeJob) -> dict[str, Any]:
        count = {
            s: sum(1 for v in job.frames.values() if v == s)
            for s in ("pending", "rendering", "done", "failed")
        }
        return {
            "id": job.id,
            "name": job.name,
            "state": job.state,
            "priority": job.request.priority,
            "frames_total": len(job.frames),
            "frames_done": count["done"],
            "frames_failed": count["failed"],
            "frames_rendering": count["rendering"],
            "frames_pending": count["pending"],
            "frames_delivered": count["done"],
            "submitted_by": "fake-1",
            "submitted_at": 1700000000.0,
            "output": str(self._output(job)),
            "renderer": job.renderer,
            "scene": str(job.request.scene),
            "chunk": job.request.chunk,
            "eta_seconds": 2.0 * count["pending"] or None,
            "seconds_rendered": 1.5 * count["done"],
            "banned": [],
        }

    def _output(self, job: FakeJob) -> Path:
        if job.request.output is not None:
            return job.request.output
        return (job.request.cwd or self.root) / "peerfarm-out" / job.name

    def status(self, job: str | None = None) -> dict[str, Any]:
        self._check()
        self._advance()
        jobs = [self.jobs[job]] if job is not None else list(self.jobs.values())
        result: dict[str, Any] = {
            "node": {
                "id": "fake-1",
                "name": "fake",
                "address": "127.0.0.1:7946",
                "farm": "0123456789abcdef",
                "version": "0.1.0",
                "protocol": 1,
                "digest": "d",
            },
            "peers": self.peers()["peers"],
            "jobs": [self._job_json(j) for j in jobs],
            "archived": [],
        }
        if job is not None:
            found = self.jobs[job]
            result["frames"] = [
                {
                    "frame": f,
                    "state": s,
                    "peer": "fake" if s != "pending" else None,
                    "attempts": 1 if s != "pending" else 0,
                    "seconds": 1.5 if s == "done" else None,
                    "delivered": s == "done",
                    "outputs": 1 if s == "done" else 0,
                    "error": found.errors.get(f),
                }
                for f, s in found.frames.items()
            ]
        return result

    def peers(self) -> dict[str, Any]:
        self._check()
        peer = {
            "id": "fake-1",
            "name": "fake",
            "address": "127.0.0.1:7946",
            "state": "alive",
            "slots": 2,
            "busy": 0,
            "renderers": {"povray": "3.7.0"},
            "host": "fakehost",
            "os": "Linux",
            "python": "3.11.2",
            "peerfarm": "0.1.0",
            "protocol": 1,
            "tags": ["gpu"],
            "rendering": [],
        }
        return {"peers": [peer]}

    def resolve_job(self, ref: str) -> str:
        self._check()
        if ref in self.jobs:
            return ref
        found = [j.id for j in self.jobs.values() if j.id.startswith(ref) or j.name == ref]
        if len(found) == 1:
            return found[0]
        if not found:
            raise UsageError(f"no job {ref!r}")
        raise UsageError(f"{ref!r} names {len(found)} jobs: use more of the id")

    async def submit(self, request: SubmitRequest) -> dict[str, Any]:
        self._check()
        self.calls.append(("submit", request))
        if not request.scene.exists():
            raise UsageError(f"scene not found: {request.scene}")
        renderer = request.renderer or renderer_for_scene(request.scene)
        if renderer not in RENDERERS:
            raise UsageError(f"unknown renderer {renderer!r}")
        frames = parse_frames(request.frames)
        job_id = f"{len(self.jobs) + 1:04d}" + "ab" * 14
        name = request.name or request.scene.stem
        outcome = request.options.get("fake_outcome")
        job = FakeJob(
            job_id,
            name,
            request,
            renderer,
            dict.fromkeys(frames, "pending"),
            outcome=outcome if isinstance(outcome, str) else None,
        )
        self.jobs[job_id] = job
        self.changed()
        return {
            "job": job_id,
            "name": name,
            "frames": len(frames),
            "output": str(self._output(job)),
        }

    async def act(self, job: str, action: Action, frames: str | None = None) -> dict[str, Any]:
        self._check()
        self.calls.append((action, (job, frames)))
        found = self.jobs[job]
        touched = 0
        if action == "cancel":
            found.state = "cancelled"
        elif action == "pause":
            found.state = "paused"
        elif action == "resume":
            found.state = "active"
            self._settle(found)
        elif action == "retry":
            chosen = set(parse_frames(frames)) if frames else None
            for frame, state in found.frames.items():
                if (chosen is None and state == "failed") or (chosen and frame in chosen):
                    found.frames[frame] = "pending"
                    touched += 1
            found.state = "active"
        self.changed()
        return {"job": job, "action": action, "state": found.state, "frames": touched}

    def logs(self, job: str, frame: int) -> dict[str, Any]:
        self._check()
        found = self.jobs[job]
        if frame not in found.frames:
            raise UsageError(f"job {found.name} has no frame {frame}")
        state = found.frames[frame]
        attempts = (
            []
            if state == "pending"
            else [
                {
                    "attempt": 1,
                    "peer": "fake",
                    "error": found.errors.get(frame),
                    "log_tail": f"rendering frame {frame}\nPROGRESS 100%",
                    "seconds": 1.5,
                }
            ]
        )
        return {
            "job": job,
            "frame": frame,
            "state": state,
            "peer": "fake",
            "attempts": attempts,
            "progress": None,
        }

    async def fetch(self, job: str, dest: Path) -> dict[str, Any]:
        self._check()
        found = self.jobs[job]
        dest.mkdir(parents=True, exist_ok=True)
        copied = []
        for frame, state in found.frames.items():
            if state == "done":
                src = self._write_output(found, frame)
                shutil.copy(src, dest / src.name)
                copied.append(src.name)
        return {"job": job, "dest": str(dest), "files": len(copied)}

    async def encode(self, job: str, out: Path, fps: float | None = None) -> dict[str, Any]:
        self._check()
        self.calls.append(("encode", (job, out, fps)))
        done = [f for f, s in self.jobs[job].frames.items() if s == "done"]
        if not done:
            raise UsageError("no finished frames to encode")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(b"\x00\x00\x00\x18ftypmp42fake-video")
        return {"job": job, "out": str(out), "frames": len(done), "fps": fps or 24.0}

    async def thumbnail(self, job: str, frame: int) -> bytes | None:
        self._check()
        if self.jobs[job].frames.get(frame) != "done":
            return None
        buffer = io.BytesIO()
        Image.new("RGB", (4, 3), (1, 2, 3)).save(buffer, format="PNG")
        return buffer.getvalue()

    async def output_file(self, job: str, frame: int, index: int = 0) -> Path | None:
        self._check()
        found = self.jobs[job]
        if found.frames.get(frame) != "done" or index != 0:
            return None
        return self._write_output(found, frame)

    async def wait_for_change(self, since: int, timeout: float) -> int:
        if self.wait_hook is not None:
            self.wait_hook(since)
        if self.generation > since:
            return self.generation
        with trio.move_on_after(timeout):
            await self._changed.wait()
        return self.generation

    def metrics(self) -> dict[str, Any]:
        done = sum(s == "done" for j in self.jobs.values() for s in j.frames.values())
        return {"frames_rendered": done, "gossip": {"sent": 12, "received": 10}, "flag": True}
