"""Fuzz targets: every decoder that reads bytes from the network or text from a user.

Targets: ``datagram``, ``stream``, ``ledger`` (what peers send), ``frames`` (a frame range),
``control`` (a control API JSON body through every route's checks) and ``options`` (submit
options as typed on the CLI or the form, and as a hostile peer's job spec carries them, through
the schemas and the renderers' command lines).

Each target takes arbitrary bytes and feeds them to the real code path (authenticated with a
fixed test key where the path starts after authentication, so the fuzzer reaches the msgpack,
membership and ledger decoders rather than stopping at the AEAD tag). A target may raise only
the errors that code promises for bad input (``ALLOWED``); any other exception, or a broken
invariant (AssertionError), is a crash. Pure: no sockets, no files, no clock.

Used by ``fuzz/run.py`` (atheris, coverage-guided), ``tests/unit/security/test_fuzz.py``
(Hypothesis, regressions) and ``tests/real/security/test_fuzz.py`` (atheris in a subprocess).
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from peerfarm import PROTOCOL_VERSION
from peerfarm.api.bodies import (
    abs_path,
    checked_fps,
    number,
    parse_json_body,
    parse_option_value,
    submit_request,
    text_field,
)
from peerfarm.errors import (
    FrameRangeError,
    MessageTooLarge,
    RemoteProtocolError,
    UsageError,
)
from peerfarm.files.names import safe_name
from peerfarm.files.transfer import parse_get
from peerfarm.frames import parse_frames
from peerfarm.gossip.config import GossipConfig
from peerfarm.gossip.crypto import Keyring
from peerfarm.gossip.envelope import (
    HEADER_LEN,
    FrameBuffer,
    Kind,
    Role,
    StreamSession,
    _header,
    decode_datagram,
)
from peerfarm.gossip.membership import Membership
from peerfarm.ledger import Ledger, codec
from peerfarm.ledger.model import FrameRecord, Output, Register, SceneRef, Status
from peerfarm.renderers import options as job_options
from peerfarm.renderers.base import RenderFailed, RenderTask
from peerfarm.renderers.command import CommandRenderer
from peerfarm.renderers.povray import PovrayRenderer

KEY = bytes(range(32))
KEYRING = Keyring([KEY])
NODE = "0123456789abcdef"
PEER = "fedcba9876543210"
WALL_MS = 1_700_000_000_000

#: What a decoder may raise for bad input. Anything else is a bug.
ALLOWED: tuple[type[BaseException], ...] = (RemoteProtocolError, MessageTooLarge)


def _membership() -> Membership:
    return Membership(
        NODE,
        ("127.0.0.1", 7946),
        {"name": "fuzz"},
        GossipConfig.fast(),
        random.Random(0),
        0.0,
        protocol=PROTOCOL_VERSION,
        incarnation=1,
    )


def _handle_message(message: object) -> None:
    """What Node._on_datagram does with an authentic datagram's message."""
    if isinstance(message, dict) and message.get("t") == "L":
        deltas = codec.decode_deltas(message.get("d"), max_count=1_000)
        Ledger(NODE).merge(deltas, WALL_MS)
        return
    membership = _membership()
    membership.receive(("127.0.0.1", 7000), message, 1.0)
    membership.tick(2.0)
    membership.drain_events()


def datagram(data: bytes) -> None:
    """One UDP datagram. First byte even: the raw bytes as received (envelope, AEAD);
    odd: the rest sealed with the farm key, as a keyed (possibly hostile) peer would send."""
    if not data:
        return
    if data[0] % 2 == 0:
        raw = data[1:]
    else:
        header = _header(PROTOCOL_VERSION, Kind.DATAGRAM)
        raw = header + KEYRING.seal(data[1:], header)
    try:
        _version, message = decode_datagram(KEYRING, raw)
        _handle_message(message)
    except ALLOWED:
        pass


def _session_pair() -> tuple[StreamSession, StreamSession]:
    client_nonce, server_nonce = b"c" * 16, b"s" * 16
    client = StreamSession(KEYRING, Role.CLIENT, client_nonce, server_nonce, PROTOCOL_VERSION)
    server = StreamSession(KEYRING, Role.SERVER, client_nonce, server_nonce, PROTOCOL_VERSION)
    return client, server


def stream(data: bytes) -> None:
    """TCP stream bytes. First byte even: raw bytes through the length-prefix framer; odd: the
    rest sealed as the next frame of an established session, then parsed like a request."""
    if not data:
        return
    try:
        if data[0] % 2 == 0:
            buffer = FrameBuffer()
            buffer.feed(data[1:])
            while (frame := buffer.next_frame()) is not None:
                _client, server = _session_pair()
                server.open(frame)
            return
        client, server = _session_pair()
        header = _header(PROTOCOL_VERSION, Kind.STREAM_FRAME)
        body = header + KEYRING.seal(data[1:], client._aad(header, Role.CLIENT, 0))
        assert len(header) == HEADER_LEN
        message = server.open(body)
        if isinstance(message, dict):
            kind = message.get("t")
            if kind == "get":
                parse_get(message)
            elif kind in ("sync", "sync-r"):
                codec.decode_watermarks(message.get("w"))
                _membership().merge_push_pull(message.get("m"), 1.0)
            elif kind == "deltas":
                Ledger(NODE).merge(codec.decode_deltas(message.get("d"), 1_000), WALL_MS)
    except ALLOWED:
        pass


def ledger(data: bytes) -> None:
    """msgpack bytes as a list of ledger deltas (push-pull, ledger.db rows), then merged."""
    try:
        deltas = codec.decode_deltas(codec.unpackb(data), max_count=1_000)
    except ALLOWED:
        return
    replica = Ledger(NODE)
    replica.merge(deltas, WALL_MS)
    for _key, value, _origin, _version in deltas:
        if isinstance(value, FrameRecord):  # every accepted output name is a safe file name
            for output in value.outputs:
                assert safe_name(output.name) == output.name
    # Whatever was accepted re-encodes and decodes to the same thing (a round trip).
    for delta in deltas:
        again = codec.decode_delta(codec.encode_delta(delta))
        assert again[0] == delta[0] and again[1] == delta[1], (delta, again)
    replica.state_digest()


def frames(data: bytes) -> None:
    """A frame range as typed by an artist (CLI, API, dashboard)."""
    text = data.decode("utf-8", "replace")
    try:
        result = parse_frames(text, limit=10_000)
    except FrameRangeError:
        return
    assert result, "an accepted range is never empty"
    assert len(result) == len(set(result)) <= 10_000
    assert all(type(f) is int and f >= 0 for f in result)


def control(data: bytes) -> None:
    """A control API request body (``POST /api/jobs``, ``/retry``, ``/fetch``, ``/encode``,
    ``/login``) through what the routes check before the farm sees it, then the submit's
    options through the renderer's schema. Anything wrong is a ``UsageError`` (HTTP 4xx)."""
    try:
        body = parse_json_body(data)
    except UsageError:
        return
    for check in (_submit_body, _retry_body, _paths_body, _login_body):
        with contextlib.suppress(UsageError):
            check(body)


def _submit_body(body: dict[str, Any]) -> None:
    request = submit_request(body)
    assert request.chunk >= 1 and request.retries >= 0
    for path in (request.scene, request.output, request.cwd, request.encode):
        assert path is None or (path.is_absolute() and "\x00" not in str(path))
    assert request.fps is None or 0 < request.fps <= 1000
    renderer = request.renderer if request.renderer in job_options.SCHEMAS else "povray"
    _check_options(renderer, request.options)


def _retry_body(body: dict[str, Any]) -> None:
    frames_text = text_field(body, "frames")
    if frames_text is not None:
        parse_frames(frames_text, limit=10_000)


def _paths_body(body: dict[str, Any]) -> None:
    for key in ("dest", "out"):
        path = abs_path(body, key)
        assert path is None or (path.is_absolute() and "\x00" not in str(path))
    fps = checked_fps(body)
    assert fps is None or (math.isfinite(fps) and fps > 0)
    number(body, "index", int, (0, 1_000_000))


def _login_body(body: dict[str, Any]) -> None:
    for key in ("code", "password"):
        value = body.get(key)
        assert value is None or isinstance(value, str | int | float | bool | list | dict)


def _check_options(renderer: str, given: Any) -> None:
    """Submit-side checks, then what a renderer does with what passed them."""
    checked = job_options.validate(renderer, given)
    assert job_options.validate(renderer, checked) == checked  # normalising is idempotent
    _build(renderer, checked)


def _build(renderer: str, given: dict[str, Any]) -> None:
    task = RenderTask(
        job_id="job",
        frames=(1,),
        scene=Path("scene"),
        scene_name="scene",
        options={**given, "frame_first": 1, "frames_total": 3},
        output_dir=Path("out"),
        work_dir=Path("work"),
    )
    argv = []
    if renderer == "povray":
        argv = PovrayRenderer().build_argv(task)
    elif renderer == "command":
        argv = CommandRenderer().build_argv(task)
    assert all(isinstance(a, str) and "\x00" not in a for a in argv)


def options(data: bytes) -> None:
    """Job options. First byte even: ``KEY=VALUE`` lines as typed after ``--option`` (or in
    the upload form), through the schema of every renderer; odd: the rest as msgpack, as a
    hostile peer's job spec carries options, through ``options.read`` and the renderers'
    command lines. Only ``OptionError``/``RenderFailed`` (and decode errors) may come out."""
    if not data:
        return
    renderers = sorted(job_options.SCHEMAS)
    if data[0] % 2 == 0:
        given: dict[str, Any] = {}
        for line in data[1:].decode("utf-8", "replace").splitlines()[:32]:
            key, sep, value = line.partition("=")
            if sep and key.strip():
                given[key.strip()] = parse_option_value(value)
        for renderer in renderers:
            with contextlib.suppress(UsageError):
                _check_options(renderer, given)
        return
    try:
        spec_options = codec.unpackb(data[1:])
    except ALLOWED:
        return
    if not isinstance(spec_options, dict):
        return
    for renderer in renderers:
        try:
            read = job_options.read(renderer, spec_options)
            _build(renderer, {k: v for k, v in read.items() if isinstance(k, str)})
        except (job_options.OptionError, RenderFailed):
            pass


TARGETS: dict[str, Callable[[bytes], None]] = {
    "datagram": datagram,
    "stream": stream,
    "ledger": ledger,
    "frames": frames,
    "control": control,
    "options": options,
}


def seeds() -> dict[str, list[bytes]]:
    """Valid inputs for each target, so mutation starts from messages that parse."""
    ledger_ = Ledger(PEER)
    scene = SceneRef(bytes(32), "scene.blend", 10)
    spec = ledger_.new_job(
        name="shot",
        submitter_name="peer",
        renderer="blender",
        options={"samples": 8, "allow_scripts": True},
        scene=scene,
        assets=[SceneRef(bytes(range(32)), "tex/wood.png", 5)],
        frames=[1, 2, 3, 10],
        wall_ms=WALL_MS,
        output="/tmp/out",
    )
    deltas = ledger_.submit(spec)
    deltas += ledger_.claim(spec.id, (1,), WALL_MS)
    deltas += ledger_.cancel(spec.id, WALL_MS)
    done = FrameRecord(
        epoch=0,
        status=Status.DONE,
        attempt=1,
        stamp=5,
        node=PEER,
        outputs=(Output("frame_0001.png", bytes(32), 3),),
    )
    wire = [codec.encode_delta(d) for d in deltas]
    wire.append(codec.encode_delta((("F", spec.id, 2), done, PEER, 99)))
    wire.append(codec.encode_delta((("P", spec.id), Register(3, 7, PEER, 0), PEER, 100)))
    packed = codec.packb(wire)
    membership = _membership()
    ping = codec.packb({"t": "ping", "seq": 1, "f": PEER})
    state = codec.packb({"t": "sync", "m": membership.push_pull_state(), "w": {PEER: 3}})
    return {
        "datagram": [b"\x01" + codec.packb({"t": "L", "d": wire[:2]}), b"\x01" + ping],
        "stream": [
            b"\x01" + state,
            b"\x01" + codec.packb({"t": "get", "digest": "a" * 64, "offset": 0}),
            b"\x01" + codec.packb({"t": "deltas", "d": wire}),
            b"\x00" + b"\x00\x00\x00\x10" + bytes(16),
        ],
        "ledger": [packed] + [codec.packb([w]) for w in wire],
        "frames": [b"1-240", b"1,5,10-20x2", b"7", b" 3 , 4-9x3"],
        "control": [
            b'{"scene": "/tmp/ball.pov", "frames": "1-3", "renderer": "povray", "chunk": 2, '
            b'"options": {"width": 640, "height": 480, "antialias": 0.3}, "fps": 24}',
            b'{"scene": "/tmp/r.sh", "frames": "1", "renderer": "command", '
            b'"options": {"args": ["-v"]}, "retries": 0, "priority": 5}',
            b'{"frames": "1-5x2"}',
            b'{"dest": "/tmp/out", "out": "/tmp/v.mp4", "fps": 30}',
            b'{"code": "abc", "password": "x"}',
        ],
        "options": [
            b"\x00width=640\nheight=480\nantialias=0.3\nthreads=2",
            b"\x00format=png\nthreads=0\nmain=scenes/a.blend",
            b'\x00args=["--fast", "-q"]\nfps=25\noverwrite=true',
            b"\x01" + codec.packb({"width": 320, "height": 240, "threads": 4}),
            b"\x01" + codec.packb({"args": ["a", "b"], "format": "PNG"}),
        ],
    }
