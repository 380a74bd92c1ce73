"""/metrics against a small real job on two real daemons (loopback, no mDNS).

The exposition must parse with prometheus_client's own parser, use proper counter types, and
its counters must agree with the job: every frame rendered once across the farm, none failed,
per-peer render seconds for the peers that rendered, members alive on both sides.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from peerfarm.testing.daemons import Daemon, LocalFarm, wait_until
from tests.support import TINY_FRAME

pytestmark = pytest.mark.slow

FRAMES = 6


def scrape(peer: Daemon) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """{sample name: {sorted labels: value}} from the peer's /metrics, parsed strictly."""
    response = peer.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=")
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(response.text):
        types[family.name] = family.type
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    assert types["peerfarm_frames_rendered"] == "counter"
    assert types["peerfarm_members"] == "gauge"
    return out


def value(
    metrics: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str, **labels: str
) -> float:
    return metrics.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


def test_metrics_format_and_counters_match_a_real_job(tmp_path: Path) -> None:
    with LocalFarm(tmp_path) as farm:
        farm.start_all(["m1", "m2"], web=True, allow_command=True)
        m1, m2 = farm.daemons
        work = tmp_path / "work"
        work.mkdir()
        job = m1.cli_json(
            "submit", str(farm.script("tiny.sh", TINY_FRAME)), f"1-{FRAMES}", cwd=work
        )
        job_id = job["job"]

        def delivered() -> bool:
            farm.check_running()
            view = m1.cli_json("status", job_id)
            return (
                view["jobs"][0]["frames_delivered"] == FRAMES
                and len(list(Path(job["output"]).glob("*.txt"))) == FRAMES
            )

        wait_until(delivered, 60, f"the {FRAMES} frames to be done and delivered")
        one, two = scrape(m1), scrape(m2)

    rendered = {
        "m1": value(one, "peerfarm_frames_rendered_total"),
        "m2": value(two, "peerfarm_frames_rendered_total"),
    }
    assert sum(rendered.values()) == FRAMES, rendered
    for metrics in (one, two):
        assert value(metrics, "peerfarm_frames_failed_total") == 0
        assert value(metrics, "peerfarm_frames_duplicated_total") == 0
        assert value(metrics, "peerfarm_members", state="alive") == 2
        assert value(metrics, "peerfarm_members", state="incompatible") == 0
        assert value(metrics, "peerfarm_gossip_datagrams_total", direction="sent") > 0
        assert value(metrics, "peerfarm_gossip_bytes_total", direction="received") > 0
        assert value(metrics, "peerfarm_syncs_total") >= 1
        # the replicated ledger gives every peer the same per-peer totals once converged
        assert sum(metrics["peerfarm_farm_frames_done"].values()) == FRAMES
    for name, count in rendered.items():
        metrics = one if name == "m1" else two
        seconds = value(metrics, "peerfarm_render_seconds_total", peer=name)
        assert (seconds > 0) == (count > 0), (name, count, seconds)
    # outputs rendered on m2 had to travel to m1 (the submitter) to be delivered
    assert value(one, "peerfarm_frames_delivered_total") == FRAMES
    assert (value(one, "peerfarm_transfer_bytes_total") > 0) == (rendered["m2"] > 0)
    info = one["peerfarm_info"]
    ((labels, one_value),) = info.items()
    assert dict(labels)["name"] == "m1" and one_value == 1
