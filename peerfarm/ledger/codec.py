"""The ledger on the wire and on disk: msgpack encoding and validating decoding.

A delta is one ledger entry: ``[kind, job, sub, origin, version, payload]``. Decoding checks every
field's type, range and size and raises :class:`~peerfarm.errors.DecodeError` (saying what was
wrong) for anything malformed - never another exception. A job's id is the hash of its canonical
encoding and is verified on decode, so no peer can attach a different spec to an existing id.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable
from typing import Any

import msgpack

from ..errors import DecodeError
from ..files.names import UnsafeName, safe_name
from ..frames import MAX_FRAMES, runs_overlap
from .keys import Delta, Key, Kind, Value
from .model import Attempt, FrameRecord, JobSpec, Output, Register, SceneRef, Status

__all__ = ["Delta", "Key", "Value"]

ID_RE = re.compile(r"^[0-9a-f]{16}$")

# Caps that bound what one peer can make every other peer hold. Wire limits: raise freely,
# lower only with a protocol version bump.
MAX_NAME = 200
MAX_PATH = 4096
MAX_OPTIONS_BYTES = 8192
MAX_RUNS = 10_000
MAX_ASSETS = 10_000
MAX_OUTPUTS = 64
MAX_ERROR = 1000
MAX_LOG_TAIL = 8192
MAX_REG_BYTES = 4096
MAX_VERSION = (1 << 63) - 1
MAX_STAMP = (1 << 64) - 1
MAX_FRAME = 10**9
MAX_MESSAGE = 64 * 1024 * 1024

KINDS = frozenset(Kind)


def packb(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpackb(data: bytes, *, max_bytes: int = MAX_MESSAGE) -> Any:
    """Decode msgpack from an untrusted source; only :class:`DecodeError` escapes."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError("expected bytes")
    if len(data) > max_bytes:
        raise DecodeError(f"message of {len(data)} bytes is over the {max_bytes}-byte cap")
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=False,
            max_str_len=max_bytes,
            max_bin_len=max_bytes,
            max_array_len=MAX_FRAMES + 16,
            max_map_len=100_000,
            max_ext_len=0,
        )
    except DecodeError:
        raise
    except Exception as exc:  # msgpack raises a zoo of types (ValueError, ExtraData, ...)
        raise DecodeError(f"not valid msgpack: {type(exc).__name__}: {exc}") from None


# ---------------------------------------------------------------------------------------------
# validation helpers


def _int(x: Any, what: str, lo: int = 0, hi: int = MAX_VERSION) -> int:
    if type(x) is not int or not lo <= x <= hi:
        raise DecodeError(f"{what} must be an integer in [{lo}, {hi}], got {_show(x)}")
    return x


def _float(x: Any, what: str) -> float:
    if type(x) not in (int, float) or not math.isfinite(x) or x < 0 or x > 1e9:
        raise DecodeError(f"{what} must be a finite number >= 0, got {_show(x)}")
    return float(x)


def _str(x: Any, what: str, max_len: int, *, empty: bool = True) -> str:
    if type(x) is not str or len(x) > max_len or (not empty and not x):
        raise DecodeError(f"{what} must be a string of at most {max_len} chars, got {_show(x)}")
    return x


def _id(x: Any, what: str) -> str:
    if type(x) is not str or not ID_RE.match(x):
        raise DecodeError(f"{what} must be 16 lowercase hex digits, got {_show(x)}")
    return x


def _node(x: Any, what: str) -> str:
    if x == "":
        return ""
    return _id(x, what)


def _file_name(x: str, what: str) -> str:
    """A name that becomes a file in someone's folder: one safe component (files.names)."""
    try:
        return safe_name(x)
    except UnsafeName as exc:
        raise DecodeError(f"{what}: {exc}") from None


def _digest(x: Any, what: str) -> bytes:
    if type(x) is not bytes or len(x) != 32:
        raise DecodeError(f"{what} must be a 32-byte sha256, got {_show(x)}")
    return x


def _list(x: Any, what: str, length: int | None = None, max_len: int = MAX_FRAMES) -> list[Any]:
    if type(x) is not list or (length is not None and len(x) != length) or len(x) > max_len:
        want = f"a list of {length}" if length is not None else f"a list of at most {max_len}"
        raise DecodeError(f"{what} must be {want}, got {_show(x)}")
    return x


def _show(x: Any) -> str:
    text = repr(x)
    return text if len(text) <= 60 else text[:57] + "..."


def _plain(x: Any, what: str, depth: int = 0) -> Any:
    """Options are JSON-like: str keys, scalars, lists and maps, bounded depth."""
    if depth > 6:
        raise DecodeError(f"{what} nests too deeply")
    if x is None or type(x) in (bool, int, str):
        return x
    if type(x) is float:
        if not math.isfinite(x):
            raise DecodeError(f"{what} holds a non-finite number")
        return x
    if type(x) is list:
        return [_plain(v, what, depth + 1) for v in x]
    if type(x) is dict:
        out = {}
        for k, v in x.items():
            if type(k) is not str:
                raise DecodeError(f"{what} keys must be strings, got {_show(k)}")
            out[k] = _plain(v, what, depth + 1)
        return out
    raise DecodeError(f"{what} holds an unsupported value {_show(x)}")


def _canonical(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _canonical(x[k]) for k in sorted(x)}
    if isinstance(x, list | tuple):
        return [_canonical(v) for v in x]
    return x


# ---------------------------------------------------------------------------------------------
# job specs


def _spec_body(spec: JobSpec) -> list[Any]:
    return [
        spec.name,
        spec.submitted_by,
        spec.submitter_name,
        spec.stamp,
        spec.renderer,
        _canonical(spec.options),
        [spec.scene.digest, spec.scene.name, spec.scene.size],
        [[a.digest, a.name, a.size] for a in spec.assets],
        [list(r) for r in spec.runs],
        spec.chunk,
        spec.output,
        spec.retries,
        spec.priority,
    ]


def spec_id(spec: JobSpec) -> str:
    """The job id: a hash of everything in the spec but the id."""
    return hashlib.sha256(b"peerfarm job\0" + packb(_spec_body(spec))).hexdigest()[:16]


def _decode_scene_ref(x: Any, what: str) -> SceneRef:
    digest, name, size = _list(x, what, 3)
    return SceneRef(
        _digest(digest, f"{what} digest"),
        _str(name, f"{what} name", MAX_PATH, empty=False),
        _int(size, f"{what} size"),
    )


def decode_spec(job: str, body: Any) -> JobSpec:
    fields = _list(body, "job spec", 13)
    options = _plain(fields[5], "job options")
    if type(options) is not dict or len(packb(options)) > MAX_OPTIONS_BYTES:
        raise DecodeError(f"job options must be a map of at most {MAX_OPTIONS_BYTES} bytes")
    runs = []
    for run in _list(fields[8], "frame runs", max_len=MAX_RUNS):
        first, last, step = _list(run, "frame run", 3)
        first = _int(first, "frame", 0, MAX_FRAME)
        last = _int(last, "frame", first, MAX_FRAME)
        runs.append((first, last, _int(step, "frame step", 1, MAX_FRAME)))
    if not runs:
        raise DecodeError("a job needs at least one frame")
    spec = JobSpec(
        id=job,
        name=_str(fields[0], "job name", MAX_NAME, empty=False),
        submitted_by=_id(fields[1], "submitter"),
        submitter_name=_str(fields[2], "submitter name", MAX_NAME),
        stamp=_int(fields[3], "submit stamp", 0, MAX_STAMP),
        renderer=_str(fields[4], "renderer", 32, empty=False),
        options=options,
        scene=_decode_scene_ref(fields[6], "scene"),
        assets=tuple(
            _decode_scene_ref(a, "asset") for a in _list(fields[7], "assets", max_len=MAX_ASSETS)
        ),
        runs=tuple(runs),
        chunk=_int(fields[9], "chunk", 1, 10_000),
        output=_str(fields[10], "output folder", MAX_PATH),
        retries=_int(fields[11], "retries", 0, 100),
        priority=_int(fields[12], "priority", -1_000_000, 1_000_000),
    )
    if spec.frame_count > MAX_FRAMES:
        raise DecodeError(f"a job may have at most {MAX_FRAMES} frames")
    if runs_overlap(spec.runs):
        raise DecodeError("a job's frame runs overlap: every frame must appear once")
    if spec_id(spec) != job:
        raise DecodeError(f"job {job} does not match the hash of its spec")
    return spec


# ---------------------------------------------------------------------------------------------
# entries


def encode_frame(r: FrameRecord) -> list[Any]:
    """Nine fields; a tenth, the render's peak memory, only when it was measured (so a record
    without it encodes as it always did)."""
    fields = [
        r.epoch,
        int(r.status),
        r.attempt,
        r.stamp,
        r.node,
        r.seq,
        r.seconds,
        [[o.name, o.digest, o.size] for o in r.outputs],
        r.error,
    ]
    return [*fields, r.memory] if r.memory else fields


def decode_frame(x: Any, origin: str, version: int) -> FrameRecord:
    if type(x) is list and len(x) == 10:  # with the peak memory (optional tenth field)
        memory = _int(x[9], "peak memory", 1, MAX_VERSION)
        x = x[:9]
    else:
        memory = 0
    f = _list(x, "frame record", 9)
    try:
        status = Status(_int(f[1], "frame status", 0, 255))
    except ValueError:
        raise DecodeError(f"unknown frame status {f[1]}") from None
    outputs = []
    for o in _list(f[7], "outputs", max_len=MAX_OUTPUTS):
        name, digest, size = _list(o, "output", 3)
        outputs.append(
            Output(
                _file_name(_str(name, "output name", MAX_NAME, empty=False), "output name"),
                _digest(digest, "output digest"),
                _int(size, "output size"),
            )
        )
    record = FrameRecord(
        epoch=_int(f[0], "epoch", 0, 1_000_000),
        status=status,
        attempt=_int(f[2], "attempt", 0, 1_000_000),
        stamp=_int(f[3], "frame stamp", 0, MAX_STAMP),
        node=_node(f[4], "frame node"),
        seq=_int(f[5], "renewal seq"),
        seconds=_float(f[6], "render seconds"),
        outputs=tuple(outputs),
        error=_str(f[8], "frame error", MAX_ERROR),
        memory=memory,
        origin=origin,
        version=version,
    )
    if (status == Status.PENDING) != (record.node == ""):
        raise DecodeError("a pending frame has no node; every other state names one")
    if status != Status.DONE and outputs:
        raise DecodeError("only a done frame has outputs")
    if status != Status.DONE and memory:
        raise DecodeError("only a done frame has a peak memory")
    return record


def encode_register(r: Register) -> list[Any]:
    return [r.value, r.stamp, r.node, r.rank]


def _is_mark(value: Any) -> bool:
    return (
        type(value) is list
        and len(value) == 2
        and type(value[0]) is int
        and 0 <= value[0] <= 1_000_000
        and type(value[1]) is str
        and len(value[1]) == 16
    )


def _is_notice(value: Any) -> bool:
    return (
        type(value) is list
        and len(value) == 2
        and value[0] in ("done", "failed")
        and value[1] in ("claimed", "sent", "failed")
    )


HOLD_MODES = ("hold", "drain")


def _is_hold(value: Any) -> bool:
    return (
        type(value) is dict
        and set(value) == {"mode", "by"}
        and value["mode"] in HOLD_MODES
        and type(value["by"]) is str
        and len(value["by"]) <= MAX_NAME
    )


def decode_register(kind: Kind, x: Any) -> Register:
    value, stamp, node, rank = _list(x, "register", 4)
    value = _plain(value, "register value")
    if len(packb(value)) > MAX_REG_BYTES:
        raise DecodeError("register value too large")
    if kind == Kind.PRIORITY and type(value) is not int:
        raise DecodeError("a priority must be an integer")
    if kind in (Kind.PAUSED, Kind.CANCELLED) and type(value) is not bool:
        raise DecodeError("paused/cancelled must be a boolean")
    if kind == Kind.DELIVERED and not _is_mark(value):
        raise DecodeError("a delivery mark holds [epoch, outputs fingerprint]")
    if kind == Kind.NOTICE and not _is_notice(value):
        raise DecodeError("a notice holds [job state, phase]")
    if kind in (Kind.BAN, Kind.HALTED) and value is not None and type(value) is not str:
        raise DecodeError("a ban or halt holds its reason (or nothing, when lifted)")
    if kind == Kind.HOST and value is not None and not _is_hold(value):
        raise DecodeError('a host hold holds {"mode": "hold" or "drain", "by": name} or nothing')
    return Register(
        value,
        _int(stamp, "stamp", 0, MAX_STAMP),
        _node(node, "register node"),
        _int(rank, "rank", 0, 1),
    )


def encode_delta(delta: Delta) -> list[Any]:
    key, value, origin, version = delta
    kind = key[0]
    sub: Any
    if kind == Kind.JOB:
        assert isinstance(value, JobSpec)
        sub, payload = None, _spec_body(value)
    elif kind == Kind.FRAME:
        assert isinstance(value, FrameRecord)
        sub, payload = key[2], encode_frame(value)
    elif kind == Kind.ATTEMPT:
        assert isinstance(value, Attempt)
        sub = list(key[2:])
        payload = [value.stamp, value.error, value.log_tail, value.seconds]
    else:
        assert isinstance(value, Register)
        sub = key[2] if len(key) > 2 else None
        payload = encode_register(value)
    return [str(kind), key[1], sub, origin, version, payload]


def decode_delta(x: Any) -> Delta:
    kind, job, sub, origin, version, payload = _list(x, "delta", 6)
    if type(kind) is not str or kind not in KINDS:
        raise DecodeError(f"unknown entry kind {_show(kind)}")
    kind = Kind(kind)
    job = _id(job, "job id")
    origin = _id(origin, "origin")
    version = _int(version, "version", 1)
    value: Value
    key: Key
    if kind == Kind.JOB:
        if sub is not None:
            raise DecodeError("a job entry has no sub-key")
        key, value = (Kind.JOB, job), decode_spec(job, payload)
    elif kind == Kind.FRAME:
        key = (Kind.FRAME, job, _int(sub, "frame", 0, MAX_FRAME))
        value = decode_frame(payload, origin, version)
    elif kind == Kind.ATTEMPT:
        frame, epoch, attempt, node = _list(sub, "attempt key", 4)
        key = (
            Kind.ATTEMPT,
            job,
            _int(frame, "frame", 0, MAX_FRAME),
            _int(epoch, "epoch", 0, 1_000_000),
            _int(attempt, "attempt", 1, 1_000_000),
            _id(node, "attempt node"),
        )
        stamp, error, log_tail, seconds = _list(payload, "attempt", 4)
        value = Attempt(
            _int(stamp, "stamp", 0, MAX_STAMP),
            _str(error, "error", MAX_ERROR),
            _str(log_tail, "log tail", MAX_LOG_TAIL),
            _float(seconds, "seconds"),
        )
    else:
        if kind == Kind.BAN:
            key = (Kind.BAN, job, _id(sub, "banned node"))
        elif kind == Kind.DELIVERED:
            key = (Kind.DELIVERED, job, _int(sub, "frame", 0, MAX_FRAME))
        elif kind == Kind.NOTICE:
            key = (Kind.NOTICE, job, _int(sub, "event", 0, MAX_VERSION))
        elif kind == Kind.HALTED:
            if sub is not None:
                raise DecodeError("a halt entry has no sub-key")
            key = (kind, job)
        else:
            if sub is not None:
                raise DecodeError(f"a {kind} entry has no sub-key")
            key = (kind, job)
        value = decode_register(kind, payload)
    return key, value, origin, version


def encode_deltas(deltas: Iterable[Delta]) -> list[Any]:
    return [encode_delta(d) for d in deltas]


def decode_deltas(x: Any, max_count: int = 1_000_000) -> list[Delta]:
    return [decode_delta(d) for d in _list(x, "deltas", max_len=max_count)]


def decode_watermarks(x: Any) -> dict[str, int]:
    if type(x) is not dict or len(x) > 100_000:
        raise DecodeError("watermarks must be a map of node id to version")
    return {_id(k, "watermark node"): _int(v, "watermark") for k, v in x.items()}


def state_bytes(key: Key, value: Value) -> bytes:
    """The canonical bytes of one entry's state (no origin/version), for the state digest."""
    if isinstance(value, FrameRecord):
        payload: Any = encode_frame(value)
    elif isinstance(value, JobSpec):
        payload = _spec_body(value)
    elif isinstance(value, Attempt):
        payload = [value.stamp, value.error, value.log_tail, value.seconds]
    else:
        payload = encode_register(value)
    return packb([[str(key[0]), *key[1:]], payload])
