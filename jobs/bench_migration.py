"""Benchmark: live migrations of real captures and synthetic guests, next to a numpy copy.

    python jobs/bench_migration.py                      # table; JSON written to out/
    python jobs/bench_migration.py --json               # one JSON object on stdout
    python jobs/bench_migration.py --guest PATH --guest PATH2 --repeat 5

Each guest boots on us-east-1, runs for a warm-up, then live-migrates back
and forth to us-east-2 while its workload keeps writing (the real captures
replay their deltas on the dump clock). The link between the two is the
emulated in-data-center one (10 Gbit/s, 0.25 ms), faster than this machine can
encode, seal, send and apply pages, so the figure is the machine's: the whole
pipeline (codec, AES-GCM, transport, Ray's object store) with default settings.
The yardstick is a plain numpy copy of the same guest memory, timed in the same
run. A migration that does not complete is a row with its outcome, not a crash.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script (ray job submit): make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.common import EXIT_OK, add_connection_args, emit_json, fail, quiet_ray_logs

MB = 1_000_000
SYNTHETIC_MIB = 1024
SYNTHETIC_RATES_MBPS = (0.0, 50.0, 200.0)
COPY_REPEATS = 3


def parser() -> argparse.ArgumentParser:
    """Arguments of the benchmark."""
    p = argparse.ArgumentParser(prog="bench_migration", description=__doc__.split("\n\n")[0])
    p.add_argument("--guest", action="append", default=None, metavar="PATH",
                   help="a guest-memory capture folder (repeatable; default: the shared idle and kv)")
    p.add_argument("--synthetic-mib", type=int, default=SYNTHETIC_MIB,
                   help=f"size of the synthetic guest (default {SYNTHETIC_MIB})")
    p.add_argument("--rates", type=float, nargs="*", default=list(SYNTHETIC_RATES_MBPS),
                   help="dirty rates of the synthetic guest in MB/s (default 0 50 200)")
    p.add_argument("--repeat", type=int, default=3, help="migrations per guest (median reported)")
    p.add_argument("--warmup-s", type=float, default=1.0, help="guest run time before migrating")
    p.add_argument("--batch-pages", type=int, default=None,
                   help="pages per batch (default: MigrationConfig's)")
    p.add_argument("--window", type=int, default=None,
                   help="batches in flight (default: MigrationConfig's)")
    p.add_argument("--out", default="out/bench_migration.json", help="where to write the JSON")
    add_connection_args(p)
    return p


def numpy_copy_mbps(handle: Any, vm: str, node: str) -> float:
    """Median MB/s of a plain numpy copy of this guest's memory, in this process."""
    import ray

    memory = ray.get(handle.node(node).vm_memory.remote(vm))
    rates = []
    for _ in range(COPY_REPEATS):
        t0 = time.perf_counter()
        memory.copy()
        rates.append(memory.nbytes / (time.perf_counter() - t0) / MB)
    return statistics.median(rates)


def run_guest(handle: Any, label: str, workload: dict[str, Any], repeat: int,
              warmup_s: float, config: dict[str, Any]) -> dict[str, Any]:
    """Boot one guest, migrate it `repeat` times across data centers, measure a copy of it."""
    vm = f"bench-{label}"
    handle.create_vm(vm, workload, where="us-east-1")
    runs = []
    try:
        time.sleep(warmup_s)
        copy_mbps = numpy_copy_mbps(handle, vm, "us-east-1")
        for _ in range(repeat):
            where = next(v["node"] for v in handle.list_vms() if v["vm"] == vm)
            to = "us-east-2" if where == "us-east-1" else "us-east-1"  # an aborted one stayed put
            runs.append(handle.migrate(vm, to, config=config).to_dict())
            time.sleep(warmup_s)
    finally:
        handle.delete_vm(vm)
    done = [r for r in runs if r["status"] == "completed"] or runs  # medians of what completed
    med = {k: statistics.median(r[k] for r in done) for k in
           ("total_time_ms", "downtime_ms", "rounds", "raw_bytes", "wire_bytes", "throughput_mbps",
            "dirty_rate_mbps", "setup_time_ms")}
    # Guest bytes per second of transfer (wire rate x compression): comparable with a copy.
    guest_mbps = med["throughput_mbps"] * med["raw_bytes"] / max(med["wire_bytes"], 1)
    return {"guest": label, "memory_mib": runs[0]["memory_bytes"] / (1 << 20),
            "outcomes": {s: sum(r["status"] == s for r in runs) for s in sorted({r["status"] for r in runs})},
            "abort_reasons": [r["abort_reason"] for r in runs if r["status"] != "completed"],
            "workload": runs[0]["workload"], "numpy_copy_mbps": copy_mbps,
            "guest_mbps": guest_mbps, "guest_rate_vs_copy": guest_mbps / copy_mbps, "median": med,
            "runs": runs}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit code."""
    args = parser().parse_args(argv)
    import fabric
    from fabric.memory import ReplaySpec, SyntheticSpec, spec_to_dict
    from fabric.traces import GuestCapture, default_guest_captures
    from jobs.render import table

    guests = [Path(g) for g in args.guest] if args.guest else default_guest_captures()
    try:
        for g in guests:
            GuestCapture(g)  # check the format before booting anything
        handle = fabric.connect(args.address, fleet=[], **quiet_ray_logs(args.json))
    except fabric.FabricError as e:
        return fail(str(e), json_mode=args.json)
    plan: list[tuple[str, dict[str, Any]]] = [
        (g.name, spec_to_dict(ReplaySpec(path=str(g.resolve())))) for g in guests]
    plan += [(f"synthetic-{args.synthetic_mib}MiB-{rate:g}MBps",
              spec_to_dict(SyntheticSpec(memory_mib=args.synthetic_mib, dirty_rate_mbps=rate, seed=7)))
             for rate in args.rates]
    config = {k: v for k, v in (("batch_pages_max", args.batch_pages),
                                ("inflight_batches_max", args.window)) if v is not None}
    effective = fabric.MigrationConfig.from_dict(config)
    results = []
    for label, workload in plan:
        if not args.json:
            print(f"migrating {label} x{args.repeat} ...", file=sys.stderr)
        results.append(run_guest(handle, label, workload, args.repeat, args.warmup_s, config))
    out = {
        "benchmark": "bench_migration",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version()},
        "link": "us-east-1 <-> us-east-2 on one machine: the emulated in-data-center link "
                "(10 Gbit/s, 0.25 ms), default codec and AES-GCM; pages cross Ray's object store",
        "load_average": os.getloadavg(),
        "repeat": args.repeat, "config": effective.to_dict(), "results": results,
    }
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1, default=str))
    if args.json:
        emit_json(out)
        return EXIT_OK
    rows = [[r["guest"], r["memory_mib"], ", ".join(f"{n} {s}" for s, n in r["outcomes"].items()),
             r["median"]["dirty_rate_mbps"], r["median"]["total_time_ms"],
             r["median"]["downtime_ms"], r["median"]["rounds"], r["median"]["raw_bytes"] / MB,
             r["median"]["wire_bytes"] / MB, r["median"]["throughput_mbps"], r["guest_mbps"],
             r["numpy_copy_mbps"], r["guest_rate_vs_copy"]] for r in results]
    print(table(rows, ["guest", "MiB", "outcomes", "dirty MB/s", "total ms", "downtime ms", "rounds",
                       "raw MB", "wire MB", "wire MB/s", "guest MB/s", "numpy copy MB/s", "guest/copy"]))
    print(f"\nmedians of {args.repeat} migrations each; batches of {effective.batch_pages_max} pages, "
          f"{effective.inflight_batches_max} in flight; {out['link']}; load average at the end "
          f"{out['load_average'][0]:.1f}")
    for r in results:
        for reason in r["abort_reasons"]:
            print(f"  {r['guest']}: {reason}")
    if args.out:
        print(f"JSON: {args.out}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
