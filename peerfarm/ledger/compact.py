"""The frame records of one job in a replica's memory, done frames packed. Pure.

A job of a million frames holds a million records once it is done, so a done record is kept as
one ``bytes`` (its fields packed with :mod:`struct`, node ids as indexes into the replica's
:class:`NodeTable`, outputs packed after them) in a list indexed by the frame's position in the
job, instead of a :class:`~peerfarm.ledger.model.FrameRecord` with an ``Output`` per file in a
dict keyed by frame. Live records (pending, claimed, released, retrying, failed) stay objects:
there are few of them at any time and the scheduler reads them often.

Rules:

* Packing is lossless: :func:`unpack_done` of :func:`pack_done` gives a record equal to the one
  packed, with the same ``origin`` and ``version``; a record that cannot be packed (not done,
  or done with an error text) is kept as it is. The merge, the state digest and the wire see
  only :class:`FrameRecord` values, so nothing outside a replica knows about this form.
* Records are indexed by position once the job's spec is known and its frame runs do not
  interleave; before that (records that arrived ahead of their spec) or for interleaved runs
  they are kept in a dict by frame. Either way the table is a ``Mapping[int, FrameRecord]``.
"""

from __future__ import annotations

import bisect
import itertools
import struct
from collections.abc import Iterator, Mapping

from .model import FrameRecord, JobSpec, Output, Status

_FINISHED = frozenset({Status.DONE, Status.FAILED})

#: version, stamp, seconds, seq, origin, node, epoch, attempt, outputs, peak memory
_HEAD = struct.Struct("<QQdQIIIIBQ")
#: one output: size, digest, name length (the name's UTF-8 bytes follow)
_OUT = struct.Struct("<Q32sH")
_VERSION = struct.Struct("<Q")
_ORIGIN = struct.Struct("<I")
_ORIGIN_AT = 8 + 8 + 8 + 8  # offset of the origin index in the head
_MAX_PACKED_OUTPUTS = 255

Stored = FrameRecord | bytes


class NodeTable:
    """Node ids (16 hex digits) as small integers, shared by every job of a replica."""

    __slots__ = ("_ids", "_index")

    def __init__(self) -> None:
        self._ids: list[str] = []
        self._index: dict[str, int] = {}

    def index(self, node: str) -> int:
        found = self._index.get(node)
        if found is None:
            found = self._index[node] = len(self._ids)
            self._ids.append(node)
        return found

    def id(self, index: int) -> str:
        return self._ids[index]


def packable(record: FrameRecord) -> bool:
    return (
        record.status == Status.DONE
        and not record.error
        and len(record.outputs) <= _MAX_PACKED_OUTPUTS
    )


def pack_done(record: FrameRecord, nodes: NodeTable) -> bytes:
    """The packed form of a done record (see :func:`packable`)."""
    parts = [
        _HEAD.pack(
            record.version,
            record.stamp,
            record.seconds,
            record.seq,
            nodes.index(record.origin),
            nodes.index(record.node),
            record.epoch,
            record.attempt,
            len(record.outputs),
            record.memory,
        )
    ]
    for output in record.outputs:
        name = output.name.encode()
        parts.append(_OUT.pack(output.size, output.digest, len(name)))
        parts.append(name)
    return b"".join(parts)


def unpack_done(data: bytes, nodes: NodeTable) -> FrameRecord:
    version, stamp, seconds, seq, origin, node, epoch, attempt, count, memory = _HEAD.unpack_from(
        data
    )
    ids = nodes._ids
    if count == 1:  # the usual case, kept short: this runs for every record a sync sends
        size, digest, length = _OUT.unpack_from(data, _HEAD.size)
        at = _HEAD.size + _OUT.size
        outputs: tuple[Output, ...] = (Output(data[at : at + length].decode(), digest, size),)
    else:
        found = []
        at = _HEAD.size
        for _ in range(count):
            size, digest, length = _OUT.unpack_from(data, at)
            at += _OUT.size
            found.append(Output(data[at : at + length].decode(), digest, size))
            at += length
        outputs = tuple(found)
    return FrameRecord(
        epoch, Status.DONE, attempt, stamp, ids[node], seq, seconds, outputs,
        memory=memory, origin=ids[origin], version=version,
    )  # fmt: skip


class FrameTable(Mapping[int, FrameRecord]):
    """The explicit frame records of one job (frames never touched are pending)."""

    __slots__ = ("_count", "_firsts", "_loose", "_nodes", "_runs", "_slots")

    def __init__(self, nodes: NodeTable) -> None:
        self._nodes = nodes
        self._loose: dict[int, Stored] | None = {}  # by frame: no spec yet, or interleaved runs
        self._slots: list[Stored | None] = []  # by position, once bound to the spec
        self._runs: list[tuple[int, int, int, int]] = []  # (first, last, step, offset), sorted
        self._firsts: list[int] = []
        self._count = 0

    # --- positions ---------------------------------------------------------------------

    def bind(self, spec: JobSpec) -> None:
        """Index by position in ``spec`` (every record held must be one of its frames)."""
        if self._loose is None:
            return
        runs = []
        offset = 0
        for first, last, step in spec.runs:
            last = first + (last - first) // step * step
            runs.append((first, last, step, offset))
            offset += (last - first) // step + 1
        runs.sort()
        if any(a[1] >= b[0] for a, b in itertools.pairwise(runs)):
            return  # interleaved runs: stay keyed by frame
        loose = self._loose
        self._runs = runs
        self._firsts = [r[0] for r in runs]
        self._slots = [None] * offset
        self._loose = None
        self._count = 0
        for frame, stored in loose.items():
            position = self._position(frame)
            assert position is not None, "bind() needs every record to be a frame of the spec"
            self._slots[position] = stored
            self._count += 1

    def _position(self, frame: int) -> int | None:
        at = bisect.bisect_right(self._firsts, frame) - 1
        if at < 0:
            return None
        first, last, step, offset = self._runs[at]
        if frame > last or (frame - first) % step:
            return None
        return offset + (frame - first) // step

    def _stored(self, frame: int) -> Stored | None:
        if self._loose is not None:
            return self._loose.get(frame)
        position = self._position(frame)
        return None if position is None else self._slots[position]

    def _record(self, stored: Stored) -> FrameRecord:
        return stored if isinstance(stored, FrameRecord) else unpack_done(stored, self._nodes)

    # --- Mapping -----------------------------------------------------------------------

    def __getitem__(self, frame: int) -> FrameRecord:
        stored = self._stored(frame)
        if stored is None:
            raise KeyError(frame)
        return self._record(stored)

    def get(self, frame: int, default: FrameRecord | None = None) -> FrameRecord | None:  # type: ignore[override]
        stored = self._stored(frame)
        return default if stored is None else self._record(stored)

    def __contains__(self, frame: object) -> bool:
        return isinstance(frame, int) and self._stored(frame) is not None

    def __len__(self) -> int:
        return len(self._loose) if self._loose is not None else self._count

    def __iter__(self) -> Iterator[int]:
        """Frames with a record: in the job's frame order once bound, else as they came."""
        if self._loose is not None:
            yield from list(self._loose)
            return
        slots = self._slots
        for first, last, step, offset in self._runs:
            for index in range((last - first) // step + 1):
                if slots[offset + index] is not None:
                    yield first + index * step

    # --- cheap reads (no record built) -------------------------------------------------

    def status(self, frame: int) -> Status | None:
        """The frame's status, or None when it has no record (pending)."""
        stored = self._stored(frame)
        if stored is None:
            return None
        return Status.DONE if isinstance(stored, bytes) else stored.status

    def statuses(self) -> Iterator[tuple[int, Status]]:
        """(frame, status) of every frame with a record, in the order of ``iter``."""
        if self._loose is not None:
            for frame, held in list(self._loose.items()):
                yield frame, Status.DONE if isinstance(held, bytes) else held.status
            return
        slots = self._slots
        for first, last, step, offset in self._runs:
            for index in range((last - first) // step + 1):
                stored = slots[offset + index]
                if stored is not None:
                    status = Status.DONE if isinstance(stored, bytes) else stored.status
                    yield first + index * step, status

    def first_unfinished(self, start: int) -> int | None:
        """The first position from ``start`` whose frame is neither done nor failed (pending
        when it has no record): the frame count when there is none; None when the table is not
        indexed by position (no spec yet, or interleaved runs). One pass over the slots, no
        record built."""
        if self._loose is not None:
            return None
        slots = self._slots
        for position in range(max(0, start), len(slots)):
            stored = slots[position]
            if stored is None:
                return position
            if not isinstance(stored, bytes) and stored.status not in _FINISHED:
                return position
        return len(slots)

    def written(self, frame: int) -> tuple[str, int] | None:
        """(origin, version) of the frame's record, or None when it has none."""
        stored = self._stored(frame)
        if stored is None:
            return None
        if isinstance(stored, FrameRecord):
            return stored.origin, stored.version
        origin = _ORIGIN.unpack_from(stored, _ORIGIN_AT)[0]
        return self._nodes.id(origin), _VERSION.unpack_from(stored)[0]

    def newer(self, lo: int, hi: int, marks: dict[str, int]) -> Iterator[tuple[int, FrameRecord]]:
        """The records of frames in ``[lo, hi)`` written after ``marks`` (origin -> version),
        in frame order when bound; a record is built only when it is sent."""
        if self._loose is not None:
            for frame in sorted(f for f in self._loose if lo <= f < hi):
                record = self._record(self._loose[frame])
                if record.version > marks.get(record.origin, 0):
                    yield frame, record
            return
        slots, ids = self._slots, self._nodes._ids
        for first, last, step, offset in self._runs:
            if last < lo or first >= hi:
                continue
            start = max(0, -(-(lo - first) // step))
            stop = min((last - first) // step, (hi - 1 - first) // step)
            for index in range(start, stop + 1):
                stored = slots[offset + index]
                if stored is None:
                    continue
                if isinstance(stored, bytes):
                    version = _VERSION.unpack_from(stored)[0]
                    origin = ids[_ORIGIN.unpack_from(stored, _ORIGIN_AT)[0]]
                    if version > marks.get(origin, 0):
                        yield first + index * step, unpack_done(stored, self._nodes)
                elif stored.version > marks.get(stored.origin, 0):
                    yield first + index * step, stored

    # --- writes ------------------------------------------------------------------------

    def put(self, frame: int, record: FrameRecord) -> None:
        """Hold ``record`` for ``frame`` (a frame of the bound spec, if bound)."""
        stored: Stored = pack_done(record, self._nodes) if packable(record) else record
        if self._loose is not None:
            self._loose[frame] = stored
            return
        position = self._position(frame)
        if position is None:
            raise KeyError(f"frame {frame} is not a frame of this job")
        if self._slots[position] is None:
            self._count += 1
        self._slots[position] = stored

    def pop(self, frame: int) -> FrameRecord:
        """Remove and return the frame's record (KeyError when it has none)."""
        if self._loose is not None:
            return self._record(self._loose.pop(frame))
        position = self._position(frame)
        stored = None if position is None else self._slots[position]
        if position is None or stored is None:
            raise KeyError(frame)
        self._slots[position] = None
        self._count -= 1
        return self._record(stored)
