"""The push-pull session (peer.antientropy): who speaks, and a full exchange both ways."""

from __future__ import annotations

import hashlib
import random

from peerfarm.gossip.config import GossipConfig
from peerfarm.gossip.membership import Membership
from peerfarm.ledger import Ledger
from peerfarm.ledger.model import SceneRef
from peerfarm.peer.antientropy import SyncSession

CFG = GossipConfig.fast()
A, B = "a" * 16, "b" * 16


def _ledger(node: str, frames: int) -> Ledger:
    ledger = Ledger(node)
    if frames:
        spec = ledger.new_job(
            name="j", submitter_name=node, renderer="command", options={},
            scene=SceneRef(hashlib.sha256(node.encode()).digest(), "s.sh", 1),
            frames=range(1, frames + 1), wall_ms=1_000,
        )  # fmt: skip
        ledger.submit(spec)
        for frame in range(1, frames + 1):
            ledger.claim(spec.id, [frame], 2_000 + frame)
    return ledger


def _member(node: str, port: int) -> Membership:
    return Membership(node, ("127.0.0.1", port), {}, CFG, random.Random(port), 0.0)


def test_exchange_names_the_peer_and_converges_both_ways() -> None:
    seed, joiner = _ledger(A, 2_500), _ledger(B, 3)
    init = SyncSession(joiner, _member(B, 2), initiator=True)
    resp = SyncSession(seed, _member(A, 1), initiator=False)
    to_resp = [init.opening()]
    while not (init.done and resp.done):
        to_init = []
        for message in to_resp:
            step = resp.receive(message)
            seed.merge(step.deltas, 10**13)
            to_init.extend(step.send)
        to_resp = []
        for message in to_init:
            step = init.receive(message)
            joiner.merge(step.deltas, 10**13)
            to_resp.extend(step.send)
    assert resp.peer == B and init.peer == A
    assert seed.state_digest() == joiner.state_digest()
    assert init.received == resp.sent > 2_500 and resp.received == init.sent > 3
