"""Every peerfarm benchmark in one run: one table, docs/bench/results.json and results.png.

    python bench/run.py [--quick] [--only NAME,...] [--out docs/bench] [--no-install]

This module owns the order of the benchmarks, the shared local farm, the targets table and the
outputs. Ratios matter more than absolute times (the machines are shared and noisy), so every
comparison is measured side by side in this one run. Benchmarks, in order:

  gossip      simulator, N = 10, 100, 1000: one update to 99% / 100% of peers, bytes/peer/s;
              and 4 real daemons: submit on one -> job listed by status on all four
  footprint   idle CPU and RSS per daemon; ledger bytes per frame record at 1,000,000 frames
  schedule    240 x sleep 0.25 on 4 peers x 1 slot, as the user waits for it (`peerfarm submit
              --wait`, CLI included) vs ideal 15 s vs RQ (fork / SimpleWorker) on the same
              script, taking turns, median of 3; and 1000 no-op frames/s vs both RQ workers
              vs the process-spawn ceiling, median of 3
  series      no-op frames/s of one job of 2,000 / 20,000 / 100,000 frames (flat in job size?)
  joiner      a new peer joins a peer holding a 100,000-frame ledger: seconds until it holds it
  failover    SIGKILL a rendering peer -> its frame claimed again, vs the lease timeout
  duplicates  8 simulated peers: duplicated frame-seconds with / without the home preference
  blender     24 frames of the turntable: warm bpy peer vs one bpy process vs one per frame

On a fresh machine it installs what it needs (as root): ``apt-get install -y redis-server``,
and ``rq`` and ``matplotlib`` into this virtualenv (pip). ``--quick`` runs everything at a tiny
size (the test suite's smoke test); its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import (
    ROOT,
    blender,
    duplicates,
    failover,
    footprint,
    gossip,
    joiner,
    local_farm,
    schedule,
)
from bench.install import ensure_matplotlib, ensure_rq, have_module, say

ALL = ("gossip", "footprint", "schedule", "series", "failover", "duplicates", "joiner", "blender")


@dataclass(frozen=True, slots=True)
class Sizes:
    """How big each benchmark runs."""

    gossip_sizes: tuple[int, ...] = (10, 100, 1000)
    peers: int = 4
    preset: str = "lan"
    frames: int = 240
    seconds: float = 0.25
    noop: int = 1000
    idle_window: float = 20.0
    ledger_frames: int = 1_000_000
    dup_peers: int = 8
    dup_frames: int = 400
    blender_frames: int = 24
    visible_repeats: int = 5
    repeats: int = 3
    series: tuple[int, ...] = (2_000, 20_000, 100_000)
    joiner_frames: int = 100_000
    rq_classes: tuple[str, ...] = ("simple", "fork")

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            gossip_sizes=(10,), peers=3, preset="fast", frames=8, seconds=0.05, noop=20,
            idle_window=1.0, ledger_frames=2_000, dup_peers=3, dup_frames=12, blender_frames=1,
            visible_repeats=1, repeats=1, series=(20, 60), joiner_frames=300,
        )


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        commit = ""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    return {
        "host": socket.gethostname(),
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "os": platform.platform(),
        "commit": commit,
        "load_at_start": load,
    }


def _guard(name: str, results: dict[str, Any], fn: Callable[[], Any]) -> None:
    say(f"running {name}")
    started = time.monotonic()
    try:
        results[name] = fn()
    except Exception as exc:  # one broken benchmark must not lose the others' numbers
        traceback.print_exc()
        results[name] = {"error": f"{type(exc).__name__}: {exc}"}
    say(f"{name} took {time.monotonic() - started:.1f} s")


def run_all(sizes: Sizes, only: tuple[str, ...], rq: bool) -> dict[str, Any]:
    results: dict[str, Any] = {}
    if "gossip" in only:
        _guard("gossip", results, lambda: {
            "simulated": [asdict(gossip.simulate(n)) for n in sizes.gossip_sizes],
            "target_full_s": gossip.TARGET_FULL_S,
        })
    needs_farm = {"gossip", "footprint", "schedule", "series", "failover"} & set(only)
    if needs_farm:
        with local_farm(sizes.peers, preset=sizes.preset) as farm:
            if "footprint" in only:
                _guard("footprint", results, lambda: {
                    "idle": footprint.idle(window=sizes.idle_window, farm=farm)})
            if "gossip" in only and "error" not in results.get("gossip", {}):
                results["gossip"]["real"] = gossip.real_daemons(
                    repeats=sizes.visible_repeats, farm=farm)
            if "schedule" in only:
                _guard("schedule", results, lambda: schedule.run(
                    sizes.frames, sizes.seconds, sizes.noop, rq=rq, farm=farm,
                    repeats=sizes.repeats, rq_classes=sizes.rq_classes))
            if "series" in only:
                _guard("series", results, lambda: schedule.series(sizes.series, farm))
            if "failover" in only:
                _guard("failover", results, lambda: failover.run(farm=farm))
    if "footprint" in only and "error" not in results.get("footprint", {}):
        _guard("ledger", results, lambda: footprint.ledger_memory(sizes.ledger_frames))
        results["footprint"]["ledger"] = results.pop("ledger")
    if "duplicates" in only:
        _guard("duplicates", results, lambda: duplicates.run(
            sizes.dup_peers, sizes.dup_frames, sizes.seconds))
    if "joiner" in only:
        _guard("joiner", results, lambda: joiner.run(sizes.joiner_frames, sizes.preset))
    if "blender" in only:
        _guard("blender", results, lambda: blender.run(sizes.blender_frames))
    return results


# --- the table ---------------------------------------------------------------------------------


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}{unit}" if abs(value) < 100 else f"{value:.0f}{unit}"
    return f"{value}{unit}"


def _verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("ok" if ok else "MISSED")


def table_rows(results: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(benchmark, measured, compared with, target, verdict) rows."""
    rows: list[tuple[str, str, str, str, str]] = []
    for name, r in results.items():
        if isinstance(r, dict) and "error" in r:
            rows.append((name, "error", r["error"][:60], "", "FAILED"))
    g = results.get("gossip", {})
    for s in g.get("simulated", []):
        full = s["t100_s"]
        budget = s["budget_bytes_per_peer_s"]
        rows.append((
            f"gossip sim N={s['peers']}",
            f"99% {_fmt(s['t99_s'], ' s')}, 100% {_fmt(full, ' s')}",
            f"{s['bytes_per_peer_s']} B/s/peer (max {s['max_bytes_per_peer_s']})",
            f"100% <= 2.2 s, <= {budget} B/s",
            _verdict(full <= gossip.TARGET_FULL_S and s["max_bytes_per_peer_s"] <= budget),
        ))
    if "real" in g:
        real = g["real"]
        rows.append((f"gossip {real['peers']} daemons", f"{_fmt(real['visible_all_s'], ' s')}",
                     "submit -> visible on all", "", "-"))
    sched = results.get("schedule", {})
    m = sched.get("makespan")
    if m:
        rq_s = [m.get("rq_fork_s"), m.get("rq_simple_s")]
        measured = [x for x in rq_s if x is not None]
        faster = bool(measured) and all(m["peerfarm_s"] < x for x in measured)
        rows.append((
            f"makespan {m['frames']}x{m['seconds_per_frame']} s (submit --wait)",
            f"{_fmt(m['peerfarm_s'], ' s')} ({m['peerfarm_efficiency']:.1%} of ideal)",
            f"ideal {m['ideal_s']} s; RQ fork {_fmt(m.get('rq_fork_s'), ' s')}, "
            f"simple {_fmt(m.get('rq_simple_s'), ' s')}",
            ">= 97%, < both RQ",
            _verdict(m["peerfarm_efficiency"] >= schedule.TARGET_EFFICIENCY and faster),
        ))
    d = sched.get("dispatch")
    if d:
        vs = d.get("peerfarm_vs_simple")
        rows.append((
            f"dispatch {d['frames']} no-op",
            f"{_fmt(d['peerfarm_fps'], ' f/s')}",
            f"RQ fork {_fmt(d.get('rq_fork_fps'))}, simple {_fmt(d.get('rq_simple_fps'))}, "
            f"spawn ceiling {_fmt(d['spawn_ceiling_fps'])}",
            ">= 250 f/s, >= 1.5x simple",
            _verdict(d["peerfarm_fps"] >= schedule.TARGET_RATE
                     and (vs is None or vs >= schedule.TARGET_VS_SIMPLE)),
        ))
    ser = results.get("series", {})
    if ser.get("sizes"):
        steps = ser["sizes"]
        flat = all(r["of_smallest"] >= ser["target_of_smallest"] for r in steps)
        rows.append((
            "dispatch series " + "/".join(f"{r['frames']:,}" for r in steps),
            " / ".join(_fmt(r["fps"], " f/s") for r in steps),
            "of smallest: " + " / ".join(f"{r['of_smallest']:.0%}" for r in steps),
            f">= {ser['target_of_smallest']:.0%} of smallest",
            _verdict(flat),
        ))
    j = results.get("joiner", {})
    if "converged_s" in j:
        rows.append((f"late joiner, {j['frames']:,} frames", _fmt(j["converged_s"], " s"),
                     f"ready {_fmt(j['joiner_ready_s'], ' s')}, then "
                     f"{_fmt(j['converged_after_ready_s'], ' s')}", f"<= {j['target_s']:g} s",
                     _verdict(j["converged_s"] <= j["target_s"])))
    f = results.get("failover", {})
    if "reclaim_s" in f:
        rows.append(("failover (SIGKILL)", _fmt(f["reclaim_s"], " s"),
                     f"lease timeout {f['lease_timeout_s']} s", f"<= {f['target_s']} s",
                     _verdict(f["reclaim_s"] <= f["target_s"])))
    dup = results.get("duplicates", {})
    if "with_home" in dup:
        w, wo = dup["with_home"], dup["without_home"]
        rows.append((f"duplicates {dup['peers']} peers", f"{w['fraction']:.2%} with home",
                     f"{wo['fraction']:.2%} without home", "< 1%",
                     _verdict(w["fraction"] < duplicates.TARGET_FRACTION)))
    b = results.get("blender", {})
    if "peer_s" in b:
        rows.append((f"blender {b['frames']} frames",
                     f"warm peer {_fmt(b.get('peer_after_submit_s', b['peer_s']), ' s')}"
                     f" (+{_fmt(b['peer_submit_s'], ' s')} packing at submit)",
                     f"single {_fmt(b['single_s'], ' s')}, per-frame "
                     f"{_fmt(b['per_frame_s'], ' s')}",
                     "within 5% of single",
                     _verdict(b["peer_overhead"] <= blender.TARGET_OVERHEAD)))
    elif "skipped" in b:
        rows.append(("blender", "skipped", b["skipped"], "", "-"))
    fp = results.get("footprint", {})
    idle = fp.get("idle")
    if idle:
        rows.append((f"idle daemon x{idle['peers']}",
                     f"CPU {idle['cpu_percent_max']}%, RSS {idle['rss_mb_max']} MB (max)",
                     f"over {idle['window_s']} s", "< 1% CPU, < 80 MB",
                     _verdict(idle["cpu_percent_max"] < footprint.TARGET_CPU_PERCENT
                              and idle["rss_mb_max"] < footprint.TARGET_RSS_MB)))
    led = fp.get("ledger")
    if led:
        rows.append((f"ledger {led['frames']:,} frames", f"{led['bytes_per_frame']} B/frame",
                     "resident memory growth", f"<= {footprint.TARGET_BYTES_PER_FRAME} B",
                     _verdict(led["bytes_per_frame"] <= footprint.TARGET_BYTES_PER_FRAME)))
    return rows


def render_table(rows: list[tuple[str, str, str, str, str]]) -> str:
    head = ("benchmark", "peerfarm", "compared with", "target", "")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(5)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [head, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# --- the plot ----------------------------------------------------------------------------------


def plot(results: dict[str, Any], path: Path, title: str) -> bool:
    if not have_module("matplotlib"):
        say("matplotlib missing: no plot")
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    fig.suptitle(title, fontsize=11)
    ours, base, ideal = "#2a7ab0", "#c0504d", "#9bbb59"

    def bars(ax: Any, labels: list[str], values: list[float | None], colors: list[str],
             heading: str, unit: str, target: float | None = None) -> None:
        triples = zip(labels, values, colors, strict=True)
        shown = [(lab, v, c) for lab, v, c in triples if v is not None]
        if not shown:
            ax.set_title(heading + " (not measured)")
            ax.axis("off")
            return
        ax.bar([s[0] for s in shown], [s[1] for s in shown], color=[s[2] for s in shown])
        for i, (_, v, _) in enumerate(shown):
            ax.annotate(f"{v:.3g}", (i, v), ha="center", va="bottom", fontsize=8)
        if target is not None:
            ax.axhline(target, color="grey", linestyle="--", linewidth=1)
        ax.set_title(heading, fontsize=10)
        ax.set_ylabel(unit)
        ax.tick_params(axis="x", labelsize=8)

    m = results.get("schedule", {}).get("makespan", {})
    bars(axes[0][0], ["ideal", "peerfarm", "RQ fork", "RQ simple"],
         [m.get("ideal_s"), m.get("peerfarm_s"), m.get("rq_fork_s"), m.get("rq_simple_s")],
         [ideal, ours, base, base],
         f"makespan, {m.get('frames')} x {m.get('seconds_per_frame')} s, {m.get('peers')} peers"
         " (lower is better)", "s",
         m.get("ideal_s", 0) / schedule.TARGET_EFFICIENCY if m else None)
    d = results.get("schedule", {}).get("dispatch", {})
    bars(axes[0][1], ["spawn ceiling", "peerfarm", "RQ fork", "RQ simple"],
         [d.get("spawn_ceiling_fps"), d.get("peerfarm_fps"), d.get("rq_fork_fps"),
          d.get("rq_simple_fps")],
         [ideal, ours, base, base], "dispatch, no-op frames (higher is better)", "frames/s",
         schedule.TARGET_RATE)
    ax = axes[0][2]
    sim = results.get("gossip", {}).get("simulated", [])
    if sim:
        ns = [s["peers"] for s in sim]
        ax.plot(ns, [s["t99_s"] for s in sim], "o-", color=ideal, label="99% reached")
        ax.plot(ns, [s["t100_s"] for s in sim], "o-", color=ours, label="100% reached")
        ax.axhline(gossip.TARGET_FULL_S, color="grey", linestyle="--", linewidth=1,
                   label="target (memberlist analytic)")
        ax.set_xscale("log")
        ax.set_ylim(0, max(2.5, *(s["t100_s"] * 1.1 for s in sim if s["t100_s"] < 1e9)))
        ax.set_xlabel("peers (simulated)")
        ax.set_ylabel("s")
        ax.legend(fontsize=8)
        ax.set_title("gossip: one update reaching the farm", fontsize=10)
    else:
        ax.axis("off")
    f = results.get("failover", {})
    bars(axes[1][0], ["lease timeout", "reclaimed after"],
         [f.get("lease_timeout_s"), f.get("reclaim_s")], [ideal, ours],
         "failover after SIGKILL", "s", f.get("target_s"))
    dup = results.get("duplicates", {})
    bars(axes[1][1], ["with home", "without home"],
         [100 * dup["with_home"]["fraction"] if "with_home" in dup else None,
          100 * dup["without_home"]["fraction"] if "without_home" in dup else None],
         [ours, base], f"duplicated frame-seconds, {dup.get('peers')} peers", "%",
         100 * duplicates.TARGET_FRACTION)
    b = results.get("blender", {})
    bars(axes[1][2], ["one bpy process", "warm peer", "process per frame"],
         [b.get("single_s"), b.get("peer_s"), b.get("per_frame_s")], [ideal, ours, base],
         f"blender, {b.get('frames', 24)} frames of the turntable", "s",
         b["single_s"] * (1 + blender.TARGET_OVERHEAD) if "single_s" in b else None)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--rq", default=None,
                        help="RQ worker classes to compare with (default simple,fork)")
    parser.add_argument("--series", default=None,
                        help="job sizes of the dispatch series (default 2000,20000,100000)")
    parser.add_argument("--only", default=",".join(ALL), help="comma-separated subset")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench")
    parser.add_argument("--no-install", action="store_true",
                        help="install nothing; skip RQ when redis-server or rq is missing")
    args = parser.parse_args(argv)
    only = tuple(x.strip() for x in args.only.split(",") if x.strip())
    unknown = set(only) - set(ALL)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    sizes = Sizes.quick() if args.quick else Sizes()
    if args.rq:
        sizes = replace(sizes, rq_classes=tuple(x for x in args.rq.split(",") if x))
    if args.series:
        sizes = replace(sizes, series=tuple(int(x) for x in args.series.split(",") if x.strip()))
    if args.no_install:
        rq = schedule.rq_ready()
    else:
        rq = ensure_rq() if "schedule" in only else False
        ensure_matplotlib()
    if "schedule" in only and not rq:
        say("Redis + RQ unavailable: the schedule benchmark runs without its baseline")
    started = time.monotonic()
    stamp = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    info = machine()
    results = run_all(sizes, only, rq)
    report = {
        "date": stamp.isoformat(),
        "command": "python bench/run.py" + (" " + " ".join(argv or sys.argv[1:])).rstrip(),
        "quick": args.quick,
        "machine": info,
        "wall_s": round(time.monotonic() - started, 1),
        "results": results,
    }
    rows = table_rows(results)
    table = render_table(rows)
    report["table"] = table.splitlines()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    title = (f"peerfarm benchmarks, {stamp:%Y-%m-%d %H:%M} UTC, {info['cpus']} CPUs "
             f"{info['cpu']}, commit {info['commit']}" + (" (QUICK: sizes are tiny)"
                                                           if args.quick else ""))
    plot(results, args.out / "results.png", title)
    print(table)
    print(f"\nwrote {args.out / 'results.json'} and {args.out / 'results.png'}"
          f" in {report['wall_s']} s")
    return 1 if any(r[4] == "FAILED" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
