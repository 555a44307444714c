"""Benchmark: downtime and total time against dirty rate, for pre-copy, auto-converge and post-copy.

    python jobs/bench_convergence.py                 # table, plot (PNG) and JSON in out/
    python jobs/bench_convergence.py --json --rates 0 1 2 --guest PATH

For dirty rates from 0 to 2x the link rate, a guest migrates three ways over
one emulated link: plain pre-copy (which aborts once it cannot converge, as
on_limit="abort"), pre-copy with auto-converge, and post-copy (after 2 rounds).
Guests: the real `kv` capture replayed faster to reach each rate (its nominal
rate is measured from the capture), and a synthetic writer. Pages are sent raw
so the dirty rate is measured against the link, not against the codec.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script (ray job submit): make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.common import EXIT_OK, add_connection_args, emit_json, fail, quiet_ray_logs

MB = 1_000_000
LINK = {"bandwidth_bps": 400e6, "rtt_s": 0.02, "jitter_s": 0.0005, "loss": 0.0}
RATES = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0)  # dirty rate / link rate
MODES = {
    "pre-copy": {},
    "auto-converge": {"auto_converge": True, "rounds_max": 80, "bytes_max_factor": 60},
    "post-copy": {"postcopy": True, "postcopy_after_rounds": 2},
}
DOWNTIME_MS_LIMIT = 300
SYNTHETIC_MIB = 128
SYNTHETIC_HOT_MIB = 64


def parser() -> argparse.ArgumentParser:
    """Arguments of the benchmark."""
    p = argparse.ArgumentParser(prog="bench_convergence", description=__doc__.split("\n\n")[0])
    p.add_argument("--rates", type=float, nargs="+", default=list(RATES),
                   help="dirty rates as multiples of the link rate (default 0 .25 .5 1 1.5 2)")
    p.add_argument("--guest", action="append", default=None, metavar="PATH",
                   help="a capture to replay (default: the shared kv); repeatable")
    p.add_argument("--no-synthetic", action="store_true", help="skip the synthetic writer")
    p.add_argument("--out", default="out/bench_convergence.json", help="where to write the JSON")
    p.add_argument("--plot", default="out/bench_convergence.png", help="where to write the plot")
    add_connection_args(p)
    return p


def capture_rate_mbps(path: Path) -> float:
    """The capture's own dirty rate (MB/s of changed pages over its dump gaps), at scale 1."""
    from fabric.memory import ReplaySpec, make_workload

    w = make_workload(ReplaySpec(path=str(path)))
    meta = w.capture.meta
    return sum(meta.changed_pages) * 4096 / sum(w._gaps) / MB


def guests(args: argparse.Namespace, link_mbps: float) -> list[tuple[str, float, Any]]:
    """(label, rate multiple, workload spec) for every guest and rate."""
    from fabric.memory import ReplaySpec, SyntheticSpec
    from fabric.traces import default_guest_captures

    out = []
    paths = [Path(g) for g in args.guest] if args.guest else \
        [p for p in default_guest_captures() if p.name == "kv"]
    for path in paths:
        base = capture_rate_mbps(path)
        for r in args.rates:
            # replayed faster or slower to dirty memory at r x the link rate (0: as good as frozen)
            spec = ReplaySpec(path=str(path.resolve()), time_scale=max(0.001, r * link_mbps / base))
            out.append((path.name, r, spec))
    if not args.no_synthetic:
        for r in args.rates:
            out.append(("synthetic", r, SyntheticSpec(memory_mib=SYNTHETIC_MIB, dirty_rate_mbps=r * link_mbps,
                                                      hot_set_mib=SYNTHETIC_HOT_MIB, seed=90)))
    return out


def run(handle: Any, cases: list[tuple[str, float, Any]], say: Any) -> list[dict[str, Any]]:
    """Migrate each case three ways; a row per migration."""
    from fabric.memory import spec_to_dict

    rows = []
    for n, (label, multiple, spec) in enumerate(cases):
        vm = f"conv-{n}"
        handle.create_vm(vm, spec_to_dict(spec), where="us-east-1")
        try:
            for mode, extra in MODES.items():
                time.sleep(1.0)  # the guest writes before each migration
                here = next(v for v in handle.list_vms() if v["vm"] == vm)["node"]
                to = "us-east-2" if here == "us-east-1" else "us-east-1"
                say(f"{label} at {multiple:g}x the link, {mode} ...")
                r = handle.migrate(vm, to, config={"link": LINK, "codec": "raw",
                                                   "downtime_ms_limit": DOWNTIME_MS_LIMIT, **extra}).to_dict()
                rows.append({"guest": label, "rate_x_link": multiple, "mode": mode, "status": r["status"],
                             "total_ms": r["total_time_ms"], "downtime_ms": r["downtime_ms"],
                             "rounds": r["rounds"], "wire_mb": r["wire_bytes"] / MB,
                             "throttle_pct_max": r["throttle_pct_max"], "postcopy_ms": r["postcopy_ms"],
                             "fault_ms_p99": (r["faults"] or {}).get("fault_ms_p99"),
                             "dirty_rate_mbps": r["dirty_rate_mbps"], "reason": r["abort_reason"][:160]})
        finally:
            handle.delete_vm(vm)
    return rows


def plot(rows: list[dict[str, Any]], path: str) -> None:
    """Downtime and total time against dirty rate, a line per mode, a column per guest."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = sorted({r["guest"] for r in rows})
    fig, axes = plt.subplots(2, len(labels), figsize=(6 * len(labels), 7), squeeze=False)
    for col, label in enumerate(labels):
        for mode in MODES:
            pts = sorted((r["rate_x_link"], r) for r in rows if r["guest"] == label and r["mode"] == mode)
            done = [(x, r) for x, r in pts if r["status"] == "completed"]
            axes[0][col].plot([x for x, _ in done], [r["downtime_ms"] for _, r in done], "o-", label=mode)
            axes[1][col].plot([x for x, _ in done], [r["total_ms"] / 1000 for _, r in done], "o-", label=mode)
            aborted = [(x, r) for x, r in pts if r["status"] != "completed"]
            if aborted:  # where it gave up, and after how long
                axes[1][col].plot([x for x, _ in aborted], [r["total_ms"] / 1000 for _, r in aborted], "x",
                                  color="red", markersize=10, label=f"{mode}: aborted")
        axes[0][col].set_title(f"{label}: downtime")
        axes[0][col].set_ylabel("ms")
        axes[1][col].set_title(f"{label}: total time")
        axes[1][col].set_ylabel("s")
        axes[1][col].set_xlabel("dirty rate / link rate")
        axes[0][col].axhline(DOWNTIME_MS_LIMIT, color="grey", linestyle=":", label="limit")
        for ax in (axes[0][col], axes[1][col]):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle("Convergence over an emulated 400 Mbit/s, 20 ms link (pages sent raw)")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit code."""
    args = parser().parse_args(argv)
    import fabric
    from jobs.render import table

    link_mbps = LINK["bandwidth_bps"] / 8 / MB
    try:
        cases = guests(args, link_mbps)
        handle = fabric.connect(args.address, fleet=[], **quiet_ray_logs(args.json))
    except fabric.FabricError as e:
        return fail(str(e), json_mode=args.json)
    say = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr, flush=True))
    rows = run(handle, cases, say)
    out = {"benchmark": "bench_convergence", "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                       "load_average": os.getloadavg()},
           "link": f"emulated {LINK['bandwidth_bps'] / 1e6:g} Mbit/s, RTT {LINK['rtt_s'] * 1000:g} ms",
           "downtime_ms_limit": DOWNTIME_MS_LIMIT, "rows": rows}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1, default=str))
    if args.plot:
        plot(rows, args.plot)
    if args.json:
        emit_json(out)
        return EXIT_OK
    print(table([[r["guest"], r["rate_x_link"], r["mode"], r["status"], r["total_ms"], r["downtime_ms"],
                  r["rounds"], r["throttle_pct_max"], r["postcopy_ms"], r["fault_ms_p99"]] for r in rows],
                ["guest", "dirty/link", "mode", "status", "total ms", "downtime ms", "rounds", "throttle %",
                 "post-copy ms", "fault p99 ms"]))
    print(f"\n{out['link']}; downtime limit {DOWNTIME_MS_LIMIT} ms; pages raw")
    for where in (args.out, args.plot):
        if where:
            print(f"written: {where}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
