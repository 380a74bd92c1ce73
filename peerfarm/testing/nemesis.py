"""A nemesis (Jepsen style) for the simulated farm: seeded random histories of faults.

One history: a few peers render a few jobs while a nemesis crashes and restarts peers (kill -9
semantics), freezes them longer than a lease (SIGSTOP), splits and heals the network, drops and
reorders datagrams, skews clocks by up to a day, and plays a user who retries, pauses, resumes
and cancels; renderers fail some frames. Then the faults stop, every peer comes back, and once
gossip quiesces the farm-wide invariants must hold (:meth:`SimFarm.check_invariants`): every
frame of every job that was not cancelled ends done or failed, every replica's digest is equal,
and every delivered file holds the bytes the ledger's winning done record names.

A history is a function of its seed (and of this code), so a failure is replayed with
``python -m peerfarm.testing.nemesis --seed N``; ``--histories K`` runs many and prints the seeds
of the failures. The CI layer runs a few hundred small histories; the long mode thousands.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from ..gossip.config import GossipConfig
from ..ledger.model import JobState
from .fakes import sim_clock
from .sim import Invariants, SimFarm, SimPeer

DAY_MS = 24 * 3600 * 1000


@dataclass
class History:
    """What a history did, for the report of a failure."""

    seed: int
    peers: int = 0
    events: list[str] = field(default_factory=list)
    invariants: Invariants | None = None

    def note(self, at: float, text: str) -> None:
        self.events.append(f"{at:7.2f} {text}")


def _fails(seed: int, rate: float) -> Callable[[str, int], bool]:
    """A renderer failure decided by (seed, node, frame): some frames fail on some peers, and
    a few frames fail everywhere (they end failed after their retries)."""

    def fail(node: str, frame: int) -> bool:
        h = hashlib.blake2b(f"{seed}:{node}:{frame}".encode(), digest_size=4).digest()
        everywhere = hashlib.blake2b(f"{seed}:{frame}".encode(), digest_size=4).digest()
        return int.from_bytes(h) / 2**32 < rate or int.from_bytes(everywhere) / 2**32 < rate / 4

    return fail


async def run_history(
    seed: int,
    root: Path,
    *,
    min_peers: int = 5,
    max_peers: int = 8,
    fault_seconds: float = 6.0,
    settle_timeout: float = 240.0,
    fail_rate: float | None = None,
) -> History:
    """Run one history in ``root`` (an empty folder); raises AssertionError when an invariant
    breaks (the history's events are in the message)."""
    rng = random.Random(seed)
    history = History(seed)
    config = GossipConfig.fast()
    n = rng.randint(min_peers, max_peers)
    history.peers = n
    farm = SimFarm(
        root,
        seed=seed,
        config=config,
        renderer_seconds=rng.choice([0.05, 0.1, 0.2]),
        fail=_fails(seed, rng.choice([0.0, 0.02, 0.08]) if fail_rate is None else fail_rate),
        slots=rng.choice([1, 1, 2]),
    )
    try:
        async with farm.running():
            peers = await farm.start(n)
            jobs: list[str] = []
            for index in range(rng.randint(1, 3)):
                submitter = rng.choice(peers)
                frames = rng.randint(4, 24)
                job = await farm.submit(
                    submitter,
                    f"1-{frames}",
                    name=f"job{index}",
                    chunk=rng.choice([1, 1, 2, 3]),
                    retries=rng.randint(1, 3),
                    priority=rng.randint(0, 2),
                )
                jobs.append(job)
                history.note(
                    trio.current_time(), f"submit {index} ({frames} frames) on {submitter.name}"
                )
            await _faults(farm, rng, jobs, history, fault_seconds)
            await _calm(farm, jobs, history)
            await farm.wait_until(
                lambda: all(farm.job_finished(j) for j in jobs),
                timeout=settle_timeout,
                poll=0.1,
                what="every job finished",
            )
            await farm.wait_until(farm.converged, timeout=60, poll=0.1, what="equal ledgers")
            history.invariants = farm.check_invariants()
    except (AssertionError, BaseExceptionGroup) as exc:
        found = _assertion(exc)
        if found is None:
            raise
        story = "\n".join(history.events)
        raise AssertionError(f"nemesis seed {seed} ({n} peers): {found}\n{story}") from None
    return history


def _assertion(exc: BaseException) -> AssertionError | None:
    """The AssertionError inside (possibly nested) exception groups, if that is all there is."""
    if isinstance(exc, AssertionError):
        return exc
    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        return _assertion(exc.exceptions[0])
    return None


async def _faults(
    farm: SimFarm, rng: random.Random, jobs: list[str], history: History, seconds: float
) -> None:
    """Random faults for ``seconds`` of virtual time; each one is undone later."""
    end = trio.current_time() + seconds
    while trio.current_time() < end:
        await trio.sleep(rng.uniform(0.05, 0.6))
        now = trio.current_time()
        live = farm.live()
        kind = rng.choice(
            ["crash", "restart", "pause", "resume", "split", "heal", "loss", "skew", "user"]
        )
        if kind == "crash" and len(live) > 2:
            victim = rng.choice(live)
            farm.crash(victim.node_id)
            history.note(now, f"crash {victim.name}")
        elif kind == "restart" and farm.crashed:
            node_id = rng.choice(sorted(farm.crashed))
            peer = await farm.restart(node_id)
            history.note(now, f"restart {peer.name}")
        elif kind == "pause" and len(live) > 2:
            victim = rng.choice(live)
            farm.pause(victim.node_id)
            history.note(now, f"pause {victim.name}")
        elif kind == "resume" and farm.paused:
            node_id = rng.choice(sorted(farm.paused))
            farm.resume(node_id)
            history.note(now, f"resume {farm.peers[node_id].name}")
        elif kind == "split":
            ids = [p.node_id for p in farm.peers.values()]
            rng.shuffle(ids)
            cut = rng.randint(1, len(ids) - 1)
            farm.partition(ids[:cut], ids[cut:])
            history.note(now, f"split {cut}|{len(ids) - cut}")
        elif kind == "heal":
            farm.heal()
            history.note(now, "heal")
        elif kind == "loss":
            loss = rng.choice([0.0, 0.05, 0.2])
            farm.set_loss(loss, delay=0.001, jitter=rng.choice([0.0, 0.01]))
            history.note(now, f"loss {loss}")
        elif kind == "skew" and live:
            peer = rng.choice(live)
            ms = rng.choice([-DAY_MS, -60_000, 0, 5_000, DAY_MS + 1])
            farm.skew_clock(peer.node_id, ms)
            history.note(now, f"skew {peer.name} {ms} ms")
        elif kind == "user" and (awake := [p for p in live if p.node_id not in farm.paused]):
            # A frozen daemon answers no one: the user asks one that runs.
            await _user(farm, rng, rng.choice(awake), rng.choice(jobs), history)


async def _user(
    farm: SimFarm, rng: random.Random, peer: SimPeer, job: str, history: History
) -> None:
    ledger = peer.node.ledger
    spec = ledger.job(job)
    if spec is None:
        return
    action = rng.choice(["retry", "retry", "pause", "resume", "cancel"])
    if action == "cancel" and rng.random() < 0.7:
        action = "retry"  # cancels end a job's story early: keep them rare
    frames = None
    if action == "retry":
        picked = rng.sample(list(spec.frames), k=min(len(spec.frames), rng.randint(1, 3)))
        frames = ",".join(map(str, sorted(picked)))
    try:
        await farm.act(peer, job, action, frames)
    except Exception as exc:  # a user's mistake is refused: part of the history
        history.note(trio.current_time(), f"{action} on {peer.name} refused: {exc}")
        return
    history.note(trio.current_time(), f"{action} {frames or ''} on {peer.name}")


async def _calm(farm: SimFarm, jobs: list[str], history: History) -> None:
    """Undo every fault: heal, no loss, resume and restart every peer, resume paused jobs."""
    farm.heal()
    farm.set_loss(0.0)
    for node_id in sorted(farm.paused):
        farm.resume(node_id)
    for node_id in sorted(farm.crashed):
        await farm.restart(node_id)
    history.note(trio.current_time(), "calm: healed, resumed, restarted")
    await farm.wait_until(farm.membership_converged, timeout=60, poll=0.1, what="membership")
    peer = farm.live()[0]

    def knows_every_job() -> bool:
        return all(peer.node.ledger.job(job) is not None for job in jobs)

    await farm.wait_until(knows_every_job, timeout=30, poll=0.1, what="jobs known")
    # The user looks once every peer agrees (a pause written moments ago may still be on its
    # way), and resumes what is paused.
    await farm.wait_until(farm.converged, timeout=60, poll=0.1, what="equal ledgers")
    for job in jobs:
        if peer.node.ledger.job_state(job) == JobState.PAUSED:
            await farm.act(peer, job, "resume")
            history.note(trio.current_time(), f"resume job {job[:8]}")


def replay_root(seed: int) -> Path:
    """A fixed folder per seed: job ids hash their output path, so a replay needs the same."""
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() else Path(tempfile.gettempdir())
    return base / "peerfarm-nemesis" / str(seed)


def run_seed(seed: int, **kw: float) -> History:
    """Run one history in its fixed folder, deterministically (trio's scheduler seeded)."""
    logging.getLogger("peerfarm").setLevel(logging.CRITICAL)  # faults make peers chatty
    root = replay_root(seed)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    _seed_trio_scheduler(seed)
    try:
        return trio.run(lambda: run_history(seed, root, **kw), clock=sim_clock())  # type: ignore[arg-type]
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _seed_trio_scheduler(seed: int) -> None:
    """trio reverses half its scheduling batches at random; seed that for replays."""
    from trio._core import _run

    rand = getattr(_run, "_r", None)
    if isinstance(rand, random.Random):
        rand.seed(seed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, help="replay one history")
    parser.add_argument("--histories", type=int, default=200)
    parser.add_argument("--first", type=int, default=0, help="first seed")
    parser.add_argument("--max-peers", type=int, default=20)
    parser.add_argument(
        "--fault-free",
        action="store_true",
        help="no faults and no renderer failures: every frame must render exactly once",
    )
    args = parser.parse_args(argv)
    seeds = [args.seed] if args.seed is not None else range(args.first, args.first + args.histories)
    failures = []
    started = time.monotonic()
    totals = {"frames": 0, "renders": 0, "duplicates": 0}
    for count, seed in enumerate(seeds, 1):
        try:
            if args.fault_free:
                history = run_seed(seed, max_peers=args.max_peers, fault_seconds=0.0, fail_rate=0)
                assert history.invariants is not None
                if history.invariants.duplicates:
                    raise AssertionError(f"{history.invariants.duplicates} duplicate renders")
            else:
                history = run_seed(seed, max_peers=args.max_peers)
        except AssertionError as exc:
            failures.append(seed)
            print(f"FAIL seed {seed}: {str(exc)[:2000]}", flush=True)
            continue
        inv = history.invariants
        assert inv is not None
        totals["frames"] += inv.frames
        totals["renders"] += inv.renders
        totals["duplicates"] += inv.duplicates
        if count % 50 == 0 or args.seed is not None:
            print(
                f"{count} histories, {len(failures)} failed, {time.monotonic() - started:.0f} s,"
                f" {totals}",
                flush=True,
            )
    print(f"done: {len(seeds)} histories, failures: {failures or 'none'}, {totals}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
