"""Choosing what to render next: late binding, rendezvous homes, work stealing. Pure.

A peer claims only when it has a free render slot. Jobs are taken by priority, then submit
time; paused, cancelled and finished jobs are skipped, and so are jobs this peer cannot render
or stopped taking (banned after repeated failures here). Within a job the unit of work is a
chunk (``chunk`` consecutive frames of the job's order; 1 by default) and every chunk has a
*home* among the job's capable peers (rendezvous hashing with bounded loads: each peer is home
to its fair share of the chunks, :func:`chunk_homes`). Chunks follow the job's ``order``
(its frames' own order by default; see :func:`chunks_of`). A peer takes its own chunks first,
in order; only when a job has none of its own left does it steal, earliest first but never the
next chunk of a live home with a free slot (the home is about to take it), so the farm as a
whole finishes frames close to their order and a home and a thief rarely meet. A busy home's
next chunk may be stolen, whatever the frame length, rather than leave the thief idle while
the home still has frames to do: the worker confirms every steal with the home, which
promises each frame to one peer (``peer.worker``), so the two never both render it. Homes are
computed over every capable peer that has not left the farm, alive or not, until it has been
dead for a grace period: after a network split each side first renders the chunks homed on its
own side.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from ..frames import frame_position
from ..ledger import Ledger
from ..ledger.model import OPEN, FrameRecord, JobSpec, JobState, Status

FINISHED = frozenset({Status.DONE, Status.FAILED})
#: Short frames are claimed several at a time: a claim of a peer's own chunks covers about
#: this many seconds of the job's measured frame time (never more than :data:`MAX_BATCH`
#: chunks), so a farm of no-op or sub-second frames does not spend more on claiming and
#: gossiping each frame than on rendering it. Frames of a second or more are claimed one
#: chunk at a time, as before.
BATCH_SECONDS = 0.1
MAX_BATCH = 16


def batch_size(mean_seconds: float | None, chunk: int = 1) -> int:
    """How many of its own chunks a peer claims at once, from the job's mean frame time (None:
    nothing measured yet, one chunk)."""
    if mean_seconds is None:
        return 1
    per_chunk = max(mean_seconds, 0.001) * max(1, chunk)
    return max(1, min(MAX_BATCH, int(BATCH_SECONDS / per_chunk)))


def merge_claims(claims: Sequence[Claim], batch: int) -> list[Claim]:
    """``claims`` (a peer's own, in plan order) with runs of fresh home claims joined into one
    claim of up to ``batch`` chunks each. Takeovers and stolen chunks stay alone."""
    merged: list[Claim] = []
    run: list[Claim] = []

    def flush() -> None:
        if run:
            frames = tuple(sorted(f for c in run for f in c.frames))
            merged.append(replace(run[0], frames=frames))
            run.clear()

    for claim in claims:
        if claim.takeover or not claim.home:
            flush()
            merged.append(claim)
            continue
        run.append(claim)
        if len(run) >= batch:
            flush()
    flush()
    return merged


def merge_stolen(stolen: Sequence[Claim], batch: int, want: int) -> list[Claim]:
    """The first ``want`` steals of ``stolen`` (in its order), each joined with the next chunks
    of the same home, up to ``batch`` chunks: short frames are stolen like they are claimed at
    home, several at a time, with one check with their home and one claim for all. Takeovers
    stay alone."""
    out: list[Claim] = []
    used: set[int] = set()
    for i, first in enumerate(stolen):
        if len(out) >= want:
            break
        if i in used:
            continue
        group = [first]
        for j in range(i + 1, len(stolen)):
            if first.takeover or len(group) >= batch:
                break
            other = stolen[j]
            if j not in used and not other.takeover and other.home_peer == first.home_peer:
                group.append(other)
                used.add(j)
        frames = tuple(sorted(f for claim in group for f in claim.frames))
        out.append(replace(first, frames=frames) if len(group) > 1 else first)
    return out


@dataclass(frozen=True, slots=True)
class Claim:
    """What the planner asks the node to claim: frames of one job, as one chunk."""

    job: str
    frames: tuple[int, ...]
    takeover: bool  # claims an expired or dead owner's frames (a new attempt)
    home: bool  # the chunk's home is this peer (False: stolen)
    home_peer: str | None = None  # the chunk's home (a thief asks it first: worker)
    # Taken ahead of this peer's own next chunk to keep the farm's frames in order (it lags a
    # round behind on a busy home): only with the home's promise. A home that does not answer
    # may be across a network split, rendering it (``peer.worker``).
    lagging: bool = False


def _weight(prefix: bytes, peer: str) -> bytes:
    """A peer's rendezvous weight for one chunk (``prefix``: ``b"job:chunk:"``)."""
    return hashlib.blake2b(prefix + peer.encode(), digest_size=8).digest()


def rendezvous_home(job: str, chunk: int, peers: Sequence[str]) -> str | None:
    """Highest-random-weight hashing: the peer with the largest hash of (job, chunk, peer)."""
    best: tuple[bytes, str] | None = None
    prefix = f"{job}:{chunk}:".encode()
    for peer in peers:
        weight = _weight(prefix, peer)
        if best is None or weight > best[0]:
            best = (weight, peer)
    return None if best is None else best[1]


def chunk_homes(job: str, count: int, peers: Sequence[str]) -> list[str | None]:
    """The home of each of a job's ``count`` chunks: rendezvous hashing with bounded loads.

    Chunk by chunk, the home is the peer with the largest hash of (job, chunk, peer) among
    those with room left, and every peer has room for its fair share: ``count // n`` chunks,
    one more for the first ``count % n`` peers to reach that. So no peer runs out of its own
    chunks while another still has a queue (a steal costs a round trip to the home), whatever
    the hash's luck: plain rendezvous gives 4 chunks per peer on average but anywhere from 0 to
    10. Most chunks keep their home when a peer joins or leaves (all but about a fifth with 4
    chunks a peer, 2% with 60). The order of ``peers`` does not matter."""
    ordered = sorted(set(peers))
    if not ordered:
        return [None] * count
    base, extra = divmod(count, len(ordered))
    load = dict.fromkeys(ordered, 0)
    full = 0  # peers that took base + 1 chunks
    homes: list[str | None] = []
    for index in range(count):
        prefix = f"{job}:{index}:".encode()
        best: tuple[bytes, str] | None = None
        for peer in ordered:
            taken = load[peer]
            if taken > base or (taken == base and full >= extra):
                continue  # no room left
            weight = _weight(prefix, peer)
            if best is None or weight > best[0]:
                best = (weight, peer)
        assert best is not None  # the shares add up to count
        home = best[1]
        full += load[home] == base
        load[home] += 1
        homes.append(home)
    return homes


def _rank(job: str, chunk: int, me: str, peers: Sequence[str], home: str | None) -> int:
    """``me``'s place among the peers for one chunk: 0 for its home, then the others in
    rendezvous order (1: the first backup)."""
    if me == home:
        return 0
    prefix = f"{job}:{chunk}:".encode()
    mine = _weight(prefix, me)
    return 1 + sum(1 for peer in peers if peer not in (me, home) and _weight(prefix, peer) > mine)


def job_order(ledger: Ledger) -> list[JobSpec]:
    """Active jobs, highest priority first, then oldest first."""
    jobs = [s for s in ledger.jobs() if ledger.job_state(s.id) == JobState.ACTIVE]
    return sorted(jobs, key=lambda s: (-ledger.priority(s.id), s.stamp, s.id))


#: Frame orders a job may ask for (the ``order`` job option); wire values, append-only.
ORDERS = ("ordered", "first-last", "spread")


def chunks_of(spec: JobSpec) -> list[tuple[int, ...]]:
    """The job's chunks in the order the farm starts them (the ``order`` option): "ordered"
    (default: the frames' own order, so the first frames are done first), "first-last" (the
    first and last chunk first, then the rest in order: the ends of a shot checked early) or
    "spread" (bisection: the first, the middle, the quarters... an early look at the whole)."""
    frames = spec.frames
    size = max(1, spec.chunk)
    chunks = [tuple(frames[i : i + size]) for i in range(0, len(frames), size)]
    order = spec.options.get("order", "ordered")
    if order == "first-last" and len(chunks) > 2:
        return [chunks[0], chunks[-1], *chunks[1:-1]]
    if order == "spread":
        return [chunks[i] for i in spread_order(len(chunks))]
    return chunks


def in_frame_order(spec: JobSpec) -> bool:
    """Whether the job's chunks follow its frames' order (chunk i holds the i-th frames)."""
    return spec.options.get("order", "ordered") not in ("first-last", "spread")


def spread_order(n: int) -> list[int]:
    """0..n-1 in bisection order: 0, then the middle, then the middles of the halves..."""
    if n <= 0:
        return []
    out = [0]
    seen = {0}
    step = n
    while len(out) < n:
        step = max(1, step // 2)
        for start in range(0, n, step):
            if start not in seen:
                seen.add(start)
                out.append(start)
        if step == 1:
            break
    return out


class Planner:
    """Picks claims for free slots. Holds a per-job cache of chunk homes."""

    def __init__(self, node_id: str, *, prefer_home: bool = True) -> None:
        self.node_id = node_id
        self.prefer_home = prefer_home
        self._homes: dict[str, tuple[tuple[str, ...], list[str | None]]] = {}
        self._cursor: dict[str, int] = {}  # first chunk that may still hold work, per job
        self._reopened: dict[str, set[int]] = {}  # frames open again since the last plan
        self._ranks: dict[str, tuple[tuple[str, ...], list[int]]] = {}
        self._chunks: dict[str, list[tuple[int, ...]]] = {}
        self._unbatched: set[str] = set()  # jobs whose batch failed here: one chunk a claim
        # Per job, for the peers it was computed over: the indexes of the chunks homed here,
        # and the place in that list before which every one of them is finished.
        self._own: dict[str, tuple[tuple[str, ...], list[int]]] = {}
        self._own_cursor: dict[str, int] = {}
        self._own_reopened: dict[str, set[int]] = {}

    def no_batch(self, job: str) -> None:
        """Claim ``job`` one chunk at a time from now on: a frame of a batch failed here (the
        worker handed the batch back, so each frame now fails or succeeds on its own)."""
        self._unbatched.add(job)

    def chunks(self, spec: JobSpec) -> list[tuple[int, ...]]:
        """The job's chunks (cached: a spec never changes)."""
        chunks = self._chunks.get(spec.id)
        if chunks is None:
            chunks = self._chunks[spec.id] = chunks_of(spec)
        return chunks

    def homes(self, spec: JobSpec, peers: Sequence[str]) -> list[str | None]:
        key = tuple(sorted(peers))
        cached = self._homes.get(spec.id)
        if cached is not None and cached[0] == key:
            return cached[1]
        homes = chunk_homes(spec.id, len(self.chunks(spec)), key)
        self._homes[spec.id] = (key, homes)
        self._ranks.pop(spec.id, None)
        return homes

    def ranks(self, spec: JobSpec, peers: Sequence[str]) -> list[int]:
        """This peer's place in each chunk's rendezvous order (0: home, 1: first backup...).

        Thieves steal the chunks they are first backup of before others, so idle peers spread
        over different chunks instead of all taking the last one at once.
        """
        key = tuple(sorted(peers))
        cached = self._ranks.get(spec.id)
        if cached is not None and cached[0] == key:
            return cached[1]
        homes = self.homes(spec, peers)
        ranks = [_rank(spec.id, i, self.node_id, key, home) for i, home in enumerate(homes)]
        self._ranks[spec.id] = (key, ranks)
        return ranks

    def forget(self, job: str) -> None:
        self._own.pop(job, None)
        self._own_cursor.pop(job, None)
        self._own_reopened.pop(job, None)
        self._homes.pop(job, None)
        self._ranks.pop(job, None)
        self._cursor.pop(job, None)
        self._reopened.pop(job, None)
        self._chunks.pop(job, None)
        self._unbatched.discard(job)

    def reopened(self, job: str, frame: int | None = None) -> None:
        """A frame of ``job`` is unfinished again (a retry, a failure, a release, a claim of a
        new epoch heard without its pending record): plan from its chunk again."""
        if frame is None:
            self._cursor.pop(job, None)
            self._own_cursor.pop(job, None)
            return
        if job in self._cursor:
            self._reopened.setdefault(job, set()).add(frame)
        if job in self._own_cursor:
            self._own_reopened.setdefault(job, set()).add(frame)

    def rescan_all(self) -> None:
        """Look at every unfinished frame of every job again at the next plan (liveness)."""
        self._cursor.clear()
        self._reopened.clear()
        self._own_cursor.clear()
        self._own_reopened.clear()

    def _start_of(self, spec: JobSpec) -> int:
        start = self._cursor.get(spec.id, 0)
        frames = self._reopened.pop(spec.id, None)
        if frames:
            size = max(1, spec.chunk)
            for frame in frames:
                position = frame_position(spec.runs, frame)
                if position is not None:
                    start = min(start, position // size)
            self._cursor[spec.id] = start
        return start

    def _skip_finished(self, ledger: Ledger, spec: JobSpec, start: int, count: int) -> int:
        """The cursor moved past the finished chunks from ``start`` in one pass over the
        ledger's frame table (no per-frame lookups), where the chunks are in frame order (the
        default order): a cursor set back to the first chunk (a rescan) costs microseconds per
        thousand frames, not a lookup per frame. Other orders advance chunk by chunk in plan."""
        if not in_frame_order(spec):
            return start
        size = max(1, spec.chunk)
        position = ledger.first_unfinished(spec.id, start * size)
        if position is None:
            return start
        index = min(position // size, count)
        if index > start:
            self._cursor[spec.id] = index
            return index
        return start

    def _own_chunks(
        self,
        ledger: Ledger,
        spec: JobSpec,
        peers: Sequence[str],
        homes: Sequence[str | None],
        start: int,
        want: int,
        free_of: Callable[[tuple[int, ...]], tuple[list[int], bool]],
    ) -> list[Claim] | None:
        """The first ``want`` chunks homed here from chunk ``start`` on that hold frames to
        claim, in order, found through the list of this peer's own chunks rather than by
        looking at every chunk between. In a long job of short frames the peers' places drift
        apart: a peer whose cursor waited behind a slower peer's chunks looked at thousands of
        other chunks a plan (5-7 ms at 100,000 frames, 1.2 ms at 2,000). None when fewer
        are left: the caller then looks at every chunk (steals, priorities)."""
        key = tuple(sorted(peers))
        cached = self._own.get(spec.id)
        if cached is None or cached[0] != key:
            own = [i for i, home in enumerate(homes) if home == self.node_id]
            self._own[spec.id] = (key, own)
            self._own_cursor.pop(spec.id, None)
            self._own_reopened.pop(spec.id, None)
        else:
            own = cached[1]
        pos = self._own_cursor.get(spec.id, 0)  # dropped above when the peers changed
        size = max(1, spec.chunk)
        for frame in self._own_reopened.pop(spec.id, ()):  # of any chunk: ours count
            position = frame_position(spec.runs, frame)
            if position is not None:
                at_chunk = bisect.bisect_left(own, position // size)
                if at_chunk < len(own) and own[at_chunk] == position // size:
                    pos = min(pos, at_chunk)
        pos = max(pos, bisect.bisect_left(own, start))  # every chunk before start is finished
        all_chunks = self.chunks(spec)
        claims: list[Claim] = []
        advancing = True
        for i in range(pos, len(own)):
            chunk = all_chunks[own[i]]
            if advancing:
                if all(ledger.frame_status(spec.id, f) in FINISHED for f in chunk):
                    pos = i + 1
                    continue
                advancing = False
            free, _takeover = free_of(chunk)  # none: no lapsed claim in this job
            if free:
                claims.append(Claim(spec.id, tuple(free), False, True, self.node_id))
                if len(claims) >= want:
                    break
        self._own_cursor[spec.id] = pos
        return claims if len(claims) >= want else None

    def _lagging(
        self,
        other: list[tuple[int, Claim]],
        index: int,
        spec: JobSpec,
        peers: Sequence[str],
        alive: set[str] | None,
        busy_homes: set[str],
    ) -> Claim | None:
        """An earlier chunk to take instead of our own next one at ``index``: one a whole
        round (a chunk per peer) behind it, whose home is alive and busy (every slot) with
        earlier chunks still (the chunk is not that home's next), and of which this peer is the
        first backup, so that
        one peer, the same on every peer's reckoning, takes it. Keeps the farm's frames close
        to their order when homes' queues drift apart."""
        ranks = self.ranks(spec, peers)
        homes = self.homes(spec, peers)
        for early, claim in other:
            if index - early < len(peers):
                break
            if alive is not None and homes[early] not in alive:
                continue  # homed across a split: the other side renders it
            if homes[early] not in busy_homes:
                continue  # its home is free: it is about to take it (or we cannot tell)
            if ranks[early] == 1 and not claim.takeover:
                other.remove((early, claim))
                return replace(claim, lagging=True)
        return None

    def _leave_retry_to_others(
        self,
        ledger: Ledger,
        job: str,
        frame: int,
        record: FrameRecord,
        peers: Sequence[str],
        alive: set[str] | None,
    ) -> bool:
        """A frame that failed here goes to another peer, while one that has not failed it
        (and is alive) can take it."""
        failed = {key[5] for key, _a in ledger.attempts(job, frame, epoch=record.epoch)}
        if self.node_id not in failed:
            return False
        return any(p not in failed and (alive is None or p in alive) for p in peers)

    def plan(
        self,
        ledger: Ledger,
        *,
        free_slots: int,
        capable: Mapping[str, Sequence[str]],
        expired: Iterable[tuple[str, int]] = (),
        busy: Iterable[tuple[str, int]] = (),
        alive: Iterable[str] | None = None,
        saturated: Iterable[str] = (),
        held: Mapping[str, Collection[int]] | None = None,
    ) -> list[Claim]:
        """Claims for up to ``free_slots`` slots.

        ``capable[job]`` lists the peers (this one included, if it can) that form the job's
        home set; a job missing from ``capable`` or without this peer in it is skipped.
        ``expired`` are claimed frames whose lease ran out or whose owner is gone; ``busy``
        are frames this peer is rendering already. A thief never takes the next chunk of a home
        peer that is ``alive`` and not ``saturated`` (every slot busy): that peer is about to
        claim it, and taking it would only collide. A busy home's next chunk may be stolen.
        ``held[job]`` are frames a dependency does not let start yet (``scheduler.dependencies``).
        """
        alive_set = set(alive) if alive is not None else None
        busy_homes = set(saturated)
        if free_slots <= 0:
            return []
        takeable = set(expired)
        for job, frame in takeable:  # a lapsed claim is looked at wherever the cursor is
            self.reopened(job, frame)
        takeable_jobs = {job for job, _frame in takeable}
        taken = set(busy)
        claims: list[Claim] = []
        waiting_priority: int | None = None  # a job whose frames wait for their home peers
        for spec in job_order(ledger):
            if waiting_priority is not None and ledger.priority(spec.id) < waiting_priority:
                break  # never start a lower-priority frame while a higher one waits
            peers = capable.get(spec.id)
            if not peers or self.node_id not in peers:
                continue
            if self.node_id in ledger.banned(spec.id):
                continue
            records = ledger.frame_records(spec.id)
            held_here = held.get(spec.id, ()) if held else ()
            homes = self.homes(spec, peers) if self.prefer_home else None
            own: list[Claim] = []
            other: list[tuple[int, Claim]] = []
            next_of: set[str | None] = set()
            all_chunks = self.chunks(spec)
            mean = ledger.mean_frame_seconds(spec.id)
            batch = 1 if spec.id in self._unbatched else batch_size(mean, spec.chunk)
            start = self._skip_finished(ledger, spec, self._start_of(spec), len(all_chunks))

            def free_of(
                chunk: tuple[int, ...],
                spec: JobSpec = spec,
                records: Mapping[int, FrameRecord] = records,
                held_here: Collection[int] = held_here,
                peers: Sequence[str] = peers,
            ) -> tuple[list[int], bool]:
                """The frames of ``chunk`` this peer may claim, and whether they are taken
                over (a lapsed claim)."""
                free = []
                takeover = False
                for frame in chunk:
                    if (spec.id, frame) in taken or frame in held_here:
                        continue
                    record = records.get(frame)
                    if record is not None and record.status == Status.RETRYING:
                        if self._leave_retry_to_others(
                            ledger, spec.id, frame, record, peers, alive_set
                        ):
                            continue
                        free.append(frame)
                    elif record is None or record.status in OPEN:
                        free.append(frame)
                    elif record.status == Status.CLAIMED and (spec.id, frame) in takeable:
                        free.append(frame)
                        takeover = True
                return free, takeover

            if (
                batch > 1
                and homes is not None
                and spec.id not in takeable_jobs
                and in_frame_order(spec)
            ):
                mine_first = self._own_chunks(
                    ledger, spec, peers, homes, start, free_slots * batch, free_of
                )
                if mine_first is not None:  # the slots are filled with this peer's own
                    picked = merge_claims(mine_first, batch)[: free_slots - len(claims)]
                    for claim in picked:
                        taken.update((claim.job, f) for f in claim.frames)
                    claims.extend(picked)
                    if len(claims) >= free_slots:
                        break
                    continue
            else:  # not this way (any more): keep no place, so reopened frames pile up nowhere
                self._own_cursor.pop(spec.id, None)
                self._own_reopened.pop(spec.id, None)
            advancing = True
            for index in range(start, len(all_chunks)):
                chunk = all_chunks[index]
                if advancing:
                    if all(ledger.frame_status(spec.id, f) in FINISHED for f in chunk):
                        self._cursor[spec.id] = index + 1
                        continue
                    advancing = False
                free, takeover = free_of(chunk)
                if not free:
                    continue
                if takeover:
                    # Takeovers and fresh claims are separate ledger events: keep them apart.
                    free = [f for f in free if (spec.id, f) in takeable]
                if takeover and alive_set is not None:
                    # A lapsed claim goes first to one live peer, chosen the same way by all.
                    live = [p for p in peers if p in alive_set]
                    mine = rendezvous_home(f"{spec.id}/takeover", index, live) == self.node_id
                else:
                    mine = homes is None or homes[index] == self.node_id
                home_peer = homes[index] if homes is not None else None
                claim = Claim(spec.id, tuple(free), takeover, mine, home_peer)
                if mine:
                    # Short frames claimed several at a time take no lagging chunk: it would
                    # split the batch into claims of one frame, each asked of its home first,
                    # to put back in order frames done a few milliseconds apart.
                    lagging = (
                        self._lagging(other, index, spec, peers, alive_set, busy_homes)
                        if homes and batch == 1
                        else None
                    )
                    own.append(claim if lagging is None else lagging)
                    if len(own) >= free_slots * batch:
                        break
                    continue
                home = homes[index] if homes is not None else None
                # A failed frame is left to others by the peer it failed on (its home, often):
                # reserving it for that peer would leave it to nobody. A frame handed back (a
                # graceful stop) goes to whoever is idle too, not to its busy home.
                retry = any(
                    ledger.frame_status(spec.id, f) in (Status.RETRYING, Status.RELEASED)
                    for f in free
                )
                if (
                    not takeover
                    and not retry
                    and home not in next_of
                    and (alive_set is None or home in alive_set)
                    and home not in busy_homes
                ):
                    next_of.add(home)  # the home peer's next chunk: leave it to that peer
                    continue
                other.append((index, claim))
            own = merge_claims(own, batch) if batch > 1 else own
            picked = own[: free_slots - len(claims)]
            if len(picked) < free_slots - len(claims) and not own:
                # Nothing of our own left in this job: steal, chunks of live homes (this side
                # of a split) first, then the chunks this peer is the first backup of (thieves
                # spread over different chunks), earliest first (frames finish near their
                # order) but from the back across a split. A live home's next chunk is never
                # taken: the home is about to.
                ranks = self.ranks(spec, peers) if homes is not None else None

                keyed = []
                for index, claim in other:
                    home = homes[index] if homes is not None else None
                    away = alive_set is not None and home not in alive_set
                    # Chunks of this side's homes earliest first; chunks homed across a split
                    # from the back, away from where the other side works.
                    order_key = -index if away else index
                    keyed.append(((away, ranks[index] if ranks else 0, order_key), claim))
                stolen = [claim for _key, claim in sorted(keyed, key=lambda kc: kc[0])]
                want = free_slots - len(claims) - len(picked)
                picked += merge_stolen(stolen, batch, want) if batch > 1 else stolen[:want]
            for claim in picked:
                taken.update((claim.job, f) for f in claim.frames)
            claims.extend(picked)
            if len(claims) >= free_slots:
                break
            if next_of:
                waiting_priority = ledger.priority(spec.id)
        return claims
