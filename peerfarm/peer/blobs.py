"""The peer's files: the content store's blobs, fetched from peers, under a disk budget.

Owns: getting a blob this peer lacks from a peer that has it (the preferred one first, then
the others in random order, verified by hash), which blobs live jobs still need, evicting the
least recently used others when ``--store-limit`` would be exceeded, and paths under the shared
storage root of ``--shared-root``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import BlobUnavailable, PeerfarmError
from ..files.names import safe_name
from ..files.place import safe_join
from ..files.transfer import fetch_blob
from ..gossip.transport import Address, Stream
from ..ledger.model import JobState, Status
from .render import disk_full

if TYPE_CHECKING:
    from .node import Node

log = logging.getLogger("peerfarm")

UPLOADS = "uploads"  # data dir folder: scenes uploaded through the dashboard, cached videos
#: Seconds after which an upload folder no submit is using any more is removed.
UPLOAD_MAX_AGE = 3600.0


def folder_bytes(folder: Path) -> int:
    """Bytes the files under ``folder`` take on their own (0 when it does not exist): a file
    hard-linked from the content store (a job's scene) is counted once, as the store's."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(root, name))
                if st.st_nlink == 1:
                    total += st.st_size
    return total


def _remove_old_uploads(uploads: Path) -> None:
    if not uploads.is_dir():
        return
    cutoff = time.time() - UPLOAD_MAX_AGE
    for folder in uploads.glob("upload-*"):
        with contextlib.suppress(OSError):
            if folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)


class Blobs:
    """Blob access for one node."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def needed(self) -> set[str]:
        """Digests a live job still needs: the scene and assets of a job with frames left to
        render, and the outputs of done frames not yet delivered. Archived jobs need nothing."""
        ledger = self.node.ledger
        needed: set[str] = set()
        for spec in ledger.jobs():
            state = ledger.job_state(spec.id)
            if state in (JobState.ACTIVE, JobState.PAUSED):
                needed.add(spec.scene.digest.hex())
                needed.update(a.digest.hex() for a in spec.assets)
            if ledger.counts(spec.id).done == ledger.delivered_count(spec.id):
                continue  # every done frame is delivered: no output is needed any more
            records = ledger.frame_records(spec.id)
            for frame in records:  # done records are built only when still undelivered
                if ledger.frame_status(spec.id, frame) == Status.DONE and not ledger.delivered(
                    spec.id, frame
                ):
                    needed.update(o.digest.hex() for o in records[frame].outputs)
        return needed

    async def make_room(self, needed: int) -> None:
        """Evict least-recently-used blobs no live job needs until ``needed`` more bytes fit
        under ``--store-limit``, which bounds everything this peer keeps: the store, the job
        work folders (copied scenes, unpacked archives) and uploads. StoreFull (a StoreError)
        when they cannot fit."""
        store = self.node.store
        if store.limit_bytes is None:
            return
        pinned = self.needed()
        scratch = [self.node.work_dir, self.node.data_dir / UPLOADS]

        def evict() -> list[str]:
            others = sum(folder_bytes(folder) for folder in scratch)
            return store.evict(needed=needed + others, pinned=pinned.__contains__)

        evicted = await self.node.blocking(evict)
        if evicted:
            log.info(
                "store limit: evicted %d unused file%s",
                len(evicted),
                "" if len(evicted) == 1 else "s",
            )

    async def ensure(
        self, digest: str, *, prefer: str | None = None, size: int | None = None
    ) -> Path:
        """The local path of a blob, fetched from a peer that has it if needed. ``size`` (when
        the ledger says it) makes room under the store limit before the download."""
        node = self.node
        if node.store.has(digest):
            return node.store.path(digest)
        if size is not None:
            await self.make_room(size)
        candidates: list[str] = []
        if prefer and prefer != node.node_id:
            candidates.append(prefer)
        others = [m.node_id for m in node.membership.alive_members() if m.node_id not in candidates]
        node.parts.rng.shuffle(others)
        candidates += others
        errors = []
        for node_id in candidates:
            address = node.address_of(node_id)
            if address is None:
                continue

            async def connect(address: Address = address) -> Stream:
                return await node.transport.connect(address, timeout=node.config.stream_timeout)

            try:
                path = await fetch_blob(
                    connect, digest, node.store, timeout=node.config.stream_timeout
                )
                node.stats.transfer_bytes += path.stat().st_size
                return path
            except PeerfarmError as exc:
                if disk_full(exc) is not None:
                    raise  # our disk, not their blob: no other peer can help
                errors.append(f"{node_id[:8]}: {exc}")
        raise BlobUnavailable(
            f"no peer could provide {digest[:12]}" + (f" ({'; '.join(errors)})" if errors else "")
        )

    async def tidy(self) -> None:
        """Remove what finished jobs left on this peer: their work folders (copied scenes,
        unpacked archives), their cached videos, and upload folders of submits long gone."""
        node = self.node
        ledger = node.ledger
        live = {
            spec.id
            for spec in ledger.jobs()
            if ledger.job_state(spec.id) in (JobState.ACTIVE, JobState.PAUSED)
        }
        busy = {running.job for running in node.worker.renders()}
        keep = live | busy
        stale: list[Path] = []
        if node.work_dir.is_dir():
            stale += [
                p
                for p in node.work_dir.iterdir()
                if p.is_dir() and p.name != "trash" and p.name not in keep
            ]
        uploads = node.data_dir / UPLOADS
        videos = uploads / "videos"
        if videos.is_dir():
            stale += [p for p in videos.glob("*.mp4") if p.stem not in ledger.job_ids()]
        for folder in stale:
            node.worker.renderer.forget_job(folder.name)
            node.worker.renderer.discard(folder)
        await self.node.blocking(_remove_old_uploads, uploads)

    def shared_path(self, relative: object) -> Path | None:
        """``relative`` under this peer's --shared-root, if it has one (checked to stay inside)."""
        root = self.node.parts.shared_root
        if root is None or not isinstance(relative, str) or not relative:
            return None
        path = root
        for part in relative.replace("\\", "/").split("/"):
            if part:
                path = safe_join(path, safe_name(part))
        return path
