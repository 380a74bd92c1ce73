"""``submit --wait`` polls less often than every half second only as the job's end nears."""

from __future__ import annotations

from peerfarm.follow import MIN_POLL_INTERVAL_S, POLL_INTERVAL_S, poll_interval


def test_the_poll_interval_shrinks_as_the_end_nears() -> None:
    assert poll_interval(240, None) == POLL_INTERVAL_S  # no rate known yet
    assert poll_interval(240, 16.0) == POLL_INTERVAL_S  # 15 s left: the usual half second
    assert poll_interval(4, 16.0) == 0.025  # a quarter second left: a tenth of it
    assert poll_interval(0, 16.0) == MIN_POLL_INTERVAL_S
    assert poll_interval(10, 0.0) == POLL_INTERVAL_S
