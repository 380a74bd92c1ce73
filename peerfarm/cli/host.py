"""The verbs about this host: ``up`` (run its peer), ``key``, ``dashboard``, ``addon`` and
``demo``.

``up`` turns its flags into :class:`peerfarm.daemon.NodeOptions` and runs the daemon in this
process; ``key`` prints the farm key; ``dashboard`` asks the local daemon for a one-time login
link; ``addon`` writes the Blender add-on's zip (:mod:`peerfarm.addon`); ``demo`` runs
:mod:`peerfarm.demo`.
"""

from __future__ import annotations

import os
import socket
import webbrowser
from pathlib import Path

import click

from peerfarm.cli.app import cli, common, connect, print_json
from peerfarm.cli.parsing import parse_hostport, parse_size
from peerfarm.client import ENV_KEY, load_farm_key, resolve_data_dir
from peerfarm.errors import UsageError
from peerfarm.frames import parse_frames
from peerfarm.gossip.crypto import encode_key

#: ``up --web`` default host (the port is the daemon's default web port).
DEFAULT_WEB_HOST = "127.0.0.1"
PRESETS = ("lan", "wan", "fast")


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
    "--stuck-after",
    type=click.FloatRange(min=0),
    default=600.0,
    show_default=True,
    metavar="SECONDS",
    help="Stop and retry elsewhere a render with no output and no CPU time for this long "
    "(0: never).",
)
@click.option(
    "--notify-grace",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    metavar="SECONDS",
    help="How long another peer waits for an absent submitter before it sends a job's "
    "--notify in its place.",
)
@click.option(
    "--blender",
    "blender",
    multiple=True,
    metavar="PATH",
    help="A Blender program to use (repeat for several; PATH, the usual install places and "
    "bpy are searched too).",
)
@click.option(
    "--schedule",
    default=None,
    metavar="SPEC",
    help="Local hours to take new work, e.g. 'Mon-Fri 19:00-08:00, Sat-Sun' (default: always).",
)
@click.option(
    "--when-idle",
    type=click.FloatRange(min=0),
    default=None,
    metavar="MINUTES",
    help="Take work only after the desktop was idle this long; hand frames back when the "
    "user returns.",
)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Render threads at most.")
@click.option(
    "--nice/--no-nice",
    default=None,
    help="Render at a lower priority (default: on when a desktop session is found).",
)
@click.option(
    "--max-memory",
    default=None,
    metavar="SIZE",
    help="e.g. 8G: refuse jobs whose frames peaked above it; stop renders that go over it.",
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
    stuck_after: float,
    notify_grace: float,
    blender: tuple[str, ...],
    schedule: str | None,
    when_idle: float | None,
    threads: int | None,
    nice: bool | None,
    max_memory: str | None,
    verbose: bool,
) -> int:
    """Run this host's peer (until Ctrl-C or SIGTERM)."""
    if web is not None and no_web:
        raise UsageError("--web and --no-web exclude each other")
    from peerfarm.scheduler.availability import Schedule

    parsed_schedule = Schedule.parse(schedule) if schedule is not None else None
    memory_cap = parse_size(max_memory) if max_memory else None
    if max_memory and not memory_cap:
        raise UsageError(f"bad --max-memory {max_memory!r}: write e.g. 8G")
    # Imported here: the daemon (gossip, renderers, the HTTP server) takes ~0.2 s to import,
    # more than the rest of the CLI, and no other verb needs it.
    from peerfarm import daemon

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
        stuck_after=stuck_after,
        notify_grace=notify_grace,
        blender=list(blender),
        schedule=parsed_schedule,
        when_idle=when_idle * 60 if when_idle is not None else None,
        threads=threads,
        nice=nice,
        max_memory=memory_cap,
        verbose=verbose,
    )
    return daemon.run_daemon(options)


@cli.command()
@common
@click.argument("path", type=click.Path(path_type=Path), default=Path("."))
def addon(data_dir: Path | None, as_json: bool, path: Path) -> None:
    """Write the Blender add-on zip at PATH (a folder: peerfarm_blender.zip in it)."""
    from peerfarm.addon import write_zip

    try:
        written = write_zip(path.expanduser().absolute())
    except OSError as exc:
        raise UsageError(f"cannot write the add-on to {path}: {exc.strerror or exc}") from None
    if as_json:
        print_json({"zip": str(written)})
    else:
        click.echo(str(written))
        click.echo(
            "Install it in Blender: Edit > Preferences > Get Extensions > Install from Disk "
            "(4.2+), or Add-ons > Install (older); the panel is in Output properties.",
            err=True,
        )


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
@click.option("--open", "open_browser", is_flag=True, help="Open the link in a web browser.")
def dashboard(data_dir: Path | None, as_json: bool, open_browser: bool) -> None:
    """Print a one-time login link to this peer's dashboard (actions need a login)."""
    with connect(data_dir) as client:
        link = client.login_link()
    if as_json:
        print_json(link)
    else:
        minutes = int(link["expires_in"]) // 60
        click.echo(link["url"])
        click.echo(f"(works once, within {minutes} minutes)", err=True)
    if open_browser and not webbrowser.open(link["url"]):
        raise UsageError("no web browser found: open the link above by hand")


@cli.command()
@common
@click.option("--frames", default="1-48", show_default=True, help="Frames to render.")
@click.option("--keep", is_flag=True, help="Keep the peers' temporary data dirs.")
def demo(data_dir: Path | None, as_json: bool, frames: str, keep: bool) -> int:
    """Start 3 peers on loopback, render the example scene, write frames and an mp4."""
    # Imported here: the demo looks for Blenders through the renderer plugins (~0.1 s to
    # import), which only this verb needs.
    from peerfarm.demo import run_demo

    parse_frames(frames)
    return run_demo(
        frames=frames, out_root=Path("peerfarm-out").absolute(), keep=keep, as_json=as_json
    )
