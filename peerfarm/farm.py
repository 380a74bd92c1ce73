"""The daemon's control facade: what the API, the dashboard and the CLI may ask of a peer.

Implements :class:`peerfarm.control.FarmControl` on top of a :class:`peerfarm.peer.Node`:
submitting (scene checks, asset packing, content-addressing), job actions, status views, logs,
fetching outputs, thumbnails and video. User mistakes raise ``UsageError`` with one clear line.
"""

from __future__ import annotations

import hashlib
import logging
import math
import tempfile
from pathlib import Path
from typing import Any

import trio

from . import PROTOCOL_VERSION, __version__
from .control import (
    Action,
    ActionAnswer,
    CheckAnswer,
    EncodeAnswer,
    FetchAnswer,
    FrameQuery,
    FrameStatesView,
    HostAction,
    HostAnswer,
    LogsView,
    MetricsView,
    PeersView,
    StatusView,
    SubmitAnswer,
    SubmitRequest,
)
from .errors import LedgerError, PeerfarmError, StoreError, UsageError
from .files.place import place_copy
from .framepage import changed_states, page_view, select_frames, state_map
from .frames import format_frames, parse_frames
from .gossip.membership import Member, MemberState
from .ledger.keys import FrameChanged, classify
from .ledger.model import JobState, SceneRef, Status
from .ledger.replica import has_frame
from .media import encode_video, make_thumbnail
from .peer import Node
from .peer.delivery import DELIVERIES, read_names
from .peer.node import Operation
from .peer.verify import check_delivered
from .peer_metrics import metrics_view
from .scheduler.eligibility import hold_reason, unaware_peers
from .status import (
    archived_view,
    busy_by_peer,
    frames_view,
    incompatible_view,
    job_ended,
    job_view,
    logs_view,
    names_by_id,
    peer_view,
    waiting_view,
)
from .submission import plan_submit, prepare_scene

log = logging.getLogger("peerfarm")


class Farm:
    """A :class:`~peerfarm.control.FarmControl` over one node."""

    def __init__(self, node: Node, *, farm_id: str = "") -> None:
        self.node = node
        self.farm_id = farm_id
        self._encodes: dict[str, tuple[Path, float | None]] = {}
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Background work of the facade (encoding when jobs complete)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                await self._encode_finished()
                gen = self.node.generation
                await self.node.wait_for_change(gen, 2.0)

    # ----------------------------------------------------------------------------------
    # views

    def status(self, job: str | None = None, frames: FrameQuery | None = None) -> StatusView:
        node = self.node
        ledger = node.ledger
        members = node.members()
        busy = busy_by_peer(ledger)
        holds = ledger.host_holds()
        peers = [
            peer_view(m, busy, holds)
            for m in sorted(members, key=lambda m: str(m.meta.get("name")))
        ]
        slots = sum(p["slots"] for p in peers if p["state"] == "alive")
        specs = ledger.jobs()
        if job is not None:
            job = self.resolve_job(job)
            specs = [s for s in specs if s.id == job]
        jobs = [job_view(ledger, s, peer_slots=slots, members=members, busy=busy) for s in specs]
        out: StatusView = {
            "node": {
                "id": node.node_id,
                "name": node.name,
                "address": "{}:{}".format(*node.transport.local_address),
                "farm": self.farm_id,
                "version": __version__,
                "protocol": PROTOCOL_VERSION,
                "digest": ledger.state_digest(),
            },
            "peers": peers,
            "jobs": jobs,
            "archived": [
                archived_view(jid, summary) for jid, summary in sorted(ledger.archived().items())
            ],
        }
        if job is not None and specs:
            query = frames or FrameQuery()
            page = select_frames(ledger, specs[0], query)
            out["frames"] = frames_view(ledger, specs[0], names_by_id(members), page.frames)
            out["frames_page"] = page_view(query, page)
        return out

    def frame_states(self, job: str, since: int | None = None) -> FrameStatesView:
        spec = self.node.ledger.job(self.resolve_job(job))
        if spec is None:  # archived meanwhile
            raise UsageError(f"job {job} has no frame records any more (archived)")
        journal = self.node.frame_journal
        view: FrameStatesView = {
            "job": spec.id,
            "runs": [list(run) for run in spec.runs],
            "count": spec.frame_count,
            "seq": journal.seq,
            "states": "",
        }
        changed = None if since is None else journal.since(since, spec.id)
        if changed is None:
            view["states"] = state_map(self.node.ledger, spec)
        else:
            view["positions"], view["states"] = changed_states(self.node.ledger, spec, changed)
        return view

    def peers(self) -> PeersView:
        busy = busy_by_peer(self.node.ledger)
        refused = self.node.incompatible
        holds = self.node.ledger.host_holds()
        views = [peer_view(m, busy, holds) for m in self.node.members() if m.node_id not in refused]
        for node_id, peer in refused.items():
            theirs = peer.peer.protocol if peer.peer.protocol is not None else peer.peer.version
            views.append(
                incompatible_view(node_id, peer.peer.name, peer.peer.address, peer.reason, theirs)
            )
        return {"peers": views}

    def resolve_job(self, ref: str) -> str:
        return self.node.resolve_job(ref)

    def logs(self, job: str, frame: int) -> LogsView:
        job = self.resolve_job(job)
        spec = self.node.ledger.job(job)
        assert spec is not None
        if not has_frame(spec, frame):  # O(runs): a big job's frames are not scanned
            raise UsageError(f"frame {frame} is not part of job {spec.name}")
        ledger, members = self.node.ledger, self.node.members()
        names, progress = names_by_id(members), self.node.progress_of(job, frame)
        busy = busy_by_peer(ledger)
        return logs_view(ledger, spec, frame, names, progress, members=members, busy=busy)

    def metrics(self) -> MetricsView:
        """This peer's counters and the farm's per-peer totals (``peerfarm.peer_metrics``)."""
        return metrics_view(self.node)

    async def wait_for_change(self, since: int, timeout: float) -> int:
        return await self.node.wait_for_change(since, timeout)

    async def wait_for_end(self, job: str, timeout: float) -> bool:
        node = self.node
        with trio.move_on_after(timeout):
            while True:
                generation = node.generation
                if job_ended(node.ledger, job):
                    return True
                await node.wait_for_change(generation, math.inf)
        return job_ended(node.ledger, job)

    # ----------------------------------------------------------------------------------
    # submit

    async def submit(self, request: SubmitRequest) -> SubmitAnswer:
        root = self.node.parts.shared_root
        planned = plan_submit(request, root, self.resolve_job)
        scene, name, renderer = planned.scene, planned.name, planned.renderer
        frames, output, options = planned.frames, planned.output, planned.options
        if root is not None and output.is_relative_to(root):
            options["shared_output"] = output.relative_to(root).as_posix()
        if root is not None and scene.is_relative_to(root):
            # Shared storage: every peer reads the scene in place under its own --shared-root.
            options["shared_scene"] = scene.relative_to(root).as_posix()
            return await self._submit_spec(
                request,
                name,
                renderer,
                options,
                frames,
                output,
                SceneRef(hashlib.sha256(options["shared_scene"].encode()).digest(), scene.name, 0),
                [],
            )
        with tempfile.TemporaryDirectory(dir=self.node.data_dir) as tmp:
            main, assets, extra = await self.node.blocking(
                prepare_scene, scene, renderer, Path(tmp), options
            )
            options.update(extra)
            store = self.node.store
            total = main.stat().st_size + sum(path.stat().st_size for _rel, path in assets)
            try:
                await self.node.blobs.make_room(total)
            except StoreError as exc:
                raise UsageError(f"cannot submit: {exc} (raise --store-limit?)") from None
            digest = await self.node.blocking(store.put_file, main)
            scene_ref = SceneRef(bytes.fromhex(digest), main.name, main.stat().st_size)
            asset_refs = []
            for rel, path in assets:
                d = await self.node.blocking(store.put_file, path)
                asset_refs.append(SceneRef(bytes.fromhex(d), rel, path.stat().st_size))
        return await self._submit_spec(
            request, name, renderer, options, frames, output, scene_ref, asset_refs
        )

    async def _submit_spec(
        self,
        request: SubmitRequest,
        name: str,
        renderer: str,
        options: dict[str, Any],
        frames: tuple[int, ...],
        output: Path,
        scene_ref: SceneRef,
        asset_refs: list[SceneRef],
    ) -> SubmitAnswer:
        ledger = self.node.ledger
        try:
            spec = ledger.new_job(
                name=name,
                submitter_name=self.node.name,
                renderer=renderer,
                options=options,
                scene=scene_ref,
                assets=asset_refs,
                frames=frames,
                wall_ms=self.node.parts.wall_ms(),
                chunk=request.chunk,
                output=str(output),
                retries=request.retries,
                priority=request.priority,
            )
        except PeerfarmError as exc:
            raise UsageError(f"cannot submit: {exc}") from None
        self.node.add_own_job(spec.id)  # only jobs submitted here are delivered here
        await self.node.write(lambda ledger, wall: ledger.submit(spec), durable=True)
        if request.encode is not None:
            self._encodes[spec.id] = (request.encode, request.fps)
        capable = self.node.capable_peers(spec)
        log.info(
            "job submitted: %s (%s), %d frames, %s", spec.name, spec.id[:8], len(frames), renderer
        )
        answer: SubmitAnswer = {
            "job": spec.id,
            "name": spec.name,
            "frames": len(frames),
            "renderer": renderer,
            "output": str(output),
            "capable_peers": len(capable),
        }
        _waiting, blocked = waiting_view(ledger, spec, self.node.members(), {})
        if blocked is not None:
            answer["warning"] = f"{spec.name} waits: {blocked}"
            log.warning("job %s (%s) waits: %s", spec.name, spec.id[:8], blocked)
        elif unaware := unaware_peers(spec, self.node.members()):
            known = names_by_id(self.node.members())
            names = sorted(known.get(node, node[:8]) for node in unaware)
            answer["warning"] = (
                f"{', '.join(names)} run an older peerfarm that ignores job requirements "
                "and may render this job: upgrade them"
            )
        return answer

    # ----------------------------------------------------------------------------------
    # actions

    async def act(self, job: str, action: Action, frames: str | None = None) -> ActionAnswer:
        job = self.resolve_job(job)
        ledger = self.node.ledger
        chosen = parse_frames(frames) if action == "retry" and frames else None
        operations: dict[str, Operation] = {
            "cancel": lambda ledger, wall: ledger.cancel(job, wall),
            "pause": lambda ledger, wall: ledger.pause(job, wall),
            "resume": lambda ledger, wall: ledger.resume(job, wall),
            "retry": lambda ledger, wall: ledger.retry(job, chosen, wall),
        }
        if action not in operations:
            raise UsageError(f"unknown action {action!r}")
        try:
            deltas = await self.node.write(operations[action], durable=True)
        except LedgerError as exc:
            raise UsageError(str(exc)) from None
        spec = ledger.job(job)
        log.info("job %s: %s", action, spec.name if spec else job)
        answer: ActionAnswer = {
            "job": job,
            "action": action,
            "state": ledger.job_state(job).value,
            "changed": len(deltas),
        }
        if action == "retry":  # the frames queued again (a retry also lifts bans)
            answer["frames"] = sum(isinstance(classify(d), FrameChanged) for d in deltas)
        return answer

    async def host(self, host: str, action: HostAction, *, now: bool = False) -> HostAnswer:
        node = self.node
        target = self.resolve_host(host)
        name = str(target.meta.get("name", target.node_id[:8]))
        operation: Operation
        if action == "release":
            operation = lambda ledger, wall: ledger.release_host(target.node_id, wall)  # noqa: E731
        elif action in ("hold", "drain"):
            mode = "drain" if action == "drain" and now else "hold"
            operation = lambda ledger, wall: ledger.hold_host(  # noqa: E731
                target.node_id, mode, node.name, wall
            )
        else:
            raise UsageError(f"unknown host action {action!r}: hold, release or drain")
        deltas = await node.write(operation, durable=True)
        availability = hold_reason(node.ledger.host_hold(target.node_id)) or ""
        log.info("%s %s%s", action, name, " --now" if now and action == "drain" else "")
        return {
            "id": target.node_id,
            "name": name,
            "action": action,
            "availability": availability,
            "changed": len(deltas),
        }

    def resolve_host(self, ref: str) -> Member:
        """A peer by name, host name, node id or unique id prefix (UsageError if none/several)."""
        ref = ref.strip()
        members = [m for m in self.node.members() if m.state != MemberState.LEFT]
        for match in (
            lambda m: m.node_id == ref,
            lambda m: str(m.meta.get("name", "")) == ref,
            lambda m: str(m.meta.get("host", "")) == ref,
            lambda m: bool(ref) and m.node_id.startswith(ref),
        ):
            found = [m for m in members if match(m)]
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise UsageError(
                    f"{ref!r} matches {len(found)} peers "
                    f"({', '.join(m.node_id[:8] for m in found)}): use its id"
                )
        raise UsageError(f"no peer {ref!r}: see `peerfarm peers` for this farm's peers")

    async def fetch(self, job: str, dest: Path) -> FetchAnswer:
        job = self.resolve_job(job)
        spec = self.node.ledger.job(job)
        assert spec is not None
        dest.mkdir(parents=True, exist_ok=True)
        written = []
        for _frame, record in sorted(self.node.ledger.frame_records(job).items()):
            if record.status != Status.DONE:
                continue
            for output in record.outputs:
                blob = await self.node.blobs.ensure(output.digest.hex(), prefer=record.node)
                # A planted symlink at the name is replaced, never written through.
                target = await self.node.blocking(place_copy, blob, dest, output.name)
                written.append(str(target))
        return {"job": job, "dest": str(dest), "files": len(written)}

    async def output_file(self, job: str, frame: int, index: int = 0) -> Path | None:
        job = self.resolve_job(job)
        record = self.node.ledger.frame(job, frame)
        if record.status != Status.DONE or index >= len(record.outputs):
            return None
        output = record.outputs[index]
        return await self.node.blobs.ensure(output.digest.hex(), prefer=record.node)

    async def thumbnail(self, job: str, frame: int) -> bytes | None:
        path = await self.output_file(job, frame)
        if path is None:
            return None
        thumbs = self.node.data_dir / "thumbs"
        thumbs.mkdir(exist_ok=True)
        out = thumbs / f"{path.name}.png"
        if not out.exists():
            try:
                await self.node.blocking(make_thumbnail, path, out)
            except PeerfarmError:
                return None
        return out.read_bytes()

    async def encode(self, job: str, out: Path, fps: float | None = None) -> EncodeAnswer:
        job = self.resolve_job(job)
        spec = self.node.ledger.job(job)
        assert spec is not None
        frames = []
        for frame in spec.frames:
            record = self.node.ledger.frame(job, frame)
            if record.status == Status.DONE and record.outputs:
                frames.append(
                    await self.node.blobs.ensure(record.outputs[0].digest.hex(), prefer=record.node)
                )
        if not frames:
            raise UsageError(f"job {spec.name} has no rendered frames to encode yet")
        rate = fps or float(spec.options.get("fps") or 24)
        out = out.expanduser().resolve()
        out.parent.mkdir(parents=True, exist_ok=True)
        await encode_video(frames, out, rate)  # blobs as they are: ffmpeg reads their content
        return {"job": job, "video": str(out), "frames": len(frames), "fps": rate}

    async def check(self, job: str) -> CheckAnswer:
        job = self.resolve_job(job)
        node = self.node
        ledger = node.ledger
        spec = ledger.job(job)
        assert spec is not None
        if not node.is_own_job(job):
            raise UsageError(
                f"{spec.name} was submitted on {spec.submitter_name}: its files are there, "
                "run check on that peer"
            )
        records = {
            frame: record
            for frame, record in ledger.frame_records(job).items()
            if record.status == Status.DONE and record.outputs and ledger.delivered(job, frame)
        }
        shared = node.blobs.shared_path(spec.options.get("shared_output"))
        folder = shared if shared is not None else Path(spec.output)
        ours = read_names(node.data_dir / DELIVERIES / job)
        problems = await self.node.blocking(check_delivered, records, folder, ours)
        frames = sorted({p.frame for p in problems})
        return {
            "job": job,
            "checked": len(records),
            "problems": [
                {"frame": p.frame, "file": p.file, "problem": p.problem} for p in problems
            ],
            "frames": format_frames(frames) if frames else "",
        }

    async def _encode_finished(self) -> None:
        for job, (out, fps) in list(self._encodes.items()):
            spec = self.node.ledger.job(job)
            if spec is None:
                del self._encodes[job]
                continue
            if self.node.ledger.job_state(job) != JobState.DONE:
                continue
            del self._encodes[job]
            try:
                result = await self.encode(job, out, fps)
                log.info("encoded %s -> %s", spec.name, result["video"])
            except PeerfarmError as exc:
                log.error("cannot encode %s: %s", spec.name, exc)
