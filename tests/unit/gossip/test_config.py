"""GossipConfig presets and the derived formulas (retransmit limit, SWIM/Lifeguard timeouts)."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peerfarm.gossip.config import (
    GossipConfig,
    awareness_multiplier,
    expected_confirmations,
    lifeguard_timeout,
    retransmit_limit,
    suspicion_bounds,
    suspicion_timeout,
)

TIMERS = (
    "gossip_interval",
    "probe_interval",
    "probe_timeout",
    "push_pull_interval",
    "lease_timeout",
    "lease_renew_interval",
    "push_defer_max",
)


def test_lan_defaults_are_memberlists() -> None:
    cfg = GossipConfig.lan()
    assert cfg == GossipConfig()
    assert (cfg.gossip_interval, cfg.gossip_fanout) == (0.2, 3)
    assert (cfg.probe_interval, cfg.probe_timeout, cfg.indirect_checks) == (1.0, 0.5, 3)
    assert (cfg.retransmit_mult, cfg.suspicion_mult, cfg.suspicion_max_timeout_mult) == (4, 4, 6)
    assert (cfg.push_pull_interval, cfg.udp_payload_limit, cfg.envelope_overhead) == (3, 1400, 32)
    assert (cfg.lease_timeout, cfg.lease_renew_interval, cfg.home_grace) == (10, 2, 60)
    assert (cfg.stream_timeout, cfg.awareness_max_multiplier, cfg.join_retry_interval) == (10, 8, 1)
    assert cfg.message_budget == 1368


def test_wan_is_slower_and_fast_is_about_ten_times_faster() -> None:
    lan, wan, fast = GossipConfig.lan(), GossipConfig.wan(), GossipConfig.fast()
    for name in TIMERS:
        assert getattr(wan, name) > getattr(lan, name), name
        assert getattr(lan, name) / 40 <= getattr(fast, name) <= getattr(lan, name) / 5, name
    assert (wan.probe_interval, wan.probe_timeout, wan.suspicion_mult) == (5.0, 3.0, 6)


@pytest.mark.parametrize("cfg", [GossipConfig.lan(), GossipConfig.wan(), GossipConfig.fast()])
def test_presets_are_internally_consistent(cfg: GossipConfig) -> None:
    assert cfg.probe_timeout < cfg.probe_interval
    assert cfg.lease_renew_interval * 3 <= cfg.lease_timeout
    assert cfg.push_pull_interval * 3 <= cfg.lease_timeout  # repair well inside a lease
    assert cfg.home_grace < cfg.dead_node_reclaim
    assert cfg.gossip_interval < cfg.probe_interval
    # A deferred finished frame is passed on well before its dead renderer loses its lease.
    assert cfg.push_defer_max * 4 <= cfg.suspicion_mult * cfg.probe_interval


def test_a_deferral_as_long_as_the_time_to_declare_a_peer_dead_is_refused() -> None:
    with pytest.raises(ValueError, match="push_defer_max"):
        GossipConfig.lan().replace(push_defer_max=2.0)


def test_config_is_frozen_and_replace_copies() -> None:
    cfg = GossipConfig.lan()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.probe_interval = 2.0  # type: ignore[misc]
    changed = cfg.replace(probe_timeout=0.3)
    assert changed.probe_timeout == 0.3 and cfg.probe_timeout == 0.5


@pytest.mark.parametrize(("n", "expected"), [(1, 4), (9, 4), (10, 8), (99, 8), (100, 12)])
def test_retransmit_limit(n: int, expected: int) -> None:
    assert retransmit_limit(4, n) == expected


@pytest.mark.parametrize(("n", "expected"), [(0, 4.0), (1, 4.0), (10, 4.0), (100, 8.0)])
def test_suspicion_timeout(n: int, expected: float) -> None:
    assert suspicion_timeout(4, n, 1.0) == pytest.approx(expected)
    assert suspicion_timeout(4, n, 0.5) == pytest.approx(expected / 2)


def test_suspicion_bounds_and_expected_confirmations() -> None:
    cfg = GossipConfig.lan()
    low, high = suspicion_bounds(cfg, 50)
    assert low == pytest.approx(4 * math.log10(50))
    assert high == pytest.approx(6 * low)
    assert expected_confirmations(cfg, 50) == 2
    assert expected_confirmations(cfg, 3) == 0  # too few members to ever confirm


def test_lifeguard_timeout_endpoints() -> None:
    assert lifeguard_timeout(1.0, 6.0, 0, 2) == 6.0
    assert lifeguard_timeout(1.0, 6.0, 2, 2) == pytest.approx(1.0)
    assert lifeguard_timeout(1.0, 6.0, 9, 2) == 1.0
    assert lifeguard_timeout(1.0, 6.0, 0, 0) == 1.0
    assert 1.0 < lifeguard_timeout(1.0, 6.0, 1, 2) < 6.0


@given(st.floats(0.01, 100), st.floats(1, 10), st.integers(0, 20), st.integers(0, 10))
def test_lifeguard_timeout_shrinks_with_confirmations(
    low: float, mult: float, c: int, k: int
) -> None:
    high = low * mult
    now = lifeguard_timeout(low, high, c, k)
    assert low <= now <= high
    assert lifeguard_timeout(low, high, c + 1, k) <= now


def test_awareness_multiplier_is_capped() -> None:
    cfg = GossipConfig.lan()
    assert [awareness_multiplier(s, cfg) for s in (-1, 0, 1, 7, 50)] == [1, 1, 2, 8, 8]


def test_a_push_pull_slower_than_the_lease_is_refused() -> None:
    """Anti-entropy must repair lost news before a lease could lapse on its account."""
    with pytest.raises(ValueError, match="push_pull_interval"):
        GossipConfig(push_pull_interval=10.0, lease_timeout=10.0)
    with pytest.raises(ValueError, match="push_pull_interval"):
        GossipConfig.lan().replace(lease_timeout=5.0)
