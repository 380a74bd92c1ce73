"""The verbs that talk to the local daemon about the farm and its jobs.

``submit``, ``status``, ``peers``, ``cancel`` / ``pause`` / ``resume`` / ``retry``, ``check``,
``logs``, ``fetch`` and ``encode``: each parses its arguments, makes one or a few calls through
:class:`peerfarm.client.FarmClient` (the HTTP API the dashboard uses) and prints the typed answer,
as JSON with ``--json``, else through :mod:`peerfarm.cli.views`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from peerfarm.cli.app import EXIT_FAILED, EXIT_OK, cli, common, connect, console, print_json
from peerfarm.cli.parsing import check_renderer, check_scene, parse_options
from peerfarm.client import FarmClient
from peerfarm.control import (
    RENDERERS,
    SUMMARY_ONLY,
    Action,
    FrameQuery,
    StatusView,
    SubmitBody,
    frame_query,
)
from peerfarm.errors import UsageError
from peerfarm.files.names import folder_name
from peerfarm.follow import job_succeeded, wait_for_job
from peerfarm.frames import MAX_FRAMES, parse_frames
from peerfarm.plaintext import printable

if TYPE_CHECKING:
    from rich.console import Console

# The views (and rich under them) are imported by the verbs that print them: a submit reaches
# the daemon, and its frames start, without waiting for them to load.

#: What the daemon answers ``status JOB --json`` with when no --limit is given (its
#: ``peerfarm.framepage.DEFAULT_LIMIT``, not imported: the CLI does not load the ledger).
DEFAULT_FRAMES_JSON = 1000


@cli.command()
@common
@click.argument("scene", type=click.Path(path_type=Path))
@click.argument("frames")
@click.option("--renderer", default=None, metavar="|".join(RENDERERS))
@click.option("--chunk", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--priority", type=int, default=0, show_default=True)
@click.option("--name", default=None, help="Job name (default: the scene's file name).")
@click.option("--output", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--option", "option_pairs", multiple=True, metavar="KEY=VALUE")
@click.option("--retries", type=click.IntRange(min=0), default=3, show_default=True)
@click.option("--encode", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--fps", type=click.FloatRange(min=0, min_open=True), default=None)
@click.option("--allow-scripts", is_flag=True, help="Let Python inside the .blend run.")
@click.option(
    "--overwrite", is_flag=True, help="Let deliveries replace files this job did not write."
)
@click.option("--after", default=None, metavar="JOB", help="Start when JOB is done.")
@click.option(
    "--per-frame", is_flag=True, help="With --after: frame N starts when JOB's frame N is done."
)
@click.option(
    "--notify",
    "notify",
    multiple=True,
    metavar="URL|desktop",
    help="When the job ends: POST its summary to URL, or show it on this desktop (repeatable).",
)
@click.option("--no-output", is_flag=True, help="Command jobs: a frame may write no file.")
@click.option(
    "--tiles",
    type=int,
    default=None,
    metavar="N",
    help="Split the one frame given into N tiles rendered by different peers (Blender).",
)
@click.option(
    "--require",
    "require",
    multiple=True,
    metavar="TAG",
    help="Render only on peers started with this tag (--tags); repeatable.",
)
@click.option("--wait", is_flag=True, help="Show progress; exit 1 if any frame fails.")
def submit(
    data_dir: Path | None,
    as_json: bool,
    scene: Path,
    frames: str,
    renderer: str | None,
    chunk: int,
    priority: int,
    name: str | None,
    output: Path | None,
    option_pairs: tuple[str, ...],
    retries: int,
    encode: Path | None,
    fps: float | None,
    allow_scripts: bool,
    overwrite: bool,
    tiles: int | None,
    after: str | None,
    per_frame: bool,
    notify: tuple[str, ...],
    no_output: bool,
    require: tuple[str, ...],
    wait: bool,
) -> int:
    """Submit SCENE for FRAMES (e.g. 1-240, 1,5,10-20x2); prints the job id."""
    parse_frames(frames)
    absolute = check_scene(scene)
    check_renderer(absolute, renderer)
    fields: SubmitBody = {
        "scene": str(absolute),
        "frames": frames,
        "chunk": chunk,
        "priority": priority,
        "cwd": str(Path.cwd()),
        "options": parse_options(option_pairs),
        "retries": retries,
        "allow_scripts": allow_scripts,
    }
    if renderer is not None:
        fields["renderer"] = renderer
    if name is not None:
        fields["name"] = name
    if output is not None:
        fields["output"] = str(output.expanduser().absolute())
    if encode is not None:
        fields["encode"] = str(encode.expanduser().absolute())
    if fps is not None:
        fields["fps"] = fps
    if overwrite:
        fields["overwrite"] = True
    if tiles is not None:
        fields["tiles"] = tiles
    if per_frame and after is None:
        raise click.UsageError("--per-frame goes with --after JOB")
    if after is not None:
        fields["after"] = after
        fields["per_frame"] = per_frame
    if notify:
        from peerfarm.scheduler import notices  # imports the ledger: only when asked for

        fields["notify"] = list(notices.check_targets(notify))
    if no_output:
        fields["no_output"] = True
    if require:
        fields["require"] = list(require)
    with connect(data_dir) as client:
        result = client.submit(fields)
        if "warning" in result:
            warning = printable(result["warning"])
            console(err=True).print(f"peerfarm: warning: {warning}", markup=False)
        if not wait:
            print_json(result) if as_json else click.echo(result["job"])
            return EXIT_OK
        if not as_json:
            click.echo(result["job"])
        job = wait_for_job(client, result["job"], quiet=as_json)
    if as_json:
        print_json({**result, "final": job})
    return EXIT_OK if job_succeeded(job) else EXIT_FAILED


@cli.command()
@common
@click.argument("job", required=False)
@click.option("--watch", is_flag=True, help="Refresh live until Ctrl-C.")
@click.option(
    "--frames", "frame_range", default=None, metavar="RANGE",
    help="With JOB: only these frames (as submit takes them: 1-10,20).",
)  # fmt: skip
@click.option(
    "--state", default=None, metavar="pending|rendering|done|failed",
    help="With JOB: only frames in this state (several: comma-separated).",
)  # fmt: skip
@click.option(
    "--limit", type=click.IntRange(0, MAX_FRAMES), default=None,
    help=f"With JOB: at most N frames (--json default: {DEFAULT_FRAMES_JSON}).",
)  # fmt: skip
def status(
    data_dir: Path | None,
    as_json: bool,
    job: str | None,
    watch: bool,
    frame_range: str | None,
    state: str | None,
    limit: int | None,
) -> int:
    """The farm's peers and jobs, or one JOB (id, unique prefix, or name) with its frames.

    A job of many frames lists the ones not done first; --frames and --state pick others."""
    from peerfarm.cli.views import status_view

    query = None
    if frame_range is not None or state is not None or limit is not None:
        if job is None:
            raise UsageError("--frames, --state and --limit need a JOB")
        query = frame_query(frame_range, state, limit)
    with connect(data_dir) as client:
        if watch and not as_json:
            return watch_status(client, job, query)
        if as_json:
            print_json(client.status(job, query))
        else:
            console().print(status_view(status_for_people(client, job, query)))
    return EXIT_OK


def status_for_people(client: FarmClient, job: str | None, query: FrameQuery | None) -> StatusView:
    """What ``status`` prints: a job's frames as asked, else every frame of a small job, else
    the first frames not done (a page of ``SHOWN_FRAMES``; a big job is never fetched whole)."""
    from peerfarm.cli.views import NOT_DONE, SHOWN_FRAMES

    if job is None or query is not None:
        return client.status(job, query)
    data = client.status(job, FrameQuery(limit=SHOWN_FRAMES))
    page = data.get("frames_page")
    if page is None or page["next"] is None:
        return data  # every frame (or a daemon that sends them all: the table picks)
    return client.status(job, FrameQuery(states=NOT_DONE, limit=SHOWN_FRAMES))


def watch_status(
    client: FarmClient,
    job: str | None,
    query: FrameQuery | None = None,
    *,
    interval: float = 1.0,
    rounds: int | None = None,
    out: Console | None = None,
) -> int:
    """Redraw the status every ``interval`` seconds until Ctrl-C (or ``rounds`` redraws)."""
    from peerfarm.cli.views import status_view

    count = 0
    try:
        from rich.live import Live

        with Live(console=out or console(), auto_refresh=False) as live:
            while rounds is None or count < rounds:
                live.update(status_view(status_for_people(client, job, query)), refresh=True)
                count += 1
                if rounds is None or count < rounds:
                    time.sleep(interval)
    except KeyboardInterrupt:
        pass
    return EXIT_OK


@cli.command()
@common
def peers(data_dir: Path | None, as_json: bool) -> None:
    """Every peer: host, OS, Python, peerfarm and renderer versions, slots, what it renders."""
    from peerfarm.cli.views import peer_details

    with connect(data_dir) as client:
        data = client.peers()
    if as_json:
        print_json(data)
    else:
        console().print(peer_details(data["peers"]))


def _action(name: Action, help_text: str) -> None:
    @cli.command(name=name, help=help_text)
    @common
    @click.argument("job")
    def command(data_dir: Path | None, as_json: bool, job: str) -> None:
        from peerfarm.cli.views import action_text

        with connect(data_dir) as client:
            result = client.act(job, name)
        print_json(result) if as_json else click.echo(action_text(job, result))


_action("cancel", "Cancel JOB: its renders stop on every peer.")
_action("pause", "Pause JOB: no new frames start until resume.")
_action("resume", "Resume a paused JOB.")


@cli.command()
@common
@click.argument("job")
@click.argument("frames", required=False)
@click.option(
    "--from-check",
    is_flag=True,
    help="Retry the frames `peerfarm check JOB` finds missing or damaged (run it on the "
    "submitting peer).",
)
def retry(
    data_dir: Path | None, as_json: bool, job: str, frames: str | None, from_check: bool
) -> None:
    """Retry JOB's failed frames, or the FRAMES given (e.g. 3,7-9), or --from-check."""
    from peerfarm.cli.views import retry_text

    if frames is not None and from_check:
        raise click.UsageError("give FRAMES or --from-check, not both")
    if frames is not None:
        parse_frames(frames)
    with connect(data_dir) as client:
        if from_check:
            frames = client.check(job)["frames"]
            if not frames:
                if as_json:
                    print_json({"job": job, "action": "retry", "changed": 0, "frames": 0})
                else:
                    click.echo(f"retry: {job}: check found nothing missing or damaged")
                return
        result = client.act(job, "retry", frames)
    print_json(result) if as_json else click.echo(retry_text(job, result))


@cli.command()
@common
@click.argument("job")
def check(data_dir: Path | None, as_json: bool, job: str) -> int:
    """List JOB's delivered files that are missing or damaged (on the submitting peer).

    Exits 1 when it finds any; `peerfarm retry JOB --from-check` renders those frames again."""
    with connect(data_dir) as client:
        result = client.check(job)
    if as_json:
        print_json(result)
    else:
        for problem in result["problems"]:
            click.echo(
                f"frame {problem['frame']}: {printable(problem['file'])}: {problem['problem']}"
            )
        found = len({p["frame"] for p in result["problems"]})
        click.echo(
            f"check: {result['checked']} delivered frame(s) checked, "
            + (f"{found} to retry: {result['frames']}" if found else "all intact")
        )
    return EXIT_FAILED if result["problems"] else EXIT_OK


@cli.command()
@common
@click.argument("job")
@click.argument("frame", type=int)
def logs(data_dir: Path | None, as_json: bool, job: str, frame: int) -> None:
    """A frame's state, attempts and the tail of its renderer's log."""
    from peerfarm.cli.views import logs_lines, plain

    with connect(data_dir) as client:
        data = client.logs(job, frame)
    if as_json:
        print_json(data)
        return
    out = console()
    for kind, text in logs_lines(data):
        if kind == "rule":
            out.rule(plain(text))
        else:
            out.print(printable(text, keep_newlines=kind == "block"), markup=False)


@cli.command()
@common
@click.argument("job")
@click.argument("dest", required=False, type=click.Path(file_okay=False, path_type=Path))
def fetch(data_dir: Path | None, as_json: bool, job: str, dest: Path | None) -> None:
    """Copy JOB's finished frames into DEST (default ./peerfarm-out/<name>)."""
    from peerfarm.cli.views import fetch_text

    with connect(data_dir) as client:
        if dest is None:  # a job's name is anyone's text: one plain folder name made of it
            name = client.status(job, SUMMARY_ONLY)["jobs"][0]["name"]
            dest = Path("peerfarm-out") / folder_name(name)
        result = client.fetch(job, dest.expanduser().absolute())
    print_json(result) if as_json else click.echo(fetch_text(result))


@cli.command()
@common
@click.argument("job")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--fps", type=click.FloatRange(min=0, min_open=True), default=None)
def encode(data_dir: Path | None, as_json: bool, job: str, out: Path, fps: float | None) -> None:
    """Encode JOB's finished frames into the video OUT (.mp4)."""
    from peerfarm.cli.views import encode_text

    with connect(data_dir) as client:
        result = client.encode(job, out.expanduser().absolute(), fps)
    print_json(result) if as_json else click.echo(encode_text(result))
