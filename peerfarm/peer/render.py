"""Rendering one claim on this peer, and turning every way it can end into a ledger record.

Owns: getting the job's scene onto local disk (once per job, whatever the number of slots),
running the renderer plugin of the claim's slot in a scratch folder of that slot, storing the
outputs in the content store, and recording the outcome — done (with the outputs' hashes),
failed (with a reason a user can read), released (stopped by a pause, cancel or graceful stop),
or handed back because of a problem of this peer (a full disk) rather than of the frame.

Its rule (invariant 6): whatever happens inside one render — a renderer crash, a bad option, a
bug — is that frame's failure with its message, never the daemon's death.
"""

from __future__ import annotations

import errno
import functools
import logging
import math
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from .. import platform
from ..errors import (
    BlobUnavailable,
    LedgerError,
    RemoteProtocolError,
    StoreError,
    TransportError,
)
from ..files.names import safe_name
from ..files.place import safe_join
from ..frames import format_frames
from ..ledger import LostClaim, Output
from ..ledger.model import FrameRecord, JobSpec
from ..renderers import stuck
from ..renderers.base import (
    LIMITS,
    MemoryExceeded,
    Progress,
    RenderFailed,
    RenderResult,
    RenderTask,
)
from ..renderers.checks import Expected, check_files
from .naming import output_names
from .parts import Running, render_limits

if TYPE_CHECKING:
    from .node import Node

log = logging.getLogger("peerfarm")

#: OS errors that say this peer's disk is full (a problem of the peer, not of the frame).
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
#: Seconds between checks whether a full disk has room again.
DISK_RECHECK = 10.0
#: Bytes that must be free before a peer whose disk was full takes work again.
DISK_MARGIN = 64 * 1024 * 1024
#: Stop reasons after which a render's frames are handed back at once (a release, not a
#: failure): the job was paused, cancelled or failed, the peer stops, its user came back, or
#: it was drained.
HAND_BACK = frozenset({"paused", "stopping", "cancelled", "failed", "user returned", "drained"})


#: Empty scratch folders kept ready per job and slot: one made ahead, one given back.
SPARES = 2


class Renderer:
    """Renders claims for one node's worker."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._trash_event = trio.Event()
        self._trash: list[Path] = []
        # What an earlier life left (listed before this one renders anything): scratch folders
        # of renders it never finished, and the trash folder of older versions.
        work = node.work_dir
        self._leftovers = [p for p in work.glob("*/slot*-*") if p.is_dir()] + [work / "trash"]
        self._scene_locks: dict[str, trio.Lock] = {}
        self._scenes: dict[str, Path] = {}  # job -> its scene on local disk, once there
        # (job, slot) -> empty scratch folders ready for its next renders (at most SPARES)
        self._spare: dict[tuple[str, int], list[Path]] = {}
        self._forgotten: dict[str, int] = {}  # job -> times its work folder was discarded

    # ----------------------------------------------------------------------------------
    # one claim, start to end

    async def render(self, running: Running, *, free_slot: Callable[[], None]) -> None:
        """Render ``running`` and record how it ended."""
        node = self.node
        spec = node.ledger.job(running.job)
        if spec is None:
            return
        try:
            with running.scope:
                timeout = node.parts.frame_timeout
                with trio.fail_after(timeout * len(running.frames) if timeout else math.inf):
                    await self._render_frames(spec, running, free_slot)
            if running.stop_reason is not None:
                await self._after_stop(spec, running)
        except trio.TooSlowError:
            reason = f"timed out after {node.parts.frame_timeout:g} s per frame"
            if not await self._unbatch(spec, running, reason):
                await self._record_failure(spec, running, reason, "")
        except MemoryExceeded as exc:  # the frame goes elsewhere; this peer stops taking the job
            await self._record_failure(spec, running, exc.reason, exc.log_tail)
            ban = f"frames need more memory than on {node.name}: {exc.reason}"
            await node.write(lambda ledger, wall: ledger.ban(spec.id, ban, wall))
            await node.worker.halt_hopeless_jobs([spec.id])
        except RenderFailed as exc:
            if not await self._unbatch(spec, running, exc.reason):
                await self._record_failure(spec, running, exc.reason, exc.log_tail)
        except LostClaim as exc:
            node.stats.frames_lost += 1
            log.info("%s", exc)
        except BlobUnavailable as exc:
            # Not the frame's fault nor this peer's: the scene's holders are out of reach (its
            # submitter was killed before anyone fetched it). Give the frames back and leave
            # the job a while; it goes on when a holder is back, it does not fail.
            await node.worker.release(running)
            node.worker.set_aside(spec.id, f"scene not available: {exc}")
        except (OSError, StoreError, TransportError, RemoteProtocolError) as exc:
            full = disk_full(exc)
            if full is not None:
                await self._hand_back(spec, running, f"disk full: {full}")
            else:
                await self._record_failure(spec, running, f"{type(exc).__name__}: {exc}", "")
        except Exception as exc:  # a bug or a bad input inside one render: that frame fails
            log.exception("render of %s %s failed", node.job_label(spec.id), running.frames)
            await self._record_failure(spec, running, f"{type(exc).__name__}: {exc}", "")

    async def _unbatch(self, spec: JobSpec, running: Running, reason: str) -> bool:
        """A render of several short frames that this peer claimed together (more than the
        job's chunk: ``scheduler.planner.batch_size``) failed: hand them all back and claim
        the job one chunk at a time from now on, so that each frame fails, or succeeds, on
        its own (a user's ``--chunk`` still fails as a whole). True when handed back."""
        node = self.node
        if len(running.frames) <= max(1, spec.chunk):
            return False
        node.worker.planner.no_batch(spec.id)
        log.info(
            "%s: a frame of %s failed (%s); handing them back to render one at a time",
            node.job_label(spec.id),
            format_frames(running.frames),
            reason,
        )
        await node.worker.release(running)
        return True

    async def _after_stop(self, spec: JobSpec, running: Running) -> None:
        node = self.node
        reason = running.stop_reason
        if reason == "lost":
            node.stats.frames_lost += 1
            log.info("stopped %s %s: another peer owns it", node.job_label(spec.id), running.frames)
            return
        log.info("stopped %s %s: %s", node.job_label(spec.id), running.frames, reason)
        if reason in HAND_BACK:
            await node.worker.release(running)

    async def _hand_back(self, spec: JobSpec, running: Running, problem: str) -> None:
        """A problem of this peer, not of the frame: give the claim back, take no more work
        until it is solved, and say so (the peer's metadata carries it to every ``status``)."""
        node = self.node
        await node.worker.release(running)
        first = "disk" not in node.problems
        node.set_problem("disk", problem)
        log.warning("%s %s handed back: %s", node.job_label(spec.id), running.frames, problem)
        if first:
            node.worker.spawn(self._watch_disk)

    async def _watch_disk(self) -> None:
        node = self.node
        while "disk" in node.problems:
            await trio.sleep(DISK_RECHECK)
            await node.gate()
            folders = [node.data_dir, node.store.root]
            try:
                usages = [await self.node.blocking(shutil.disk_usage, f) for f in folders]
            except OSError:
                continue
            if all(u.free >= min(DISK_MARGIN, u.total // 10) for u in usages):
                node.set_problem("disk", None)

    async def _record_failure(
        self, spec: JobSpec, running: Running, reason: str, tail: str
    ) -> None:
        node = self.node
        seconds = node.now() - running.started
        failed = 0
        for frame, claim in running.claims.items():
            try:
                await self._fail(spec.id, frame, claim, reason, tail, seconds)
            except LedgerError:  # LostClaim: the frame is someone else's now
                continue
            failed += 1
            node.stats.frames_failed += 1
        log.warning(
            "%s frames %s failed: %s",
            node.job_label(spec.id),
            format_frames(running.frames),
            reason,
        )
        if failed:
            await node.worker.after_failure(spec.id, reason)

    # ----------------------------------------------------------------------------------
    # the render itself

    async def _render_frames(
        self, spec: JobSpec, running: Running, free_slot: Callable[[], None]
    ) -> None:
        node = self.node
        renderer = node.parts.renderers.get(spec.renderer)
        if running.slot > 0 and running.slot - 1 < len(node.parts.slot_renderers):
            renderer = node.parts.slot_renderers[running.slot - 1].get(spec.renderer, renderer)
        if renderer is None:
            raise RenderFailed(f"renderer {spec.renderer!r} is not available on {node.name}")
        scene = await self._materialize_scene(spec)
        job_dir = node.work_dir / spec.id
        generation = self._forgotten.get(spec.id, 0)
        out_dir = await self._scratch(spec.id, running.slot)
        wrote_nothing = False
        release_push: Callable[[], None] | None = None
        try:
            task = RenderTask(
                job_id=spec.id,
                frames=running.frames,
                scene=scene,
                scene_name=spec.scene.name,
                options={
                    **spec.options,
                    "frames_total": spec.frame_count,
                    "frame_first": spec.frames[0],
                    **capped_threads(spec.options.get("threads"), node.parts.threads),
                },
                output_dir=out_dir,
                work_dir=job_dir,
                allow_scripts=(spec.renderer == "command" and node.parts.allow_command)
                or (bool(spec.options.get("allow_scripts")) and node.parts.allow_scripts),
            )

            def on_progress(progress: Progress) -> None:
                running.progress = progress

            def machine_free() -> None:
                """The last process exited: the next frame starts, and the pushes wait for
                this render's frames, so the next claim and these travel together."""
                nonlocal release_push
                if release_push is None:
                    release_push = node.gossip.hold_push()
                free_slot()

            limits = render_limits(node.parts)
            limits.machine_free = machine_free
            token = LIMITS.set(limits)
            stuck_token = stuck.STUCK_AFTER.set(node.parts.stuck_after or 0.0)
            try:
                result = await renderer.render(task, on_progress=on_progress)
            finally:
                stuck.STUCK_AFTER.reset(stuck_token)
                LIMITS.reset(token)
            # The renderer is done with the machine (a process renderer said so at its last
            # process's exit): start the next frame while this one's outputs are stored and its
            # completion is gossiped.
            machine_free()
            await trio.lowlevel.checkpoint()  # let the scheduler fill the slot first
            wrote_nothing = not any(result.outputs.values())
            per_frame = result.seconds / max(1, len(running.frames))
            bad = await self._check_outputs(spec, running, renderer.expected_output(task), result)
            completed = 0
            for frame in running.frames:
                if frame in bad:
                    continue
                files = result.outputs.get(frame, [])
                outputs = await self._store_outputs(spec, frame, files)
                try:
                    await self._complete(
                        spec.id,
                        frame,
                        running.claims[frame],
                        outputs,
                        per_frame,
                        limits.peak_memory,
                    )
                except LedgerError:  # LostClaim: another peer finished or took it
                    node.stats.duplicate_frames += 1
                    continue
                completed += 1
                node.stats.frames_rendered += 1
                node.stats.render_seconds_by_peer[node.name] = (
                    node.stats.render_seconds_by_peer.get(node.name, 0.0) + per_frame
                )
            log.info(
                "rendered %s frame%s %s in %.2f s",
                node.job_label(spec.id),
                "s" if len(running.frames) > 1 else "",
                format_frames(running.frames),
                result.seconds,
            )
        finally:
            if release_push is not None:
                release_push()
            if not (wrote_nothing and self._give_back(spec.id, running.slot, out_dir, generation)):
                self.discard(out_dir)

    async def _check_outputs(
        self, spec: JobSpec, running: Running, expected: Expected, result: RenderResult
    ) -> set[int]:
        """Fail the frames whose files are not what the renderer declared (a frame that exits
        0 without its image, say); the others go on to be completed. Returns the failed."""
        bad: dict[int, str] = {}
        for frame in running.frames:
            files = result.outputs.get(frame, [])
            if expected.image and files:  # reads the image: off the event loop
                problem = await self.node.blocking(check_files, expected, files)
            else:  # counts files only: no disk access, no thread hop per frame
                problem = check_files(expected, files)
            if problem is not None:
                bad[frame] = problem
        failed = 0
        for frame, problem in bad.items():
            seconds = result.seconds / max(1, len(running.frames))
            try:
                await self._fail(
                    spec.id, frame, running.claims[frame], problem, result.log_tail, seconds
                )
            except LedgerError:
                continue
            failed += 1
            self.node.stats.frames_failed += 1
            log.warning("%s frame %d failed: %s", self.node.job_label(spec.id), frame, problem)
        if failed:
            await self.node.worker.after_failure(spec.id, next(iter(bad.values())))
        return set(bad)

    async def _complete(
        self,
        job: str,
        frame: int,
        claim: FrameRecord,
        outputs: list[Output],
        seconds: float,
        memory: int = 0,
    ) -> None:
        deltas = await self.node.write(
            lambda ledger, wall: ledger.complete(job, frame, claim, outputs, seconds, memory)
        )
        for delta in deltas:
            if isinstance(delta[1], FrameRecord):
                self.node.worker.completed(job, frame, delta[1])

    async def _fail(
        self, job: str, frame: int, claim: FrameRecord, reason: str, tail: str, seconds: float
    ) -> None:
        await self.node.write(
            lambda ledger, wall: ledger.fail(job, frame, claim, reason, tail, seconds, wall)
        )

    async def _store_outputs(self, spec: JobSpec, frame: int, files: list[Path]) -> list[Output]:
        node = self.node
        await node.blobs.make_room(sum(path.stat().st_size for path in files))
        shared_out = node.blobs.shared_path(spec.options.get("shared_output"))
        outputs = []
        for path, name in zip(files, output_names(frame, files), strict=True):
            if shared_out is not None:
                await self.node.blocking(copy_atomic, path, shared_out / name)
            size = path.stat().st_size
            digest = await self.node.blocking(node.store.adopt_file, path)
            outputs.append(Output(name, bytes.fromhex(digest), size))
        return outputs

    async def _materialize_scene(self, spec: JobSpec) -> Path:
        """The scene (and its assets) as local files under the job's work folder: fetched and
        copied once per job, whatever the number of slots rendering it at once."""
        node = self.node
        shared = node.blobs.shared_path(spec.options.get("shared_scene"))
        if shared is not None:
            if not shared.exists():
                raise StoreError(
                    f"shared scene {spec.options['shared_scene']} not found under "
                    f"--shared-root {node.parts.shared_root}"
                )
            return shared
        ready = self._scenes.get(spec.id)
        if ready is not None and ready.exists():  # no checkpoint: the next frame starts first
            return ready
        job_dir = node.work_dir / spec.id / "input"  # not "scene": archives unpack there
        scene_path = safe_join(job_dir, safe_name(Path(spec.scene.name).name))
        lock = self._scene_locks.setdefault(spec.id, trio.Lock())
        async with lock:
            if scene_path.exists():
                self._scenes[spec.id] = scene_path
                node.scene_reached(spec.id, True)
                return scene_path
            job_dir.mkdir(parents=True, exist_ok=True)
            for ref, target in [(spec.scene, scene_path)] + [
                (a, asset_path(job_dir, a.name)) for a in spec.assets
            ]:
                blob = await node.blobs.ensure(
                    ref.digest.hex(), prefer=spec.submitted_by, size=ref.size
                )
                await self.node.blocking(link_or_copy, blob, target)
            self._scenes[spec.id] = scene_path
        node.scene_reached(spec.id, True)
        return scene_path

    def forget_job(self, job: str) -> None:
        self._scene_locks.pop(job, None)
        self._scenes.pop(job, None)
        self._forgotten[job] = self._forgotten.get(job, 0) + 1
        for key in [k for k in self._spare if k[0] == job]:
            del self._spare[key]  # inside the job's folder, which goes with it

    async def _scratch(self, job: str, slot: int) -> Path:
        """An empty scratch folder for one render of ``job`` in ``slot``, made ahead of time
        while the slot's previous render ran: making a folder is a disk metadata operation that
        can stall for milliseconds on a busy disk, and it must not sit between a free slot and
        the next frame, nor block the event loop."""
        spares = self._spare.get((job, slot))
        folder = spares.pop() if spares else await self._make_scratch(job, slot)
        if not self._spare.get((job, slot)):
            self.node.worker.spawn(functools.partial(self._make_spare, job, slot))
        return folder

    async def _make_scratch(self, job: str, slot: int) -> Path:
        name = f"slot{slot}-{self.node.parts.rng.getrandbits(32):08x}"
        folder = self.node.work_dir / job / name
        await self.node.blocking(functools.partial(folder.mkdir, parents=True, exist_ok=True))
        return folder

    async def _make_spare(self, job: str, slot: int) -> None:
        if self._spare.get((job, slot)):
            return
        generation = self._forgotten.get(job, 0)
        folder = await self._make_scratch(job, slot)
        spares = self._spare.setdefault((job, slot), [])
        if len(spares) >= SPARES or self._forgotten.get(job, 0) != generation:
            self.discard(folder)
        else:
            spares.append(folder)

    def _give_back(self, job: str, slot: int, folder: Path, generation: int) -> bool:
        """Keep the scratch folder of a render that wrote nothing for the slot's next render,
        if it is still empty and its job's folder was not discarded meanwhile: short frames
        then neither make nor remove a folder each (both disk metadata operations, together
        the largest cost of a no-op frame on a peer). True when kept.

        Lists the folder on the event loop: the renderer has just looked into it, so this is
        served from the kernel's cache, not the disk."""
        spares = self._spare.setdefault((job, slot), [])
        if self._forgotten.get(job, 0) != generation or len(spares) >= SPARES:
            return False
        try:
            with os.scandir(folder) as entries:
                if next(entries, None) is not None:
                    return False
        except OSError:
            return False
        spares.append(folder)
        return True

    # ----------------------------------------------------------------------------------
    # scratch folders

    def discard(self, folder: Path) -> None:
        """A folder (or file) nothing needs any more (a render's scratch, a finished job's
        work folder, a cached video): removed in the background, many at a time. Removing a
        folder is a disk metadata operation, which can take milliseconds on a busy disk: not
        on the event loop, not in a frame's time. Scratch folders have unique names."""
        self._trash.append(folder)
        self._trash_event.set()

    async def trash_loop(self) -> None:
        await self.node.blocking(remove_all, self._leftovers)
        while True:
            await self._trash_event.wait()
            self._trash_event = trio.Event()
            await trio.sleep(1.0)
            batch, self._trash = self._trash, []
            await self.node.blocking(remove_all, batch)


def capped_threads(job_threads: object, peer_threads: int | None) -> dict[str, int]:
    """The ``threads`` option a render gets under this peer's ``--threads``: the job's own
    (0 or missing: the renderer decides) lowered to the peer's cap; {} without a cap."""
    if not peer_threads:
        return {}
    wanted = job_threads if type(job_threads) is int and job_threads > 0 else peer_threads
    return {"threads": min(wanted, peer_threads)}


def disk_full(exc: BaseException) -> OSError | None:
    """The "no space left" OS error behind ``exc`` (itself or what it was raised from)."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, OSError) and seen.errno in DISK_FULL:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def remove_all(paths: list[Path]) -> None:
    """Remove folders (with what they hold) and files; what is gone already is fine."""
    for path in paths:
        try:
            os.rmdir(path)  # an empty folder (most scratch folders): one call, no walk
            continue
        except OSError:
            pass
        if path.is_dir() and not path.is_symlink():
            platform.remove_tree(path)
        else:
            platform.remove(path)


def copy_atomic(source: Path, target: Path) -> None:
    """Copy through a uniquely named partial file, so two writers never share one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.part")
    try:
        shutil.copyfile(source, tmp)
        platform.replace(tmp, target)
    finally:
        platform.remove(tmp)


def link_or_copy(blob: Path, target: Path) -> None:
    """Put a read-only blob at ``target``: a hard link when both are on one file system (no
    bytes copied, no space taken twice), else a copy through a partial file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.link")
    try:
        os.link(blob, tmp)
    except OSError:
        copy_atomic(blob, target)
        return
    try:
        platform.replace(tmp, target)
    finally:
        platform.remove(tmp)


def asset_path(job_dir: Path, relative: str) -> Path:
    parts = [safe_name(p) for p in relative.replace("\\", "/").split("/") if p]
    if not parts:
        raise RemoteProtocolError(f"bad asset path {relative!r}")
    path = job_dir
    for part in parts[:-1]:
        path = safe_join(path, part)
    return safe_join(path, parts[-1])
