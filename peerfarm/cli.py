"""The ``peerfarm`` command line: a thin layer of click and rich over the control API.

This module owns argument parsing, what each verb prints, and exit codes. Every verb but ``up``,
``key`` and ``demo`` talks to the local daemon only through ``peerfarm.client`` (the same HTTP
API the dashboard uses). Rules:

- Exit codes: 0 ok, 1 a job failed (``submit --wait``) or an operation failed on the daemon,
  2 a usage error, 3 no daemon / unreachable / refused, 130 interrupted.
- Every user mistake is one line on stderr and never a traceback; an unexpected error is one
  line plus a hint to run with ``--verbose``.
- ``--json`` output is exactly what the API returned (keys are only ever added).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from peerfarm import __version__
from peerfarm.client import (
    ENV_KEY,
    FarmClient,
    load_farm_key,
    resolve_data_dir,
)
from peerfarm.errors import ControlError, PeerfarmError, UsageError
from peerfarm.files.names import folder_name
from peerfarm.frames import parse_frames
from peerfarm.gossip.crypto import encode_key
from peerfarm.plaintext import printable

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NO_DAEMON = 3
EXIT_INTERRUPTED = 130

#: Seconds between polls of ``submit --wait`` and ``status --watch``.
POLL_INTERVAL_S = 0.5
#: ``up --web`` default host (the port is the node's default web port).
DEFAULT_WEB_HOST = "127.0.0.1"
PRESETS = ("lan", "wan", "fast")
RENDERERS = ("blender", "povray", "command")
_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1024, "kib": 1024, "kb": 1000,
    "m": 1024**2, "mib": 1024**2, "mb": 1000**2,
    "g": 1024**3, "gib": 1024**3, "gb": 1000**3,
    "t": 1024**4, "tib": 1024**4, "tb": 1000**4,
}  # fmt: skip

F = TypeVar("F", bound=Callable[..., Any])
_STATE_STYLE = {"alive": "green", "suspect": "yellow", "dead": "red", "left": "dim"}


# --- parsing helpers (pure) ------------------------------------------------------------------


def parse_hostport(text: str, default_port: int) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT``, ``HOST`` (default port) or ``:PORT`` (all interfaces)."""
    value = text.strip()
    host, port_text = value, ""
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise UsageError(f"bad address {text!r}: missing ']'")
        host, rest = value[1:end], value[end + 1 :]
        if rest and not rest.startswith(":"):
            raise UsageError(f"bad address {text!r}: expected [HOST]:PORT")
        port_text = rest[1:]
    elif value.count(":") == 1:
        host, port_text = value.split(":")
    if not port_text:
        port = default_port
    elif port_text.isdigit() and int(port_text) <= 65535:
        port = int(port_text)
    else:
        raise UsageError(f"bad port in {text!r}: use HOST:PORT with a port from 0 to 65535")
    return host or "0.0.0.0", port


def parse_size(text: str) -> int:
    """Bytes from ``500M``, ``10G``, ``10GiB`` (binary) or ``10GB`` (decimal), or plain bytes."""
    value = text.strip().lower().replace(" ", "")
    number = value.rstrip("kmgtib")
    unit = value[len(number) :]
    try:
        amount = float(number)
    except ValueError:
        raise UsageError(f"bad size {text!r}: write e.g. 500M, 20G or 1T") from None
    if unit not in _SIZE_UNITS or amount < 0:
        raise UsageError(f"bad size {text!r}: write e.g. 500M, 20G or 1T")
    return int(amount * _SIZE_UNITS[unit])


def parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; a value is JSON when it parses (numbers, true), else text."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"bad --option {pair!r}: write KEY=VALUE (e.g. width=640)")
        try:  # NaN and Infinity stay text: JSON has no such numbers
            options[key.strip()] = json.loads(value, parse_constant=_no_constant)
        except (ValueError, RecursionError):
            options[key.strip()] = value
    return options


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def check_scene(path: Path) -> Path:
    """The scene made absolute; ``UsageError`` if it is missing or unreadable."""
    scene = path.expanduser().absolute()
    if not scene.exists():
        raise UsageError(f"scene not found: {scene}")
    if not os.access(scene, os.R_OK) or (scene.is_dir() and not os.access(scene, os.X_OK)):
        raise UsageError(f"scene is not readable: {scene}")
    return scene


def check_renderer(scene: Path, renderer: str | None) -> None:
    """``UsageError`` unless ``renderer`` is known, or (when None) the scene's type is."""
    if renderer is not None:
        if renderer not in RENDERERS:
            raise UsageError(f"unknown renderer {renderer!r}: choose one of {', '.join(RENDERERS)}")
        return
    from peerfarm.renderers import renderer_for_scene  # imported late: only submit needs it

    renderer_for_scene(scene)


def short_id(job_id: str) -> str:
    return job_id[:10]


def format_eta(seconds: Any) -> str:
    if not isinstance(seconds, int | float) or seconds < 0:
        return "-"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_renderers(value: Any) -> str:
    """A peer's renderers, whatever the shape: {name: version}, [name], [{name, version}].

    A version may be a list (every installed Blender): ``blender 3.4.1/5.0.1``.
    """
    if isinstance(value, dict):
        return ", ".join(
            f"{name} {_versions_text(version)}".strip() for name, version in value.items()
        )
    if isinstance(value, list):
        parts = []
        for item in value:
            if isinstance(item, dict):
                parts.append(f"{item.get('name', '?')} {item.get('version', '')}".strip())
            else:
                parts.append(str(item))
        return ", ".join(parts)
    return "" if value is None else str(value)


def _versions_text(version: Any) -> str:
    if isinstance(version, list):
        return "/".join(str(v) for v in version)
    return "" if version is None else str(version)


def waiting_lines(job: dict[str, Any], *, every_peer: bool = False) -> list[str]:
    """What to say under a job about why it waits (nothing when it does not).

    ``blocked`` (no peer can ever take it) always shows; the per-peer reasons show when nothing
    of the job renders, or always with ``every_peer`` (``status JOB``).
    """
    lines = []
    blocked = job.get("blocked")
    waiting = job.get("waiting") or {}
    if blocked:
        lines.append(f"waits: {blocked}")
    if isinstance(waiting, dict) and waiting:
        if every_peer:
            lines += [f"{peer}: {reason}" for peer, reason in waiting.items()]
        elif not blocked and not job.get("frames_rendering"):
            lines.append("waits: " + "; ".join(f"{p}: {r}" for p, r in waiting.items()))
    return lines


def format_rendering(value: Any) -> str:
    if not value:
        return "-"
    if isinstance(value, list):
        return ", ".join(
            f"{item.get('job_name') or item.get('job', '?')}:{item.get('frame', '?')}"
            if isinstance(item, dict)
            else str(item)
            for item in value
        )
    return str(value)


def job_finished(job: dict[str, Any]) -> bool:
    if job.get("state") in ("done", "failed", "cancelled"):
        return True
    total = int(job.get("frames_total", 0))
    return total > 0 and int(job.get("frames_done", 0)) + int(job.get("frames_failed", 0)) >= total


def job_succeeded(job: dict[str, Any]) -> bool:
    return job.get("state") == "done" or (
        job.get("state") not in ("failed", "cancelled")
        and int(job.get("frames_failed", 0)) == 0
        and int(job.get("frames_done", 0)) >= int(job.get("frames_total", 0))
    )


# --- human output (pure: data -> rich renderables) -------------------------------------------
# Text from the farm (names, errors, logs) is never Rich markup: it goes in as ``Text``, with
# control characters escaped (``peerfarm.plaintext``).


def plain(value: Any, style: str = "") -> Text:
    """Farm text as a table cell: no markup, no escape sequences."""
    return Text(printable("" if value is None else value), style=style)


def state_cell(state: str) -> Text:
    return plain(state, _STATE_STYLE.get(state, "white"))


def peers_table(peers: list[dict[str, Any]]) -> Table:
    table = Table(title="Peers", title_justify="left")
    for column in ("name", "address", "state", "slots", "busy", "renderers", "rendering"):
        table.add_column(column)
    for peer in peers:
        table.add_row(
            plain(peer.get("name", "?")),
            plain(peer.get("address", "")),
            state_cell(str(peer.get("state", "?"))),
            plain(peer.get("slots", "")),
            plain(peer.get("busy", "")),
            plain(format_renderers(peer.get("renderers"))),
            plain(format_rendering(peer.get("rendering"))),
        )
    return table


def peer_details(peers: list[dict[str, Any]]) -> RenderableType:
    """One block per peer (like Buildcat's worker-info): readable at any terminal width."""
    blocks: list[RenderableType] = []
    for peer in peers:
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column()
        grid.add_row(plain(peer.get("name", "?")), state_cell(str(peer.get("state", "?"))))
        rows = [
            ("address", peer.get("address")),
            ("host", peer.get("host")),
            ("os", peer.get("os")),
            ("python", peer.get("python")),
            ("peerfarm", peer.get("peerfarm")),
            ("renderers", format_renderers(peer.get("renderers")) or "-"),
            ("slots", f"{peer.get('busy', 0)} busy of {peer.get('slots', '?')}"),
            ("rendering", format_rendering(peer.get("rendering"))),
            ("tags", ", ".join(peer.get("tags") or []) or "-"),
        ]
        for label, value in rows:
            grid.add_row(label, plain("-" if value is None else value))
        blocks.append(grid)
        blocks.append(Text(""))
    return Group(*blocks)


def jobs_table(jobs: list[dict[str, Any]]) -> Table:
    table = Table(title="Jobs", title_justify="left")
    for column in ("id", "name", "state", "progress", "done", "failed", "rendering", "ETA"):
        table.add_column(column)
    for job in jobs:
        total = int(job.get("frames_total", 0)) or 1
        done = int(job.get("frames_done", 0))
        table.add_row(
            plain(short_id(str(job.get("id", "")))),
            plain(job.get("name", "")),
            plain(job.get("state", "")),
            ProgressBar(total=total, completed=done, width=24),
            f"{done}/{job.get('frames_total', 0)}",
            str(job.get("frames_failed", 0)),
            str(job.get("frames_rendering", 0)),
            format_eta(job.get("eta_seconds")),
        )
    return table


def frames_table(frames: list[dict[str, Any]], limit: int = 60) -> Table:
    """Frames of one job; when there are many, the ones not done come first."""
    shown = frames if len(frames) <= limit else [f for f in frames if f.get("state") != "done"]
    table = Table(title=f"Frames ({len(shown)} of {len(frames)} shown)", title_justify="left")
    for column in ("frame", "state", "peer", "attempts", "seconds", "delivered", "error"):
        table.add_column(column)
    for frame in shown[:limit]:
        seconds = frame.get("seconds")
        table.add_row(
            plain(frame.get("frame")),
            plain(frame.get("state")),
            plain(frame.get("peer") or "-"),
            plain(frame.get("attempts", 0)),
            f"{seconds:.1f}" if isinstance(seconds, int | float) else "-",
            "yes" if frame.get("delivered") else "no",
            plain(frame.get("error") or ""),
        )
    return table


def waiting_text(jobs: list[dict[str, Any]], *, every_peer: bool = False) -> Text | None:
    """The lines under the jobs table saying why jobs wait, or None when none does."""
    text = Text()
    for job in jobs:
        lines = waiting_lines(job, every_peer=every_peer)
        if not lines:
            continue
        style = "yellow" if job.get("blocked") else "dim"
        name = printable(f"{job.get('name', '')} ({short_id(str(job.get('id', '')))})")
        text.append(f"{name}\n", style="bold")
        for line in lines:
            text.append(f"  {printable(line)}\n", style=style)
    return text if text.plain else None


def status_view(status: dict[str, Any]) -> RenderableType:
    parts: list[RenderableType] = [peers_table(status.get("peers", []))]
    parts.append(jobs_table(status.get("jobs", [])))
    if (waits := waiting_text(status.get("jobs", []), every_peer="frames" in status)) is not None:
        parts.append(waits)
    if "frames" in status:
        parts.append(frames_table(status["frames"]))
    return Group(*parts)


# --- plumbing ------------------------------------------------------------------------------


def _console(err: bool = False) -> Console:
    return Console(
        file=sys.stderr if err else sys.stdout, highlight=False, emoji=False, soft_wrap=True
    )


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))


def common(func: F) -> F:
    """``--data-dir`` and ``--json``, accepted by every verb."""
    func = click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help=f"The daemon's data dir (default: ${'PEERFARM_DATA_DIR'}, else the user data dir).",
    )(func)
    func = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(func)
    return func


@contextmanager
def _client(data_dir: Path | None) -> Iterator[FarmClient]:
    client = FarmClient.connect(resolve_data_dir(data_dir))
    try:
        yield client
    finally:
        client.close()


def _exit_code(exc: BaseException) -> int:
    if isinstance(exc, UsageError):
        return EXIT_USAGE
    if isinstance(exc, ControlError):
        return EXIT_NO_DAEMON
    return EXIT_FAILED


class _Cli(click.Group):
    """The ``peerfarm`` group: runs a verb and turns every error into one line + exit code."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> int:
        argv = list(sys.argv[1:] if args is None else args)
        verbose = "--verbose" in argv or "-v" in argv
        code = _run_guarded(
            lambda: super(_Cli, self).main(
                argv, prog_name or "peerfarm", complete_var, standalone_mode=False, **extra
            ),
            verbose,
        )
        if standalone_mode:
            sys.exit(code)
        return code


def _run_guarded(run: Callable[[], Any], verbose: bool) -> int:
    err = _console(err=True)
    try:
        result = run()
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        err.print(f"peerfarm: {exc.format_message()}", markup=False)
        return EXIT_USAGE if isinstance(exc, click.UsageError) else exc.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        err.print("peerfarm: interrupted", markup=False)
        return EXIT_INTERRUPTED
    except PeerfarmError as exc:
        if verbose:
            err.print_exception()
        err.print(f"peerfarm: {printable(exc)}", markup=False)
        return _exit_code(exc)
    except Exception as exc:  # the last line of defence: one line, details on request
        if verbose:
            err.print_exception()
        err.print(
            f"peerfarm: unexpected error: {type(exc).__name__}: {printable(exc)}", markup=False
        )
        if not verbose:
            err.print("run with --verbose for details", markup=False)
        return EXIT_FAILED
    return result if isinstance(result, int) else EXIT_OK


# --- the verbs -----------------------------------------------------------------------------


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="peerfarm")
@click.option("-v", "--verbose", is_flag=True, help="Show details of unexpected errors.")
def cli(verbose: bool) -> None:
    """A render farm with no server: every host runs `peerfarm up`."""


@cli.command()
@common
@click.option("--name", default=None, help="This peer's name (default: the host name).")
@click.option("--listen", default=None, metavar="HOST:PORT", help="Gossip address.")
@click.option("--join", "joins", multiple=True, metavar="HOST:PORT", help="Seed peer (repeat).")
@click.option("--interface", "interfaces", multiple=True, metavar="IP", help="mDNS interface.")
@click.option("--no-mdns", is_flag=True, help="Do not use mDNS (rely on --join).")
@click.option("--slots", type=click.IntRange(min=0), default=1, show_default=True)
@click.option("--tags", default="", metavar="T,...", help="Tags jobs can ask for.")
@click.option("--web", default=None, metavar="HOST:PORT", help="Dashboard address.")
@click.option("--no-web", is_flag=True, help="Serve no dashboard.")
@click.option("--web-public", is_flag=True, help="Let anyone view the dashboard (read-only).")
@click.option("--allow-command", is_flag=True, help="Take jobs of the command renderer.")
@click.option("--allow-scripts", is_flag=True, help="Let Python inside .blend files run.")
@click.option("--key-file", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--preset", type=click.Choice(PRESETS), default="lan", show_default=True)
@click.option("--shared-root", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--store-limit", default=None, metavar="SIZE", help="e.g. 20G")
@click.option("--frame-timeout", type=click.FloatRange(min=0, min_open=True), default=None)
@click.option(
    "--blender",
    "blender",
    multiple=True,
    metavar="PATH",
    help="A Blender program to use (repeat for several; PATH, the usual install places and "
    "bpy are searched too).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log every event.")
def up(
    data_dir: Path | None,
    as_json: bool,
    name: str | None,
    listen: str | None,
    joins: tuple[str, ...],
    interfaces: tuple[str, ...],
    no_mdns: bool,
    slots: int,
    tags: str,
    web: str | None,
    no_web: bool,
    web_public: bool,
    allow_command: bool,
    allow_scripts: bool,
    key_file: Path | None,
    preset: str,
    shared_root: Path | None,
    store_limit: str | None,
    frame_timeout: float | None,
    blender: tuple[str, ...],
    verbose: bool,
) -> int:
    """Run this host's peer (until Ctrl-C or SIGTERM)."""
    if web is not None and no_web:
        raise UsageError("--web and --no-web exclude each other")
    from peerfarm import daemon  # imported late: the other verbs never need it

    port = daemon.DEFAULT_PORT
    directory = resolve_data_dir(data_dir)
    if key_file is None and os.environ.get(ENV_KEY):
        load_farm_key(directory)  # a malformed $PEERFARM_KEY fails here, as one line
    options = daemon.NodeOptions(
        data_dir=directory,
        name=name or socket.gethostname(),
        listen=parse_hostport(listen, port) if listen else ("0.0.0.0", port),
        joins=[parse_hostport(j, port) for j in joins],
        interfaces=list(interfaces),
        mdns=not no_mdns,
        slots=slots,
        tags=[t.strip() for t in tags.split(",") if t.strip()],
        web=None if no_web else parse_hostport(web or DEFAULT_WEB_HOST, daemon.DEFAULT_WEB_PORT),
        web_public=web_public,
        allow_command=allow_command,
        allow_scripts=allow_scripts,
        key_file=key_file.absolute() if key_file else None,
        preset=preset,
        shared_root=shared_root.absolute() if shared_root else None,
        store_limit=parse_size(store_limit) if store_limit else None,
        frame_timeout=frame_timeout,
        blender=list(blender),
        verbose=verbose,
    )
    return daemon.run_daemon(options)


@cli.command()
@common
@click.option("--key-file", type=click.Path(dir_okay=False, path_type=Path), default=None)
def key(data_dir: Path | None, as_json: bool, key_file: Path | None) -> None:
    """Print the farm key (base64): give it to other hosts to join this farm."""
    directory = resolve_data_dir(data_dir)
    text = encode_key(load_farm_key(directory, key_file))
    if as_json:
        print_json({"key": text})
    else:
        click.echo(text)


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
    wait: bool,
) -> int:
    """Submit SCENE for FRAMES (e.g. 1-240, 1,5,10-20x2); prints the job id."""
    parse_frames(frames)
    absolute = check_scene(scene)
    check_renderer(absolute, renderer)
    fields: dict[str, Any] = {
        "scene": str(absolute),
        "frames": frames,
        "renderer": renderer,
        "chunk": chunk,
        "priority": priority,
        "name": name,
        "output": str(output.expanduser().absolute()) if output else None,
        "cwd": str(Path.cwd()),
        "options": parse_options(option_pairs),
        "encode": str(encode.expanduser().absolute()) if encode else None,
        "fps": fps,
        "retries": retries,
        "allow_scripts": allow_scripts,
        "overwrite": overwrite or None,
    }
    with _client(data_dir) as client:
        result = client.submit({k: v for k, v in fields.items() if v is not None})
        if result.get("warning"):
            warning = printable(result["warning"])
            _console(err=True).print(f"peerfarm: warning: {warning}", markup=False)
        if not wait:
            print_json(result) if as_json else click.echo(result["job"])
            return EXIT_OK
        if not as_json:
            click.echo(result["job"])
        job = wait_for_job(client, str(result["job"]), quiet=as_json)
    if as_json:
        print_json({**result, "final": job})
    return EXIT_OK if job_succeeded(job) else EXIT_FAILED


def wait_for_job(
    client: FarmClient, job_id: str, *, quiet: bool, give_up_after: float | None = None
) -> dict[str, Any]:
    """Poll the job until it finishes, with a progress bar (and ETA) unless ``quiet``.

    When no peer can render the job, the reason is printed (again when it changes). With
    ``give_up_after``, returns early (the job still has ``blocked`` set) once no peer could
    render it for that many seconds.
    """
    columns = (
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("failed {task.fields[failed]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=_console(err=True), disable=quiet, transient=False) as bar:
        task = bar.add_task("waiting", total=None, failed=0)
        said = ""
        blocked_since: float | None = None
        while True:
            job = client.status(job_id)["jobs"][0]
            bar.update(
                task,
                description=printable(job.get("name", job_id)),
                total=job.get("frames_total") or None,
                completed=int(job.get("frames_done", 0)),
                failed=job.get("frames_failed", 0),
            )
            if job_finished(job):
                return dict(job)
            blocked = job.get("blocked")
            if blocked and blocked != said and not quiet:
                bar.console.print(
                    printable(f"{job.get('name', job_id)} waits: {blocked}"), markup=False
                )
            said = blocked or said
            if blocked:
                blocked_since = time.monotonic() if blocked_since is None else blocked_since
                if give_up_after is not None and time.monotonic() - blocked_since > give_up_after:
                    return dict(job)
            else:
                blocked_since = None
            time.sleep(POLL_INTERVAL_S)


@cli.command()
@common
@click.argument("job", required=False)
@click.option("--watch", is_flag=True, help="Refresh live until Ctrl-C.")
def status(data_dir: Path | None, as_json: bool, job: str | None, watch: bool) -> int:
    """The farm's peers and jobs, or one JOB (id, unique prefix, or name) with its frames."""
    with _client(data_dir) as client:
        if watch and not as_json:
            return watch_status(client, job)
        data = client.status(job)
        if as_json:
            print_json(data)
        else:
            _console().print(status_view(data))
    return EXIT_OK


def watch_status(
    client: FarmClient,
    job: str | None,
    *,
    interval: float = 1.0,
    rounds: int | None = None,
    console: Console | None = None,
) -> int:
    """Redraw the status every ``interval`` seconds until Ctrl-C (or ``rounds`` redraws)."""
    count = 0
    try:
        with Live(console=console or _console(), auto_refresh=False) as live:
            while rounds is None or count < rounds:
                live.update(status_view(client.status(job)), refresh=True)
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
    with _client(data_dir) as client:
        data = client.peers()
    if as_json:
        print_json(data)
    else:
        _console().print(peer_details(data.get("peers", [])))


def _action(name: str, help_text: str) -> None:
    @cli.command(name=name, help=help_text)
    @common
    @click.argument("job")
    def command(data_dir: Path | None, as_json: bool, job: str) -> None:
        with _client(data_dir) as client:
            result = client.act(job, name)
        if as_json:
            print_json(result)
        else:
            click.echo(f"{name}: {job} ({result.get('state', 'ok')})")


_action("cancel", "Cancel JOB: its renders stop on every peer.")
_action("pause", "Pause JOB: no new frames start until resume.")
_action("resume", "Resume a paused JOB.")


@cli.command()
@common
@click.argument("job")
@click.argument("frames", required=False)
def retry(data_dir: Path | None, as_json: bool, job: str, frames: str | None) -> None:
    """Retry JOB's failed frames, or the FRAMES given."""
    if frames is not None:
        parse_frames(frames)
    with _client(data_dir) as client:
        result = client.act(job, "retry", frames)
    if as_json:
        print_json(result)
    else:
        click.echo(f"retry: {job}: {result.get('frames', '?')} frame(s) queued again")


@cli.command()
@common
@click.argument("job")
@click.argument("frame", type=int)
def logs(data_dir: Path | None, as_json: bool, job: str, frame: int) -> None:
    """A frame's state, attempts and the tail of its renderer's log."""
    with _client(data_dir) as client:
        data = client.logs(job, frame)
    if as_json:
        print_json(data)
        return
    console = _console()
    console.print(
        printable(f"frame {data.get('frame')}: {data.get('state')} on {data.get('peer') or '-'}"),
        markup=False,
    )
    for line in waiting_lines(data, every_peer=True):
        console.print(printable(line), markup=False)
    if data.get("progress"):
        console.print(f"progress: {printable(data['progress'])}", markup=False)
    for attempt in data.get("attempts", []):
        console.rule(plain(f"attempt {attempt.get('attempt')} on {attempt.get('peer')}"))
        if attempt.get("error"):
            console.print(f"error: {printable(attempt['error'])}", markup=False)
        tail = printable(attempt.get("log_tail") or "(no output)", keep_newlines=True)
        console.print(tail, markup=False)


@cli.command()
@common
@click.argument("job")
@click.argument("dest", required=False, type=click.Path(file_okay=False, path_type=Path))
def fetch(data_dir: Path | None, as_json: bool, job: str, dest: Path | None) -> None:
    """Copy JOB's finished frames into DEST (default ./peerfarm-out/<name>)."""
    with _client(data_dir) as client:
        if dest is None:  # a job's name is anyone's text: one plain folder name made of it
            name = client.status(job)["jobs"][0]["name"]
            dest = Path("peerfarm-out") / folder_name(str(name))
        result = client.fetch(job, dest.expanduser().absolute())
    if as_json:
        print_json(result)
    else:
        click.echo(f"{result.get('files', '?')} file(s) in {printable(result.get('dest', dest))}")


@cli.command()
@common
@click.argument("job")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--fps", type=click.FloatRange(min=0, min_open=True), default=None)
def encode(data_dir: Path | None, as_json: bool, job: str, out: Path, fps: float | None) -> None:
    """Encode JOB's finished frames into the video OUT (.mp4)."""
    with _client(data_dir) as client:
        result = client.encode(job, out.expanduser().absolute(), fps)
    print_json(result) if as_json else click.echo(str(result.get("out", out)))


@cli.command()
@common
@click.option("--open", "open_browser", is_flag=True, help="Open the link in a web browser.")
def dashboard(data_dir: Path | None, as_json: bool, open_browser: bool) -> None:
    """Print a one-time login link to this peer's dashboard (actions need a login)."""
    with _client(data_dir) as client:
        link = client.login_link()
    if as_json:
        print_json(link)
    else:
        minutes = int(link["expires_in"]) // 60
        click.echo(link["url"])
        click.echo(f"(works once, within {minutes} minutes)", err=True)
    if open_browser:
        import webbrowser  # imported late: only this flag needs it

        if not webbrowser.open(link["url"]):
            raise UsageError("no web browser found: open the link above by hand")


@cli.command()
@common
@click.option("--frames", default="1-48", show_default=True, help="Frames to render.")
@click.option("--keep", is_flag=True, help="Keep the peers' temporary data dirs.")
def demo(data_dir: Path | None, as_json: bool, frames: str, keep: bool) -> int:
    """Start 3 peers on loopback, render the example scene, write frames and an mp4."""
    from peerfarm.demo import run_demo

    parse_frames(frames)
    return run_demo(
        frames=frames, out_root=Path("peerfarm-out").absolute(), keep=keep, as_json=as_json
    )


def main(argv: Sequence[str] | None = None) -> int:
    """The console script ``peerfarm``: returns the exit status."""
    return int(cli.main(argv, prog_name="peerfarm", standalone_mode=False))
