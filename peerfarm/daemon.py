"""``peerfarm up``: build a node from real parts and run it until Ctrl-C or SIGTERM.

Owns the data dir layout (node id, incarnation, farm key, ledger database, content store,
control file), the choice of the advertised address, logging, the mDNS bridge, the control API
server, and the graceful stop. Everything else is :mod:`peerfarm.peer`.

Data dir::

    node_id        this peer's id (16 hex), kept across restarts
    incarnation    the last SWIM incarnation used (a restart starts above it)
    farm.key       the farm key, base64, mode 0600 (unless --key-file / PEERFARM_KEY)
    ledger.db      the replica (SQLite, WAL)
    store/         content-addressed files (scenes, outputs)
    work/          renders in progress
    control.json   the local control API's URL and token, mode 0600 (while running)
    renders.pids   renderer process groups running now (ended at the next start after a crash)
"""

from __future__ import annotations

import functools
import logging
import os
import random
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from . import PROTOCOL_VERSION, __version__, platform
from .api.access import Sessions
from .api.app import create_app
from .api.server import serve_http
from .client import ENV_DATA_DIR, dashboard_url, write_control_file
from .errors import PeerfarmError, UsageError
from .farm import Farm
from .files.store import ContentStore
from .gossip import adapters
from .gossip.config import GossipConfig
from .gossip.crypto import Keyring, decode_key, load_key_file, load_or_create_key_file
from .gossip.discovery import Discovery, DiscoveryUnavailable, PeerFound
from .gossip.membership import MemberState
from .gossip.net import open_transport
from .ledger.store import LedgerStore
from .peer import Node, NodeParts
from .peer.idle import has_desktop_session
from .plaintext import PlainFormatter
from .renderers import BlenderRenderer, available_renderers, groups
from .renderers.base import Renderer
from .renderers.devices import detect as cycles_devices
from .scheduler.availability import Schedule

log = logging.getLogger("peerfarm")

DEFAULT_PORT = 7946
DEFAULT_WEB_PORT = 7947
RENDER_GROUPS = "renders.pids"  # data dir file: renderer process groups now running
#: Seconds a starting peer listens (mDNS answers, push-pull) before it claims its first frame.
STARTUP_SETTLE = 2.0


@dataclass
class NodeOptions:
    """Everything ``peerfarm up`` takes (see ``peerfarm up --help``)."""

    data_dir: Path
    name: str = ""
    listen: tuple[str, int] = ("0.0.0.0", DEFAULT_PORT)
    joins: list[tuple[str, int]] = field(default_factory=list)
    interfaces: list[str] = field(default_factory=list)
    mdns: bool = True
    slots: int = 1
    tags: list[str] = field(default_factory=list)
    web: tuple[str, int] | None = ("127.0.0.1", DEFAULT_WEB_PORT)
    web_public: bool = False
    allow_command: bool = False
    allow_scripts: bool = False
    key_file: Path | None = None
    preset: str = "lan"
    shared_root: Path | None = None
    store_limit: int | None = None
    frame_timeout: float | None = None
    #: Seconds without output or CPU time before a render counts as stuck (0: never).
    stuck_after: float = 600.0
    #: Seconds another peer waits for an absent submitter before it sends a notification.
    notify_grace: float = 60.0
    #: Each ``--blender PATH``: Blender programs used beside the ones found on PATH, in the
    #: usual install locations and ``bpy``.
    blender: list[str] = field(default_factory=list)
    #: ``--schedule`` (None: always take work) and ``--when-idle`` (seconds; None: off).
    schedule: Schedule | None = None
    when_idle: float | None = None
    #: ``--threads``, ``--nice`` (None: on when a desktop session is found), ``--max-memory``.
    threads: int | None = None
    nice: bool | None = None
    max_memory: int | None = None
    verbose: bool = False


def setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    # Names in messages come from users and peers: control characters are escaped.
    handler.setFormatter(PlainFormatter("%(asctime)s %(levelname).1s %(message)s", "%H:%M:%S"))
    root = logging.getLogger("peerfarm")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


def node_id_for(data_dir: Path) -> str:
    path = data_dir / "node_id"
    try:
        text = path.read_text().strip()
        if len(text) == 16 and all(c in "0123456789abcdef" for c in text):
            return text
    except FileNotFoundError:
        pass
    node_id = secrets.token_hex(8)
    path.write_text(node_id + "\n")
    return node_id


def next_incarnation(data_dir: Path) -> int:
    path = data_dir / "incarnation"
    try:
        last = int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        last = 0
    value = max(last + 1, int(time.time()))
    path.write_text(f"{value}\n")
    return value


def load_keyring(options: NodeOptions) -> Keyring:
    """--key-file, else PEERFARM_KEY (base64; several separated by commas for rotation),
    else the data dir's farm.key (created on first start)."""
    if options.key_file is not None:
        keys = [load_key_file(options.key_file)]
    elif os.environ.get("PEERFARM_KEY"):
        keys = [decode_key(k) for k in os.environ["PEERFARM_KEY"].split(",") if k.strip()]
    else:
        keys = [load_or_create_key_file(options.data_dir / "farm.key")]
    old = options.data_dir / "farm.key.old"
    if old.exists():
        keys.append(load_key_file(old))
    return Keyring(keys)


def advertise_host(options: NodeOptions) -> str:
    host = options.listen[0]
    if host not in ("0.0.0.0", "", "::"):
        return host
    for interface in options.interfaces:
        if interface not in ("0.0.0.0", ""):
            return interface
    for address in adapters.outward(adapters.host_addresses()):  # virtual adapters last
        return address.address
    return "127.0.0.1"


def config_for(preset: str) -> GossipConfig:
    presets = {"lan": GossipConfig.lan, "wan": GossipConfig.wan, "fast": GossipConfig.fast}
    if preset not in presets:
        raise UsageError(f"unknown preset {preset!r}: choose lan, wan or fast")
    return presets[preset]()


async def detect_renderers(
    options: NodeOptions,
) -> tuple[dict[str, Renderer], dict[str, str | list[str]]]:
    """The installed renderers and what the peer advertises for each: a version, or for
    Blender with several installations the list of every version, ascending."""
    renderers = available_renderers()
    if options.blender and "blender" in renderers:
        renderers["blender"] = BlenderRenderer(executables=options.blender)
    found: dict[str, Renderer] = {}
    versions: dict[str, str | list[str]] = {}
    for name, renderer in renderers.items():
        try:
            info = await renderer.detect()
        except PeerfarmError as exc:
            log.debug("renderer %s unavailable: %s", name, exc)
            info = None
        if info is None:
            continue
        if name == "command" and not options.allow_command:
            continue
        found[name] = renderer
        if len(info.versions) > 1:  # at most 8 (installs.MAX_ADVERTISED): metadata stays small
            versions[name] = [v[:16] for v in info.versions]
        else:
            versions[name] = info.version[:32]
        if installs := info.details.get("installs"):
            log.info("%s installations: %s", name, installs)
    return found, versions


def requirement_meta(versions: dict[str, Any]) -> dict[str, Any]:
    """With Blender, the Cycles devices found (``renderers.devices``), for job requirements."""
    return {"devices": cycles_devices()} if "blender" in versions else {}


def renderers_text(versions: dict[str, str | list[str]]) -> str:
    """``blender 3.4.1/5.0.1, povray 3.7.0.10`` for the start-up log line."""
    parts = []
    for name, value in versions.items():
        shown = "/".join(value) if isinstance(value, list) else value
        parts.append(f"{name} {shown}")
    return ", ".join(parts) or "none"


async def serve(
    options: NodeOptions, *, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED
) -> None:
    data_dir = options.data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    platform.make_private(data_dir)
    options.data_dir = data_dir
    keyring = load_keyring(options)
    config = config_for(options.preset)
    node_id = node_id_for(data_dir)
    name = options.name or platform.host_name()
    ledger_store = LedgerStore(data_dir / "ledger.db")
    ledger = ledger_store.load(node_id)
    store = ContentStore(data_dir / "store", limit_bytes=options.store_limit)
    groups.configure(data_dir / RENDER_GROUPS).reap_previous()
    renderers, versions = await detect_renderers(options)
    host = advertise_host(options)
    async with open_transport(keyring, options.listen, advertise_host=host) as transport:
        parts = NodeParts(
            node_id=node_id,
            name=name,
            config=config,
            transport=transport,
            ledger=ledger,
            store=store,
            data_dir=data_dir,
            renderers=renderers,
            slots=options.slots,
            tags=options.tags,
            allow_command=options.allow_command,
            allow_scripts=options.allow_scripts,
            ledger_store=ledger_store,
            frame_timeout=options.frame_timeout,
            stuck_after=options.stuck_after,
            notify_grace=options.notify_grace,
            rng=random.Random(),
            incarnation=next_incarnation(data_dir),
            renderer_versions=versions,
            extra_meta=requirement_meta(versions),
            shared_root=(
                platform.on_disk_case(options.shared_root.resolve())
                if options.shared_root
                else None
            ),
            settle=STARTUP_SETTLE,
            schedule=options.schedule,
            when_idle=options.when_idle,
            threads=options.threads,
            nice=has_desktop_session() if options.nice is None else options.nice,
            max_memory=options.max_memory,
        )
        node = Node(parts)
        farm = Farm(node, farm_id=keyring.farm_id)
        address = "{}:{}".format(*transport.local_address)
        log.info(
            "peerfarm %s up: %s (%s) at %s, farm %s, renderers: %s",
            __version__,
            name,
            node_id[:8],
            address,
            keyring.farm_id,
            renderers_text(versions),
        )
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(node.run)
                await nursery.start(farm.run)
                if options.joins:
                    await node.join(options.joins)
                if options.mdns:
                    nursery.start_soon(_discovery, node, keyring.farm_id, options)
                await _start_api(nursery, farm, keyring, options)
                task_status.started(node)
                with trio.open_signal_receiver(*platform.graceful_signals()) as signals:
                    async for signum in signals:
                        log.info("leaving the farm (%s)", platform.signal_name(signum))
                        break
                with trio.move_on_after(5) as scope:
                    scope.shield = True
                    await node.leave()
                nursery.cancel_scope.cancel()
        finally:
            platform.remove(data_dir / "control.json")
            for renderer in renderers.values():
                with trio.move_on_after(3) as scope:
                    scope.shield = True
                    await renderer.aclose()
            ledger_store.close()
            log.info("stopped")


async def _discovery(node: Node, farm_id: str, options: NodeOptions) -> None:
    discovery = Discovery(
        node_id=node.node_id,
        farm_id=farm_id,
        name=node.name,
        port=node.transport.local_address[1],
        protocol=PROTOCOL_VERSION,
        interfaces=options.interfaces or None,
    )
    send, receive = trio.open_memory_channel[object](64)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(discovery.run, send)
            log.info(
                "mDNS: announcing and browsing %s",
                "on " + ", ".join(options.interfaces)
                if options.interfaces
                else "on all interfaces",
            )
            async for event in receive:
                if isinstance(event, PeerFound):
                    ann = event.announcement
                    known = node.membership.get(ann.node_id)
                    if known is None or known.state >= MemberState.DEAD:
                        log.info("mDNS found %s at %s:%s", ann.name, *ann.address)
                        await node.join([ann.address])
    except DiscoveryUnavailable as exc:
        log.warning("mDNS unavailable (%s): use --join HOST:PORT to find peers", exc)


async def _start_api(
    nursery: trio.Nursery, farm: Farm, keyring: Keyring, options: NodeOptions
) -> None:
    token = secrets.token_urlsafe(32)
    shutdown = trio.Event()
    upload_dir = options.data_dir / "uploads"
    upload_dir.mkdir(exist_ok=True)
    sessions = Sessions()
    app = create_app(
        farm,
        token=token,
        login_password=keyring.web_password,
        public=options.web_public,
        upload_dir=upload_dir,
        shutdown=shutdown,
        sessions=sessions,
    )
    binds = ["127.0.0.1:0"]
    if options.web is not None:
        binds = [f"{options.web[0]}:{options.web[1]}"]
        if options.web[0] not in ("127.0.0.1", "localhost"):
            binds.append("127.0.0.1:0")
    urls = await nursery.start(functools.partial(serve_http, app, binds, shutdown=shutdown))
    web = urls[0] if options.web is not None else None
    write_control_file(options.data_dir, urls[-1], token, pid=os.getpid(), web=web)
    if web is not None:
        # Actions need a session even on loopback: a one-time link gives this user one.
        link = f"{dashboard_url(web)}/?login={sessions.new_link()}"
        log.info("dashboard: %s (a one-time login link; `peerfarm dashboard` prints another)", link)


def run_daemon(options: NodeOptions) -> int:
    setup_logging(options.verbose)
    # Renders inherit it: a command script's `peerfarm` verbs talk to this very peer.
    os.environ[ENV_DATA_DIR] = str(options.data_dir)
    try:
        trio.run(serve, options)
    except PeerfarmError as exc:
        log.error("%s", exc)
        return 2
    except OSError as exc:
        log.error("cannot start: %s", exc)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0
