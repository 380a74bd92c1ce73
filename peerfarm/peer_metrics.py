"""One peer's counters and the farm's per-peer totals, as the ``/metrics`` dict.

``peerfarm.metrics`` turns this dict into Prometheus text: keys ending in ``_total`` are
counters, ``{"label", "values"}`` maps are labelled, the rest gauges. The farm's totals (frames
done and render seconds per peer) come from counters the ledger keeps as frames finish, so a
scrape costs nothing per frame.
"""

from __future__ import annotations

from typing import Any

from . import __version__
from .control import MetricsView
from .gossip.membership import MemberState
from .gossip.transport import versions_text
from .peer import Node
from .status import names_by_id


def metrics_view(node: Node) -> MetricsView:
    """What ``GET /metrics`` shows for ``node``."""
    stats = node.stats
    net = node.transport.stats
    members = node.members()
    states = {state.name.lower(): 0 for state in MemberState}
    for member in members:
        states[member.state.name.lower()] += 1
    states["incompatible"] = len(node.incompatible)
    names = names_by_id(members)
    done_frames: dict[str, float] = {}
    done_seconds: dict[str, float] = {}
    for node_id, (count, seconds) in node.ledger.done_by_node().items():
        peer = names.get(node_id, node_id[:8])
        done_frames[peer] = done_frames.get(peer, 0) + count
        done_seconds[peer] = done_seconds.get(peer, 0.0) + seconds
    return {
        "info": {
            "node": node.node_id,
            "name": node.name,
            "version": __version__,
            "protocol": versions_text(),
        },
        "frames_rendered_total": stats.frames_rendered,
        "frames_failed_total": stats.frames_failed,
        "frames_duplicated_total": stats.duplicate_frames,
        "frames_lost_total": stats.frames_lost,
        "lease_takeovers_total": stats.takeovers,
        "render_seconds_total": _labels("peer", stats.render_seconds_by_peer),
        "frames_delivered_total": stats.delivered,
        "delivery_failures_total": stats.delivery_failures,
        "transfer_bytes_total": stats.transfer_bytes,
        "ledger_deltas_sent_total": stats.deltas_sent,
        "ledger_deltas_received_total": stats.deltas_received,
        "syncs_total": stats.syncs,
        "sync_failures_total": stats.sync_failures,
        "bad_messages_total": stats.bad_messages,
        "gossip_datagrams_total": _labels(
            "direction", {"sent": net.datagrams_sent, "received": net.datagrams_received}
        ),
        "gossip_bytes_total": _labels(
            "direction", {"sent": net.bytes_sent, "received": net.bytes_received}
        ),
        "gossip_streams_total": _labels(
            "event",
            {
                "opened": net.streams_opened,
                "accepted": net.streams_accepted,
                "refused": net.streams_refused,
            },
        ),
        "gossip_rejected_total": _labels(
            "reason",
            {
                "auth_failures": net.auth_failures,
                "decode_failures": net.decode_failures,
                "oversized": net.oversized,
                "version_rejected": net.version_rejected,
                "replayed": net.replayed,
                "send_errors": net.send_errors,
            },
        ),
        "members": _labels("state", states),
        "render_slots": node.parts.slots,
        "renders_running": len(node.worker.renders()),
        "farm_frames_done": _labels("peer", done_frames),
        "farm_render_seconds": _labels("peer", done_seconds),
    }


def _labels(label: str, values: dict[str, float] | dict[str, int]) -> dict[str, Any]:
    return {"label": label, "values": dict(values)}
