"""The gossip benchmark's simulator (bench/gossip.py): everyone reached within budget, and
the same run for the same seed."""

from __future__ import annotations

from bench import gossip


def test_gossip_sim_reaches_everyone_deterministically() -> None:
    first = gossip.simulate(60, seed=7)
    again = gossip.simulate(60, seed=7)
    assert first.reached == 60
    assert 0 < first.t99_s <= first.t100_s < gossip.TARGET_FULL_S
    assert 0 < first.max_bytes_per_peer_s <= gossip.BUDGET_BYTES_PER_S
    assert (first.t100_s, first.datagrams) == (again.t100_s, again.datagrams)
