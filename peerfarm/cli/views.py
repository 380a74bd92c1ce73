"""What the CLI shows people (pure: the daemon's typed answers -> text and rich renderables).

Text from the farm (names, errors, logs) is never Rich markup: it goes in as ``Text``, with
control characters escaped (``peerfarm.plaintext``). Keys a daemon of an older version may not
send yet (``waiting``, ``blocked``) are read with ``get``.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from peerfarm.control import (
    ActionAnswer,
    EncodeAnswer,
    FetchAnswer,
    FramePage,
    FrameView,
    HostAnswer,
    JobView,
    LogsView,
    PeerView,
    RenderingItem,
    StatusView,
)
from peerfarm.plaintext import printable

#: Frames ``status JOB`` prints unless --frames, --state or --limit ask for others.
SHOWN_FRAMES = 60
#: The states of frames not done, the ones a big job's status lists first.
NOT_DONE = ("pending", "rendering", "failed")

_STATE_STYLE = {"alive": "green", "suspect": "yellow", "dead": "red", "left": "dim"}


def short_id(job_id: str) -> str:
    return job_id[:10]


def format_eta(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return "-"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_renderers(renderers: dict[str, str | list[str]]) -> str:
    """A peer's renderers and versions; every installed Blender: ``blender 3.4.1/5.0.1``."""
    return ", ".join(
        f"{name} {'/'.join(version) if isinstance(version, list) else version}".strip()
        for name, version in renderers.items()
    )


def format_rendering(items: Sequence[RenderingItem]) -> str:
    """What a peer renders now: ``job name:frame, ...``."""
    return ", ".join(f"{item['name']}:{item['frame']}" for item in items) or "-"


def waiting_lines(job: JobView | LogsView, *, every_peer: bool = False) -> list[str]:
    """What to say under a job about why it waits (nothing when it does not).

    ``blocked`` (no peer can ever take it) always shows; the per-peer reasons show when nothing
    of the job renders, or always with ``every_peer`` (``status JOB``, ``logs``).
    """
    lines = []
    blocked = job.get("blocked")
    waiting = job.get("waiting") or {}
    if ended := job.get("ended"):
        lines.append(f"ended: {ended}")
    if blocked:
        lines.append(f"waits: {blocked}")
    if waiting:
        if every_peer:
            lines += [f"{peer}: {reason}" for peer, reason in waiting.items()]
        elif not blocked and not job.get("frames_rendering"):
            lines.append("waits: " + "; ".join(f"{p}: {r}" for p, r in waiting.items()))
    return lines


def retry_text(job: str, answer: ActionAnswer) -> str:
    """``retry: JOB: 2 frame(s) queued again`` (an older daemon sends only ``changed``)."""
    return f"retry: {job}: {answer.get('frames', answer['changed'])} frame(s) queued again"


def action_text(job: str, answer: ActionAnswer) -> str:
    return f"{answer['action']}: {job} ({answer['state']})"


def host_text(answer: HostAnswer) -> str:
    """``hold: b (held by a)`` / ``release: b (takes work)``."""
    return f"{answer['action']}: {answer['name']} ({answer['availability'] or 'takes work'})"


def format_size(size: int | None) -> str:
    if not size:
        return "-"
    return f"{size / 1024**2:.0f} MiB" if size < 1024**3 else f"{size / 1024**3:.1f} GiB"


def fetch_text(answer: FetchAnswer) -> str:
    return f"{answer['files']} file(s) in {printable(answer['dest'])}"


def encode_text(answer: EncodeAnswer) -> str:
    """``/abs/shot.mp4 (48 frames at 24 fps)``."""
    return f"{printable(answer['video'])} ({answer['frames']} frames at {answer['fps']:g} fps)"


# --- tables ----------------------------------------------------------------------------------


def plain(value: object, style: str = "") -> Text:
    """Farm text as a table cell: no markup, no escape sequences."""
    return Text(printable("" if value is None else value), style=style)


def state_cell(state: str) -> Text:
    return plain(state, _STATE_STYLE.get(state, "white"))


def peers_table(peers: Sequence[PeerView]) -> Table:
    table = Table(title="Peers", title_justify="left")
    for column in ("name", "address", "state", "slots", "busy", "renderers", "rendering"):
        table.add_column(column)
    for peer in peers:
        away = peer.get("availability")
        table.add_row(
            plain(peer["name"]),
            plain(peer["address"]),
            state_cell(peer["state"]) + (plain(f", {away}", "yellow") if away else Text("")),
            plain(peer["slots"]),
            plain(peer["busy"]),
            plain(format_renderers(peer["renderers"])),
            plain(format_rendering(peer["rendering"])),
        )
    return table


def peer_details(peers: Sequence[PeerView]) -> RenderableType:
    """One block per peer (like Buildcat's worker-info): readable at any terminal width."""
    blocks: list[RenderableType] = []
    for peer in peers:
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column()
        grid.add_row(plain(peer["name"]), state_cell(peer["state"]))
        rows = [
            ("address", peer["address"]),
            ("host", peer["host"]),
            ("os", peer["os"]),
            ("python", peer["python"]),
            ("peerfarm", peer["peerfarm"]),
            ("renderers", format_renderers(peer["renderers"]) or "-"),
            ("slots", f"{peer['busy']} busy of {peer['slots']}"),
            ("takes work", peer.get("availability") or "yes"),
            ("rendering", format_rendering(peer["rendering"])),
            ("tags", ", ".join(peer["tags"]) or "-"),
            ("devices", ", ".join(peer.get("devices", [])) or "-"),  # Cycles; older peers: none
        ]
        for label, value in rows:
            grid.add_row(label, plain(value))
        blocks.append(grid)
        blocks.append(Text(""))
    return Group(*blocks)


def jobs_table(jobs: Sequence[JobView]) -> Table:
    table = Table(title="Jobs", title_justify="left")
    for column in ("id", "name", "state", "progress", "done", "failed", "rendering", "ETA"):
        table.add_column(column)
    for job in jobs:
        done = job["frames_done"]
        unit = " tiles" if "tiles" in job else ""  # a split still: its units are tiles
        table.add_row(
            plain(short_id(job["id"])),
            plain(job["name"]),
            plain(job["state"]),
            ProgressBar(total=job["frames_total"] or 1, completed=done, width=24),
            f"{done}/{job['frames_total']}{unit}",
            str(job["frames_failed"]),
            str(job["frames_rendering"]),
            format_eta(job["eta_seconds"]),
        )
    return table


def frames_table(
    frames: Sequence[FrameView],
    page: FramePage | None = None,
    limit: int = SHOWN_FRAMES,
    *,
    still_frame: int | None = None,
) -> Table:
    """Frames of one job: the page the daemon sent, titled with what it holds. Without a page
    (a daemon older than paging sent every frame): when there are many, the ones not done.
    A split still's (``still_frame``) are its tiles: "Tiles of frame 7"."""
    if page is None:
        many = len(frames) > limit
        shown = [f for f in frames if not many or f["state"] != "done"]
        title = f"Frames ({min(len(shown), limit)} of {len(frames)} shown)"
        shown = shown[:limit]
    else:
        shown = list(frames)
        title = f"{_page_label(page)} ({page['returned']:,} of {page['matched']:,} shown)"
    unit = "frame"
    if still_frame is not None:
        unit, title = "tile", title.replace("Frames", f"Tiles of frame {still_frame}", 1)
    table = Table(title=title, title_justify="left")
    columns = (unit, "state", "peer", "attempts", "seconds", "memory", "delivered", "error")
    for column in columns:
        table.add_column(column)
    for frame in shown:
        seconds = frame["seconds"]
        table.add_row(
            plain(frame["frame"]),
            plain(frame["state"]),
            plain(frame["peer"] or "-"),
            plain(frame["attempts"]),
            "-" if seconds is None else f"{seconds:.1f}",
            format_size(frame.get("memory")),
            "yes" if frame["delivered"] else "no",
            plain(frame["error"] or ""),
        )
    return table


def _page_label(page: FramePage) -> str:
    """``Frames``, ``Frames not done``, ``Frames failed in 1-100``..."""
    states = tuple(page["states"])
    label = "Frames"
    if states == NOT_DONE:
        label += " not done"
    elif states:
        label += " " + ", ".join(states)
    if page["frames"] is not None:
        label += f" in {page['frames']}"
    return label


def page_hint(job: JobView, page: FramePage) -> str | None:
    """One line under a page of frames that leaves frames out: how to see the others."""
    ref = short_id(job["id"])
    if page["next"] is not None:
        left = page["matched"] - page["returned"]
        return (
            f"{left:,} more from frame {page['next']}: `peerfarm status {ref} --frames "
            f"{page['next']}-...` or --limit N; --state pending|rendering|done|failed picks by "
            "state"
        )
    if tuple(page["states"]) == NOT_DONE and page["frames"] is None and page["matched"] == 0:
        return f"every frame is done: list them with `peerfarm status {ref} --frames RANGE`"
    return None


def waiting_text(jobs: Sequence[JobView], *, every_peer: bool = False) -> Text | None:
    """The lines under the jobs table saying why jobs wait, or None when none does."""
    text = Text()
    for job in jobs:
        lines = waiting_lines(job, every_peer=every_peer)
        if not lines:
            continue
        style = "yellow" if job.get("blocked") else "dim"
        name = printable(f"{job['name']} ({short_id(job['id'])})")
        text.append(f"{name}\n", style="bold")
        for line in lines:
            text.append(f"  {printable(line)}\n", style=style)
    return text if text.plain else None


def status_view(status: StatusView) -> RenderableType:
    parts: list[RenderableType] = [peers_table(status["peers"]), jobs_table(status["jobs"])]
    if (waits := waiting_text(status["jobs"], every_peer="frames" in status)) is not None:
        parts.append(waits)
    if "frames" in status:
        page = status.get("frames_page")
        jobs = status["jobs"]
        still = jobs[0].get("tile_frame") if len(jobs) == 1 else None
        parts.append(frames_table(status["frames"], page, still_frame=still))
        hint = page_hint(status["jobs"][0], page) if page and status["jobs"] else None
        if hint is not None:
            parts.append(Text(printable(hint), style="dim"))
    return Group(*parts)


def logs_lines(data: LogsView) -> list[tuple[str, str]]:
    """A frame's log as (kind, text) lines: ``line``, ``rule`` (an attempt's heading) or
    ``block`` (a log tail, newlines kept)."""
    out = [("line", f"frame {data['frame']}: {data['state']} on {data['peer'] or '-'}")]
    out += [("line", line) for line in waiting_lines(data, every_peer=True)]
    if data["progress"]:
        out.append(("line", f"progress: {data['progress']}"))
    for attempt in data["attempts"]:
        out.append(("rule", f"attempt {attempt['attempt']} on {attempt['peer']}"))
        if attempt["error"]:
            out.append(("line", f"error: {attempt['error']}"))
        out.append(("block", attempt["log_tail"] or "(no output)"))
    return out
