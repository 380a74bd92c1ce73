"""Sending job-end notifications (``submit --notify URL|desktop``): the I/O edge.

Owns the peer's notification loop and the two real senders. Which peer sends, and the
guarantee, are the pure rule of :mod:`peerfarm.scheduler.notices`; this service only feeds it
what this peer sees (the ledger's notice register, the member table, when it first saw the
event) and does what it says: write the ``claimed`` mark and wait until it is on disk, send to
every target, then write ``sent`` (or ``failed`` when no target took it).

The payload is the job's summary as ``status JOB --json`` shows it under ``jobs`` (no frames),
plus ``event`` (the id a receiver dedupes on; also the ``X-Peerfarm-Event`` header).
A URL gets an HTTP POST (JSON, 10 s timeout, three tries); ``desktop`` shows a notification on
the submitter's desktop with notify-send, osascript or a Windows toast, and is skipped with a
log line where none is available. A failed send is logged and never stops the peer.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import trio

from ..errors import PeerfarmError
from ..gossip.membership import MemberState
from ..ledger.model import JobSpec
from ..scheduler import notices
from ..status import job_view

if TYPE_CHECKING:
    from .node import Node

log = logging.getLogger("peerfarm")

#: Seconds between looks at every job with targets (changes wake the loop sooner).
INTERVAL = 1.0
HTTP_TIMEOUT = 10.0
HTTP_TRIES = 3
JOURNAL_FILE = "notified"  # data dir file: ids of the events this peer sent, one a line


def read_journal(path: Path) -> set[str]:
    try:
        return {line.strip() for line in path.read_text().splitlines() if line.strip()}
    except FileNotFoundError:
        return set()


class Notifier:
    """The notification loop of one node."""

    def __init__(self, node: Node) -> None:
        self.node = node
        # Events this peer sent, one id a line, appended and fsynced right after the send and
        # before the ledger's "sent" mark: a restart between the two marks it sent instead of
        # sending again.
        self._journal_path = node.data_dir / JOURNAL_FILE
        self._journal: set[str] = read_journal(self._journal_path)
        self._wake = trio.Event()
        self._seen: dict[tuple[str, int], float] = {}  # event -> when this peer first saw it
        self._sending: set[tuple[str, int]] = set()
        self._started = node.now()
        self.sent = 0  # notifications sent by this peer (this life)

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        node = self.node
        if node.ledger.jobs():
            # A restarted peer hears the farm's notice marks before it sends anything.
            with trio.move_on_after(max(node.parts.settle, node.parts.notify_grace)):
                await node.sync.synced.wait()
        async with trio.open_nursery() as nursery:
            while True:
                await self.node.gate()
                for spec, event in self._due():
                    self._sending.add((spec.id, event.number))
                    nursery.start_soon(self._send, spec, event)
                self._wake = trio.Event()
                with trio.move_on_after(INTERVAL):
                    await self._wake.wait()

    def _due(self) -> list[tuple[JobSpec, notices.JobEvent]]:
        """Events this peer should send now (the pure rule, fed with this peer's view)."""
        node = self.node
        ledger = node.ledger
        now = node.now()
        wanted = [
            (spec, targets) for spec in ledger.jobs() if (targets := notices.targets_of(spec))
        ]
        if not wanted:  # woken by every change: most jobs ask for no notification
            return []
        alive, gone_for = self._view(now)
        out = []
        for spec, targets in wanted:
            event = notices.event_of(ledger, spec.id)
            if event is None:
                continue
            key = (spec.id, event.number)
            seen = self._seen.setdefault(key, now)
            reg = ledger.notice(spec.id, event.number)
            situation = notices.Situation(
                me=node.node_id,
                submitter=spec.submitted_by,
                desktop_only=all(t == notices.DESKTOP for t in targets),
                mark=None if reg is None else notices.mark_of(reg.value, reg.node),
                sending=key in self._sending,
                alive=alive,
                gone_for=gone_for,
                seen_for=now - seen,
                grace=node.parts.notify_grace,
            )
            if notices.decide(situation) == notices.Decision.SEND:
                out.append((spec, event))
        return out

    def _view(self, now: float) -> tuple[frozenset[str], dict[str, float]]:
        """Alive peers (suspects count) and, for the others, seconds since they went."""
        alive = {self.node.node_id}
        gone_for: dict[str, float] = {}
        for member in self.node.members():
            if member.state in (MemberState.ALIVE, MemberState.SUSPECT):
                alive.add(member.node_id)
            else:
                gone_for[member.node_id] = now - member.state_since
        # A peer this one never heard of (a restart forgets the member table): gone since
        # this peer started, as far as it can tell.
        since_start = now - self._started
        for spec in self.node.ledger.jobs():
            if not notices.targets_of(spec):
                continue  # nothing to send for it: its peers are not looked at
            for peer in (spec.submitted_by, *self._claimants(spec)):
                if peer not in alive and peer not in gone_for:
                    gone_for[peer] = since_start
        return frozenset(alive), gone_for

    def _claimants(self, spec: JobSpec) -> list[str]:
        event = notices.event_of(self.node.ledger, spec.id)
        reg = None if event is None else self.node.ledger.notice(spec.id, event.number)
        return [] if reg is None else [reg.node]

    async def _reachable(self, spec: JobSpec, event: notices.JobEvent) -> bool:
        """Before sending in another peer's place (the submitter's, or a claimant's), ask that
        peer directly, as a lease takeover does: a full sync with it. True when one answered:
        then it is up (its marks are merged now) and this peer does not send this round."""
        node = self.node
        reg = node.ledger.notice(spec.id, event.number)
        if reg is not None and reg.node == node.node_id:
            return False  # our own claim (we restarted while sending): ours to finish
        others = {spec.submitted_by} | ({reg.node} if reg is not None else set())
        others.discard(node.node_id)
        for peer in sorted(others):
            address = node.address_of(peer)
            if address is None:
                continue
            try:
                await node.sync.push_pull(address)
            except PeerfarmError:
                continue
            return True
        return False

    async def _send(self, spec: JobSpec, event: notices.JobEvent) -> None:
        node = self.node
        key = (spec.id, event.number)
        try:
            if await self._reachable(spec, event):
                log.debug("%s: its sender is up, not notifying in its place", spec.id[:8])
                return
            await node.write(
                lambda ledger, wall: ledger.mark_notice(
                    spec.id, event.number, event.state, notices.CLAIMED, wall
                ),
                durable=True,
            )
            if event.id in self._journal:  # sent before a restart: record it, do not resend
                await self._mark(spec, event, notices.SENT)
                return
            payload = self._payload(spec, event)
            sent = 0
            for target in notices.targets_of(spec):
                if target == notices.DESKTOP and node.node_id != spec.submitted_by:
                    continue  # the submitter's desktop: not ours to show
                if await self._send_one(target, event, payload):
                    sent += 1
            phase = notices.SENT if sent else notices.FAILED
            if sent:
                self._remember(event.id)
            await self._mark(spec, event, phase)
            self.sent += sent
            log.info("notified the end of %s (%s): %s", node.job_label(spec.id), event.state, phase)
        except Exception as exc:  # a notification never stops the peer
            log.error("notification of %s failed: %s", node.job_label(spec.id), exc)
        finally:
            self._sending.discard(key)

    async def _mark(self, spec: JobSpec, event: notices.JobEvent, phase: str) -> None:
        await self.node.write(
            lambda ledger, wall: ledger.mark_notice(
                spec.id, event.number, event.state, phase, wall
            ),
            durable=True,
        )

    def _remember(self, event_id: str) -> None:
        self._journal.add(event_id)
        try:
            with self._journal_path.open("a") as fh:
                fh.write(event_id + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            log.error("cannot record a sent notification in %s: %s", self._journal_path, exc)

    def _payload(self, spec: JobSpec, event: notices.JobEvent) -> dict[str, Any]:
        node = self.node
        members = node.members()
        slots = sum(
            int(m.meta.get("slots", 1) or 0) for m in members if m.state == MemberState.ALIVE
        )
        view = job_view(node.ledger, spec, peer_slots=slots, members=members)
        return {**view, "event": event.id}

    async def _send_one(
        self, target: str, event: notices.JobEvent, payload: dict[str, Any]
    ) -> bool:
        sender = self.node.parts.notify_sender or send
        try:
            await sender(target, event.id, payload)
        except Exception as exc:
            log.warning("notification to %s failed: %s", target, exc)
            return False
        return True


async def send(target: str, event_id: str, payload: dict[str, Any]) -> None:
    """The real sender: an HTTP POST, or the desktop."""
    if target == notices.DESKTOP:
        await trio.to_thread.run_sync(desktop_notify, payload)
        return
    body = json.dumps(payload).encode()
    headers = {"content-type": "application/json", "x-peerfarm-event": event_id}
    last: Exception | None = None
    for attempt in range(HTTP_TRIES):
        try:
            await trio.to_thread.run_sync(_post, target, body, headers)
            return
        except (httpx.HTTPError, OSError) as exc:
            last = exc
            await trio.sleep(1.0 * (attempt + 1))
    raise RuntimeError(f"POST {target}: {last}")


def _post(url: str, body: bytes, headers: dict[str, str]) -> None:
    response = httpx.post(url, content=body, headers=headers, timeout=HTTP_TIMEOUT)
    response.raise_for_status()


def desktop_argv(title: str, text: str, platform: str = sys.platform) -> list[str] | None:
    """The command that shows a desktop notification here, or None when there is none."""
    if platform == "darwin" and shutil.which("osascript"):
        script = f"display notification {json.dumps(text)} with title {json.dumps(title)}"
        return ["osascript", "-e", script]
    if platform.startswith("win") and shutil.which("powershell"):
        message = (title + ": " + text).replace("'", "''")
        script = (
            "[reflection.assembly]::loadwithpartialname('System.Windows.Forms') | Out-Null;"
            "$n = New-Object System.Windows.Forms.NotifyIcon;"
            "$n.Icon = [System.Drawing.SystemIcons]::Information; $n.Visible = $true;"
            f"$n.ShowBalloonTip(10000, 'peerfarm', '{message}', 'Info'); Start-Sleep 10"
        )
        return ["powershell", "-NoProfile", "-Command", script]
    if shutil.which("notify-send"):
        return ["notify-send", title, text]
    return None


def desktop_notify(payload: dict[str, Any]) -> None:
    state = str(payload.get("state", ""))
    title = f"peerfarm: {payload.get('name', 'job')} {state}"
    text = f"{payload.get('frames_done', 0)} of {payload.get('frames_total', 0)} frames done" + (
        f", {payload.get('frames_failed')} failed" if payload.get("frames_failed") else ""
    )
    argv = desktop_argv(title, text)
    if argv is None:
        log.info("desktop notification skipped (no notify-send/osascript here): %s", title)
        return
    try:
        subprocess.run(argv, timeout=15, check=False, capture_output=True)
    except (OSError, subprocess.SubprocessError) as exc:
        log.info("desktop notification skipped: %s", exc)
