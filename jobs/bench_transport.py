"""Benchmark of the WAN transport: codec, AES-GCM sealing, migrations over emulated links, and QEMU.

    python jobs/bench_transport.py                 # all sections; tables; JSON in out/
    python jobs/bench_transport.py --json --guest PATH --guest PATH2
    python jobs/bench_transport.py --sections e2e --rates 1 --rtts 0 50

Sections: `codec` (ratio and MB/s per encoding and for the adaptive selector,
next to plain zstd-1/3, on the real captures), `secure` (seal throughput next
to the cryptography library's raw AES-GCM), `e2e` (live migrations of the real
captures, replaying their deltas, over emulated links of each rate and RTT),
and `peer` (the same migrations at 1 Gbit/s next to QEMU 7.2's own, whose
figures come from shared/data/README.md: measured on the wire by whoever made
the captures, not by this benchmark).
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
SECTIONS = ("codec", "secure", "e2e", "peer")
RATES_GBPS = (1.0, 10.0)
RTTS_MS = (0.0, 50.0, 150.0)
RTT_S_FLOOR = 0.00025  # "RTT 0": the smallest inter-AZ round trip (see fabric.transport.link)
JITTER_S = 0.0005
# QEMU 7.2 live migration of the same guests, 256 MiB, max-bandwidth 1 Gbit/s,
# bytes counted on the TCP connection (shared/data/README.md).
QEMU = {
    "idle": {"default": {"wire_mb": 89.5, "total_ms": 708, "downtime_ms": 7},
             "multifd_zstd1": {"wire_mb": 46.0, "total_ms": 667, "downtime_ms": 9}},
    "kv": {"default": {"wire_mb": 171.7, "total_ms": 1147, "downtime_ms": 38},
           "multifd_zstd1": {"wire_mb": 40.2, "total_ms": 1161, "downtime_ms": 78}},
}
# The aim: at most 0.7x QEMU's multifd-zstd bytes, at most half its total time.
AIM_BYTES = 0.7
AIM_TIME = 0.5


def parser() -> argparse.ArgumentParser:
    """Arguments of the benchmark."""
    p = argparse.ArgumentParser(prog="bench_transport", description=__doc__.split("\n\n")[0])
    p.add_argument("--guest", action="append", default=None, metavar="PATH",
                   help="a guest-memory capture folder (repeatable; default: the shared idle and kv)")
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--rates", type=float, nargs="+", default=list(RATES_GBPS), metavar="GBIT",
                   help="emulated link rates, Gbit/s (default 1 10)")
    p.add_argument("--rtts", type=float, nargs="+", default=list(RTTS_MS), metavar="MS",
                   help=f"emulated RTTs, ms (default 0 50 150; 0 means {RTT_S_FLOOR * 1000:g} ms)")
    p.add_argument("--repeat", type=int, default=3, help="migrations per cell (median reported)")
    p.add_argument("--warmup-s", type=float, default=1.0, help="guest run time before each migration")
    p.add_argument("--out", default="out/bench_transport.json", help="where to write the JSON")
    add_connection_args(p)
    return p


def _link(rate_gbps: float, rtt_ms: float) -> dict[str, float]:
    return {"bandwidth_bps": rate_gbps * 1e9, "rtt_s": max(rtt_ms / 1000, RTT_S_FLOOR),
            "jitter_s": JITTER_S, "loss": 0.0}


def migrate_cells(handle: Any, guest: Path, cells: list[tuple[float, float]], repeat: int,
                  warmup_s: float) -> list[dict[str, Any]]:
    """Boot the capture's guest once, then migrate it `repeat` times per (rate, rtt) cell."""
    from fabric.memory import ReplaySpec, spec_to_dict

    vm = f"bench-{guest.name}"
    handle.create_vm(vm, spec_to_dict(ReplaySpec(path=str(guest.resolve()))), where="us-east-1")
    out = []
    try:
        where = "us-east-1"
        for rate, rtt in cells:
            runs = []
            for _ in range(repeat):
                time.sleep(warmup_s)
                to = "us-east-2" if where == "us-east-1" else "us-east-1"
                r = handle.migrate(vm, to, config={"link": _link(rate, rtt)}).to_dict()
                if r["status"] != "completed":
                    raise RuntimeError(f"{guest.name} at {rate:g} Gbit/s, {rtt:g} ms: {r['status']}: "
                                       f"{r['abort_reason']}")
                where = to
                runs.append(r)
            med = {k: statistics.median(x[k] for x in runs) for k in
                   ("total_time_ms", "downtime_ms", "rounds", "raw_bytes", "wire_bytes", "link_bytes",
                    "link_utilisation", "effective_rate", "throughput_mbps")}
            errors = [x["bandwidth_prediction"].get("mean_error") for x in runs]
            errors = [e for e in errors if e is not None]
            out.append({"guest": guest.name, "rate_gbps": rate, "rtt_ms": rtt, "median": med,
                        "mode": runs[0]["mode"], "prediction_error_mean": statistics.median(errors)
                        if errors else None, "runs": runs})
    finally:
        handle.delete_vm(vm)
    return out


def peer_rows(e2e: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Our 1 Gbit/s, near-zero-RTT migrations next to QEMU's, with the issue's aims."""
    rows = []
    for cell in e2e:
        q = QEMU.get(cell["guest"])
        if q is None or cell["rate_gbps"] != 1.0 or cell["rtt_ms"] != 0.0:
            continue
        ours = cell["median"]
        mfd = q["multifd_zstd1"]
        wire_mb, total_ms = ours["link_bytes"] / MB, ours["total_time_ms"]
        rows.append({"guest": cell["guest"], "ours_wire_mb": wire_mb, "ours_total_ms": total_ms,
                     "ours_downtime_ms": ours["downtime_ms"], "qemu": q,
                     "bytes_vs_multifd": wire_mb / mfd["wire_mb"],
                     "time_vs_multifd": total_ms / mfd["total_ms"],
                     "bytes_aim_met": wire_mb <= AIM_BYTES * mfd["wire_mb"],
                     "time_aim_met": total_ms <= AIM_TIME * mfd["total_ms"]})
    return rows


def e2e_table(e2e: list[dict[str, Any]]) -> str:
    """The migrations as a table."""
    from jobs.render import table

    rows = [[c["guest"], c["rate_gbps"], c["rtt_ms"], c["mode"], c["median"]["total_time_ms"],
             c["median"]["downtime_ms"], c["median"]["rounds"], c["median"]["raw_bytes"] / MB,
             c["median"]["link_bytes"] / MB, c["median"]["link_utilisation"], c["median"]["effective_rate"],
             c["prediction_error_mean"]] for c in e2e]
    return table(rows, ["guest", "Gbit/s", "RTT ms", "mode", "total ms", "downtime ms", "rounds", "raw MB",
                        "wire MB", "link util", "eff. rate", "PBA err"])


def peer_table(rows: list[dict[str, Any]]) -> str:
    """Ours next to QEMU's."""
    from jobs.render import table

    out = []
    for r in rows:
        q = r["qemu"]
        out.append([r["guest"], "NovaCron (1 Gbit/s emulated, RTT 0.25 ms)", r["ours_wire_mb"],
                    r["ours_total_ms"], r["ours_downtime_ms"]])
        for name, v in q.items():
            out.append([r["guest"], f"QEMU 7.2 {name} (1 Gbit/s cap)", v["wire_mb"], v["total_ms"],
                        v["downtime_ms"]])
    text = table(out, ["guest", "who", "wire MB", "total ms", "downtime ms"])
    for r in rows:
        mfd = r["qemu"]["multifd_zstd1"]
        text += (f"\n  {r['guest']}: {r['bytes_vs_multifd']:.2f}x QEMU multifd-zstd bytes "
                 f"(aim <= {AIM_BYTES}: "
                 f"{'MET' if r['bytes_aim_met'] else 'NOT MET'}, <= {AIM_BYTES * mfd['wire_mb']:.1f} MB), "
                 f"{r['time_vs_multifd']:.2f}x its time (aim <= {AIM_TIME}: "
                 f"{'MET' if r['time_aim_met'] else 'NOT MET'}, <= {AIM_TIME * mfd['total_ms']:.0f} ms)")
    return text


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit code."""
    args = parser().parse_args(argv)
    import fabric
    from fabric.traces import GuestCapture, default_guest_captures

    guests = [Path(g) for g in args.guest] if args.guest else default_guest_captures()
    if not guests:
        return fail("no guest captures found: pass --guest PATH or set NOVACRON_DATA", json_mode=args.json)
    try:
        for g in guests:
            GuestCapture(g)
    except fabric.FabricError as e:
        return fail(str(e), json_mode=args.json)
    say = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr, flush=True))
    out: dict[str, Any] = {
        "benchmark": "bench_transport", "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version(), "load_average": os.getloadavg()},
        "links": "emulated by the sending node (bandwidth, RTT, jitter 0.5 ms, no loss); "
                 "all data centers share this one machine",
        "qemu_source": "shared/data/README.md (QEMU 7.2, 256 MiB guests, 1 Gbit/s cap)",
    }
    text: list[str] = []
    if "codec" in args.sections:
        from jobs import bench_codec
        say("codec on the real captures ...")
        out["codec"] = bench_codec.run(guests)
        text += ["== codec (HDE) on the real captures", bench_codec.tables(out["codec"])]
    if "secure" in args.sections:
        from jobs import bench_secure
        say("AES-GCM sealing ...")
        out["secure"] = bench_secure.run()
        text += ["\n== AES-256-GCM: SecureChannel next to cryptography's raw AESGCM, MB/s",
                 bench_secure.table_text(out["secure"])]
    if "e2e" in args.sections or "peer" in args.sections:
        cells = [(r, t) for r in args.rates for t in args.rtts] if "e2e" in args.sections else [(1.0, 0.0)]
        try:
            handle = fabric.connect(args.address, fleet=[], **quiet_ray_logs(args.json))
        except fabric.FabricError as e:
            return fail(str(e), json_mode=args.json)
        e2e = []
        for g in guests:
            say(f"migrating {g.name} over {len(cells)} emulated links x{args.repeat} ...")
            e2e += migrate_cells(handle, g, cells, args.repeat, args.warmup_s)
        out["e2e"] = e2e
        text += ["\n== live migrations over emulated links (medians of "
                 f"{args.repeat}; link util = busiest round's bytes / (rate x its time))", e2e_table(e2e)]
        if "peer" in args.sections:
            out["peer"] = peer_rows(e2e)
            text += ["\n== the peer: QEMU 7.2's own live migration at the same 1 Gbit/s cap",
                     peer_table(out["peer"])]
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1, default=str))
    if args.json:
        emit_json(out)
        return EXIT_OK
    print("\n".join(text))
    print(f"\n{out['links']}; load average at start {out['machine']['load_average']}")
    if args.out:
        print(f"JSON: {args.out}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
