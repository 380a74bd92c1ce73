"""Following a job to its end through the control API: ``submit --wait`` and the demo.

This module owns the polling loop (long polls: the daemon answers as soon as the job ends, or
every half second to move the bar) and its progress bar (with ETA, and why the job waits when no
peer can take it). It talks to a daemon only through :class:`peerfarm.client.FarmClient`, so the
CLI and the demo share it without importing each other.
"""

from __future__ import annotations

import sys
from time import monotonic, sleep
from typing import TYPE_CHECKING

from peerfarm.client import FarmClient
from peerfarm.control import SUMMARY_ONLY, JobView
from peerfarm.plaintext import printable

if TYPE_CHECKING:
    from rich.console import Console

#: Seconds between polls of ``submit --wait`` and ``status --watch``.
POLL_INTERVAL_S = 0.5
#: The shortest wait between polls of ``submit --wait`` as the job's end nears.
MIN_POLL_INTERVAL_S = 0.02


def poll_interval(remaining: int, rate: float | None) -> float:
    """Seconds until ``submit --wait`` asks again: :data:`POLL_INTERVAL_S`, shortened as the
    job's end nears (a tenth of the time ``remaining`` frames take at ``rate`` frames per
    second), so the user does not wait up to half a second more than the job did."""
    if rate is None or rate <= 0:
        return POLL_INTERVAL_S
    return min(POLL_INTERVAL_S, max(MIN_POLL_INTERVAL_S, remaining / rate / 10))


_ENDED = ("done", "failed", "cancelled")


def job_finished(job: JobView) -> bool:
    """Every frame of the job ended (done or failed), or the job did."""
    if job["state"] in _ENDED:
        return True
    total = job["frames_total"]
    return total > 0 and job["frames_done"] + job["frames_failed"] >= total


def job_succeeded(job: JobView) -> bool:
    """The job is done, or every frame is, with none failed."""
    return job["state"] == "done" or (
        job["state"] not in ("failed", "cancelled")
        and job["frames_failed"] == 0
        and job["frames_done"] >= job["frames_total"]
    )


def wait_for_job(
    client: FarmClient,
    job_id: str,
    *,
    quiet: bool,
    give_up_after: float | None = None,
    console: Console | None = None,
) -> JobView:
    """Poll the job until it finishes, with a progress bar (and ETA) on stderr unless ``quiet``.

    When no peer can render the job, the reason is printed (again when it changes). With
    ``give_up_after``, returns early (the job still has ``blocked`` set) once no peer could
    render it for that many seconds.
    """
    # rich is loaded here, after the submit: a job's frames start before the bar is drawn.
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("failed {task.fields[failed]}"),
        TimeRemainingColumn(),
    )
    console = console or Console(file=sys.stderr, highlight=False, emoji=False, soft_wrap=True)
    with Progress(*columns, console=console, disable=quiet, transient=False) as bar:
        task = bar.add_task("waiting", total=None, failed=0)
        said = ""
        blocked_since: float | None = None
        first: tuple[float, int] | None = None  # when frames were first seen ending, how many
        wait = 0.0  # the first answer at once (the bar is drawn), then long polls
        while True:
            answer = client.status(job_id, SUMMARY_ONLY, wait=wait)
            # A daemon that held the request until the job ended or ``wait`` passed says so
            # with ``ended`` (an older one answers at once: then the client sleeps between).
            ask_again_now = wait == 0 or answer.get("ended") is False
            wait = POLL_INTERVAL_S
            job = answer["jobs"][0]
            ended = job["frames_done"] + job["frames_failed"]
            now = monotonic()
            first = first or ((now, ended) if ended else None)
            rate = (ended - first[1]) / (now - first[0]) if first and now > first[0] else None
            bar.update(
                task,
                description=printable(job["name"]),
                total=job["frames_total"] or None,
                completed=job["frames_done"],
                failed=job["frames_failed"],
            )
            if job_finished(job):
                return job
            blocked = job.get("blocked")
            if blocked and blocked != said and not quiet:
                bar.console.print(printable(f"{job['name']} waits: {blocked}"), markup=False)
            said = blocked or said
            if blocked:
                blocked_since = monotonic() if blocked_since is None else blocked_since
                if give_up_after is not None and monotonic() - blocked_since > give_up_after:
                    return job
            else:
                blocked_since = None
            if not ask_again_now:
                sleep(poll_interval(job["frames_total"] - ended, rate))
