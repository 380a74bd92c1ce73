"""The ``/metrics`` endpoint: a peer's counters in the Prometheus text format.

This module owns the exposition and nothing else: it turns the plain dict that
:meth:`peerfarm.control.FarmControl.metrics` returns into metric families at scrape time
(a custom ``prometheus_client`` collector, so nothing is copied or cached between scrapes).
The dict's shape is the whole contract, so a control (real or fake) never imports this module:

- ``"NAME_total": number`` is a counter ``peerfarm_NAME_total``;
- ``"NAME_total": {"label": L, "values": {v: number}}`` is a counter with one label ``L``;
- ``"NAME": {"label": L, "values": {...}}`` is a gauge with one label; ``"NAME": number`` a gauge;
- ``"info": {key: text}`` is ``peerfarm_info{key="text",...} 1``;
- any other mapping is flattened into gauges ``NAME_KEY`` (older controls); text and booleans
  elsewhere are skipped.

Help texts live in :data:`HELP`; a name missing there gets a generic one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

PREFIX = "peerfarm_"

#: What each metric means (name without prefix and without ``_total``).
HELP: dict[str, str] = {
    "info": "This peer: node id, name, peerfarm version and protocol versions (value 1).",
    "frames_rendered": "Frames this peer rendered and recorded as done.",
    "frames_failed": "Frame attempts that failed on this peer (renderer error or timeout).",
    "frames_duplicated": "Frames this peer rendered after another peer had already won them.",
    "frames_lost": "Renders this peer stopped because another peer owned the claim.",
    "lease_takeovers": "Frames this peer claimed after another peer's lease expired.",
    "render_seconds": "Seconds of rendering recorded by this peer, by peer name.",
    "frames_delivered": "Frames this peer copied into the output folders of its own jobs.",
    "delivery_failures": "Delivery attempts of done frames that failed (retried later).",
    "transfer_bytes": "Bytes of scenes and outputs this peer fetched from other peers.",
    "ledger_deltas_sent": "Ledger entries this peer published.",
    "ledger_deltas_received": "Ledger entries this peer received (duplicates included).",
    "syncs": "Push-pull anti-entropy exchanges completed (either side).",
    "sync_failures": "Push-pull exchanges this peer started that failed.",
    "bad_messages": "Messages from peers that were malformed and dropped.",
    "gossip_datagrams": "Authenticated gossip datagrams, by direction.",
    "gossip_bytes": "Bytes of gossip (datagrams and streams), by direction.",
    "gossip_streams": "Gossip TCP streams, by what happened to them.",
    "gossip_rejected": "Inputs the transport dropped, by reason.",
    "members": "Peers in this peer's member table by state (itself included).",
    "render_slots": "Frames this peer renders at once.",
    "renders_running": "Renders running on this peer now.",
    "farm_frames_done": "Done frames in the ledger, by the peer that rendered them.",
    "farm_render_seconds": "Render seconds of done frames in the ledger, by peer.",
}

_NAME = re.compile(r"[^a-zA-Z0-9_]")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def metric_name(key: str) -> str:
    """A dict key as a metric name (without prefix): anything unsafe becomes ``_``."""
    return _NAME.sub("_", key)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _help(name: str) -> str:
    return HELP.get(name, f"peerfarm {name}")


def _labelled(value: Any) -> tuple[str, dict[str, float]] | None:
    """``(label, {label value: number})`` if ``value`` has the labelled shape."""
    if not isinstance(value, Mapping) or set(value) != {"label", "values"}:
        return None
    label, values = value["label"], value["values"]
    if not isinstance(label, str) or not _LABEL.match(label) or not isinstance(values, Mapping):
        return None
    out: dict[str, float] = {}
    for key, raw in values.items():
        number = _number(raw)
        if number is not None:
            out[str(key)] = number
    return label, out


def families(metrics: Mapping[str, Any]) -> Iterator[Metric]:
    """The metric families that describe ``metrics`` (see the module docstring)."""
    for key, value in sorted(metrics.items()):
        name = metric_name(str(key))
        if name == "info" and isinstance(value, Mapping):
            labels = {metric_name(str(k)): str(v) for k, v in sorted(value.items())}
            info = GaugeMetricFamily(PREFIX + "info", _help("info"), labels=list(labels))
            info.add_metric(list(labels.values()), 1.0)
            yield info
            continue
        counter = name.endswith("_total")
        base = name[: -len("_total")] if counter else name
        family_type = CounterMetricFamily if counter else GaugeMetricFamily
        labelled = _labelled(value)
        if labelled is not None:
            label, values = labelled
            family = family_type(PREFIX + base, _help(base), labels=[label])
            for label_value, sample in sorted(values.items()):
                family.add_metric([label_value], sample)
            yield family
            continue
        number = _number(value)
        if number is not None:
            yield family_type(PREFIX + base, _help(base), value=number)
        elif isinstance(value, Mapping):
            for sub, sub_number in sorted(_flatten(value, f"{base}_")):
                yield GaugeMetricFamily(PREFIX + sub, _help(sub), value=sub_number)


def _flatten(data: Mapping[str, Any], prefix: str) -> Iterator[tuple[str, float]]:
    for key, value in data.items():
        name = metric_name(f"{prefix}{key}")
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{name}_")
        else:
            number = _number(value)
            if number is not None:
                yield name, number


class FarmCollector(Collector):
    """Reads ``source()`` (e.g. ``Farm.metrics``) at every scrape and describes it."""

    def __init__(self, source: Callable[[], Mapping[str, Any]]) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        yield from families(self.source())


def render(source: Callable[[], Mapping[str, Any]]) -> bytes:
    """One scrape of ``source`` in the Prometheus text exposition format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FarmCollector(source))
    return generate_latest(registry)
