"""Bringing outputs home: the submitter's output folder, and archiving finished jobs.

Owns the submitting peer's side of a job's end: every done frame of a job submitted *here*
(the ``submitted`` file in the data dir, not the spec's claim) is fetched from whichever peer
holds it and written into the job's output folder under the naming rule of
:mod:`peerfarm.peer.naming`, then marked delivered in the ledger; a frame whose only copy died
with its renderer is opened again; a finished, fully delivered job is archived to a tombstone
once it is old enough. Writes into the folder go through a hidden partial file and a rename.
The tiles of a split still are fetched into the store only, and stitched into the folder once
all are delivered (:mod:`peerfarm.stills`).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from .. import platform
from ..errors import LedgerError, PeerfarmError, StoreError
from ..files.names import safe_name
from ..gossip.membership import MemberState
from ..ledger import Output
from ..ledger.codec import Delta
from ..ledger.model import FrameRecord, JobSpec, JobState, Status
from ..renderers.tiles import TileError
from ..stills import Still, still_of, stitch_to, stitched_name
from .naming import Slot, delivery_name

if TYPE_CHECKING:
    from .node import Node

log = logging.getLogger("peerfarm")

DELIVERY_CONCURRENCY = 8  # outputs fetched at once by a submitting peer
DELIVERY_RESCAN = 5.0  # seconds between full scans for undelivered frames
DELIVERIES = "deliveries"  # data dir folder: per job, the names it wrote in its output folder


class Deliverer:
    """Delivery and archiving for one node."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._wake = trio.Event()
        self._dirty: dict[str, set[int]] = {}  # frames done since the last round
        self._full_at = 0.0  # next full scan (retries failed deliveries)
        self._finished_at: dict[str, float] = {}
        self._refused: set[str] = set()
        self._stitched: dict[str, tuple[bytes, ...]] = {}  # job -> the tiles it was made of

    def wake(self) -> None:
        self._wake.set()

    def frame_done(self, job: str, frame: int) -> None:
        self._dirty.setdefault(job, set()).add(frame)

    async def run(self) -> None:
        while True:
            self._wake = trio.Event()
            await self.node.gate()
            try:
                await self.deliver_once()
                await self.stitch_stills()
                await self.archive_finished()
            except PeerfarmError as exc:
                log.debug("delivery round failed: %s", exc)
            with trio.move_on_after(1.0):
                await self._wake.wait()

    # ----------------------------------------------------------------------------------
    # archiving

    async def archive_finished(self) -> None:
        """The submitter archives its finished, delivered jobs once they are old enough."""
        node = self.node
        after = node.parts.archive_after
        if after is None:
            return
        now = node.now()
        for spec in node.ledger.jobs():
            if spec.submitted_by != node.node_id:
                continue
            state = node.ledger.job_state(spec.id)
            if state not in (JobState.DONE, JobState.FAILED, JobState.CANCELLED):
                self._finished_at.pop(spec.id, None)
                continue
            done = node.ledger.counts(spec.id).done
            if spec.id not in self._finished_at and node.ledger.delivered_count(spec.id) < done:
                continue
            since = self._finished_at.setdefault(spec.id, now)
            if now - since >= after:
                await self._archive(spec.id)
                self._finished_at.pop(spec.id, None)
                log.info("archived %s", node.job_label(spec.id))

    # ----------------------------------------------------------------------------------
    # delivery

    def _todo(self) -> list[tuple[JobSpec, int, FrameRecord]]:
        node = self.node
        now = node.now()
        full = now >= self._full_at
        if full:
            self._full_at = now + DELIVERY_RESCAN
        dirty, self._dirty = self._dirty, {}
        todo = []
        for spec in node.ledger.jobs():
            if spec.submitted_by != node.node_id or not (full or spec.id in dirty):
                continue
            if not node.is_own_job(spec.id):
                if spec.id not in self._refused:
                    self._refused.add(spec.id)
                    log.warning(
                        "not delivering %s to %s: it names this peer as its submitter but was "
                        "not submitted here (a forged job?)",
                        node.job_label(spec.id),
                        spec.output,
                    )
                continue
            if node.ledger.counts(spec.id).done == node.ledger.delivered_count(spec.id):
                continue  # every done frame is delivered (the replica keeps both counts)
            records = node.ledger.frame_records(spec.id)
            frames = list(records) if full else sorted(dirty.get(spec.id, ()))
            for frame in frames:  # a done record is built only when it is still undelivered
                if node.ledger.frame_status(
                    spec.id, frame
                ) == Status.DONE and not node.ledger.delivered(spec.id, frame):
                    todo.append((spec, frame, records[frame]))
        return todo

    async def deliver_once(self) -> None:
        """Bring every done frame of the jobs this peer submitted into its output folder."""
        node = self.node
        todo = self._todo()
        if not todo:
            return
        limit = trio.Semaphore(DELIVERY_CONCURRENCY)
        delivered: list[tuple[JobSpec, int, FrameRecord]] = []
        lost: list[tuple[JobSpec, int]] = []

        async def deliver(spec: JobSpec, frame: int, record: FrameRecord) -> None:
            async with limit:
                try:
                    await self.deliver_frame(spec, record)
                except StoreError as exc:
                    node.stats.delivery_failures += 1
                    if self.copy_lost(record.node):
                        # The only copy went with its renderer: render the frame again.
                        lost.append((spec, frame))
                        return
                    log.warning(
                        "cannot deliver %s frame %s yet: %s", node.job_label(spec.id), frame, exc
                    )
                    return
                except (PeerfarmError, OSError) as exc:
                    node.stats.delivery_failures += 1
                    log.warning(
                        "cannot deliver %s frame %s yet: %s", node.job_label(spec.id), frame, exc
                    )
                    return
                delivered.append((spec, frame, record))

        async with trio.open_nursery() as nursery:
            for item in todo:
                nursery.start_soon(deliver, *item)
        for spec, frame in lost:
            log.warning(
                "%s frame %s: its outputs were lost with the peer that rendered them; "
                "rendering it again",
                node.job_label(spec.id),
                frame,
            )
            try:
                await self._reopen(spec.id, frame)
            except LedgerError as exc:
                log.debug("cannot reopen frame %s: %s", frame, exc)
        marks: list[Delta] = []
        for spec, frame, record in delivered:
            marks += await self._mark(spec.id, frame, record)
            node.stats.delivered += 1
        for spec in {id(s): s for s, _f, _r in delivered}.values():
            counts = node.ledger.counts(spec.id)
            if counts.done == counts.total == node.ledger.delivered_count(spec.id):
                log.info(
                    "job done: %s, every frame delivered to %s",
                    node.job_label(spec.id),
                    spec.output,
                )

    def copy_lost(self, renderer: str) -> bool:
        """Whether the peer that rendered a frame is gone for good, so no copy of its output
        can be fetched: it died or left more than ``home_grace`` ago, or it is unknown after a
        full sync. A peer that just restarted knows nobody yet: nothing is lost then."""
        node = self.node
        if not node.sync.synced.is_set():
            return False
        member = node.membership.get(renderer)
        if member is None:
            return True
        return (
            member.state in (MemberState.DEAD, MemberState.LEFT)
            and node.now() - member.state_since > node.config.home_grace
        )

    async def _archive(self, job: str) -> None:
        await self.node.write(lambda ledger, wall: ledger.archive(job, wall))

    async def _reopen(self, job: str, frame: int) -> None:
        await self.node.write(
            lambda ledger, wall: ledger.retry(job, [frame], wall, clear_bans=False)
        )

    async def _mark(self, job: str, frame: int, record: FrameRecord) -> list[Delta]:
        return await self.node.write(
            lambda ledger, wall: ledger.mark_delivered(job, frame, record, wall)
        )

    async def deliver_frame(self, spec: JobSpec, record: FrameRecord) -> None:
        node = self.node
        if not record.outputs:
            return
        if still_of(spec.options) is not None:
            for output in record.outputs:  # a tile: into the store, stitched when all are here
                await node.blobs.ensure(output.digest.hex(), prefer=record.node, size=output.size)
            return
        shared = node.blobs.shared_path(spec.options.get("shared_output"))
        if shared is not None and all(
            (shared / o.name).is_file() and (shared / o.name).stat().st_size == o.size
            for o in record.outputs
        ):
            return  # the renderer wrote them to shared storage: nothing to transfer
        folder = Path(spec.output)
        folder.mkdir(parents=True, exist_ok=True)
        overwrite = spec.options.get("overwrite") is True
        written = node.data_dir / DELIVERIES / spec.id  # names this job wrote in the folder
        for output in record.outputs:
            ours = read_names(written)
            plain = in_folder(folder, output.name)
            if not plain.exists() and not plain.is_symlink():
                target: Path | None = plain  # the common case: no file there, no thread
            else:  # compare contents (hashing) in a thread
                target = await self.node.blocking(delivery_target, folder, output, overwrite, ours)
            if target is None:
                continue  # already there
            blob = await node.blobs.ensure(
                output.digest.hex(), prefer=record.node, size=output.size
            )
            if target.name != output.name:
                log.warning(
                    "%s: %s already holds a different %s that this job did not write; "
                    "delivered as %s instead (submit with --option overwrite=true to replace)",
                    node.job_label(spec.id),
                    folder,
                    output.name,
                    target.name,
                )
            tmp = in_folder(folder, f".{target.name}.part")
            await self.node.blocking(shutil.copyfile, blob, tmp)
            written.parent.mkdir(exist_ok=True)
            with written.open("a") as fh:
                fh.write(target.name + "\n")
            platform.replace(tmp, target)

    # ----------------------------------------------------------------------------------
    # split stills

    async def stitch_stills(self) -> None:
        """Stitch every split still submitted here whose tiles are all delivered (once per set
        of tiles in this life; a failure is logged and waits for different tiles)."""
        node = self.node
        for spec in node.ledger.jobs():
            still = still_of(spec.options)
            if still is None or spec.submitted_by != node.node_id:
                continue
            counts = node.ledger.counts(spec.id)
            if not counts.done == counts.total == node.ledger.delivered_count(spec.id):
                continue
            if not node.is_own_job(spec.id):
                continue
            records = node.ledger.frame_records(spec.id)
            made_of = tuple(o.digest for t in spec.frames for o in records[t].outputs)
            if self._stitched.get(spec.id) == made_of:
                continue
            self._stitched[spec.id] = made_of
            try:
                name = await self.stitch(spec, still, [records[t] for t in spec.frames])
            except (PeerfarmError, TileError, OSError) as exc:
                log.warning("cannot stitch the tiles of %s: %s", node.job_label(spec.id), exc)
                continue
            if name is not None:
                log.info(
                    "stitched %d tiles of %s into %s",
                    still.count,
                    node.job_label(spec.id),
                    Path(spec.output) / name,
                )

    async def stitch(self, spec: JobSpec, still: Still, records: list[FrameRecord]) -> str | None:
        """Stitch the tiles into the job's folder; the name written (None: it was there)."""
        node = self.node
        if any(len(r.outputs) != 1 for r in records):
            raise TileError("every tile must be one image")
        paths = []
        for record in records:
            tile = record.outputs[0]
            path = await node.blobs.ensure(tile.digest.hex(), prefer=record.node, size=tile.size)
            paths.append(path)
        folder = Path(spec.output)
        folder.mkdir(parents=True, exist_ok=True)
        name = stitched_name(still, records[0].outputs[0].name)
        partial = in_folder(folder, f".{name}.stitch")
        try:
            digest = await self.node.blocking(stitch_to, paths, partial)
            size = partial.stat().st_size
            image = Output(name, bytes.fromhex(digest), size)
            written = node.data_dir / DELIVERIES / spec.id
            overwrite = spec.options.get("overwrite") is True
            target = await self.node.blocking(
                delivery_target, folder, image, overwrite, read_names(written)
            )
            if target is None:
                return None  # the same image is there already
            written.parent.mkdir(exist_ok=True)
            with written.open("a") as fh:
                fh.write(target.name + "\n")
            platform.replace(partial, target)
            return target.name
        finally:
            platform.remove(partial)


def read_names(path: Path) -> set[str]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return set()
    return {line.strip() for line in text.splitlines() if line.strip()}


def delivery_target(
    folder: Path, output: Output, overwrite: bool, ours: Collection[str]
) -> Path | None:
    """Where to deliver ``output`` in ``folder`` (the rule of ``naming.delivery_name`` over the
    real folder); None when an identical file is there already. Names pass through
    ``safe_join`` (UnsafeName for anything that could leave the folder)."""

    def probe(name: str) -> Slot:
        target = in_folder(folder, name)
        if target.is_symlink():
            return Slot.OTHER  # whatever it points to, it is not ours to follow
        if not target.exists():
            return Slot.FREE
        return Slot.SAME if same_content(target, output) else Slot.OTHER

    name = delivery_name(output.name, probe, overwrite=overwrite, ours=ours)
    return None if name is None else in_folder(folder, name)


def in_folder(folder: Path, name: str) -> Path:
    """``folder / name`` for a name that is one safe component (UnsafeName otherwise). The
    path is not resolved: a symlink planted at the name is seen as a link, never followed;
    writes go through a partial file renamed over it, which replaces the link itself."""
    return folder / safe_name(name)


def same_content(path: Path, output: Output) -> bool:
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size != output.size:
            return False
        with path.open("rb") as fh:
            return hashlib.file_digest(fh, "sha256").digest() == output.digest
    except OSError:
        return False
