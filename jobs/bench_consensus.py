"""Benchmark (simulator part): messages per committed decision against n, for each protocol.

    python jobs/bench_consensus.py                              # table; JSON written to out/
    python jobs/bench_consensus.py --n 4 7 10 16 25 49 100 --json
    nice -n 19 python jobs/bench_consensus.py --campaign-seeds 20000   # plus long fault campaigns

Each point is a fault-free simulated run (no drops, uniform 1-5 ms delays) of
`--clients` clients issuing ledger operations back to back, with the
protocols' production defaults (Raft: 30 ms heartbeats, snapshots every 1024
entries; PBFT: checkpoints every 16); a decision is a
client operation completed with its result. Messages are replica-to-replica
(client requests and replies excluded), broken down by type; Raft's count
includes its heartbeats over the run. The expected column is the textbook
count for one unbatched decision: Raft 2(n-1) (Append and its ack), PBFT
(n-1) + (n-1)^2 + n(n-1) (PrePrepare, Prepare, Commit). Latencies are virtual
milliseconds. With --campaign-seeds the job also runs that many seeded fault
campaigns per protocol (jobs/simulate.py's), far more than CI does.
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

from jobs.common import EXIT_OK, emit_json, fail

N_DEFAULT = (4, 7, 10, 16, 25, 31, 49, 64, 100)
EXIT_VIOLATION = 1
# Decisions measured per point: enough to amortize elections and view setup,
# few enough that n=100 PBFT (~20,000 messages a decision) stays in seconds.
DECISIONS_SMALL_N = 40
DECISIONS_LARGE_N = 8
LARGE_N = 25


def parser() -> argparse.ArgumentParser:
    """Arguments of the benchmark."""
    p = argparse.ArgumentParser(prog="bench_consensus", description=__doc__.split("\n\n")[0])
    p.add_argument("--protocols", nargs="*", default=["raft", "pbft"], help="registered protocols")
    p.add_argument("--n", type=int, nargs="*", default=list(N_DEFAULT), help="group sizes (4..256)")
    p.add_argument("--clients", type=int, default=2, help="clients issuing operations back to back")
    p.add_argument("--seed", type=int, default=1, help="seed of every point")
    p.add_argument("--batch-max", type=int, default=1,
                   help="PBFT requests per PrePrepare (1: one decision per agreement, the textbook count)")
    p.add_argument("--campaign-seeds", type=int, default=0,
                   help="also run this many seeded fault campaigns per protocol (0: none)")
    p.add_argument("--out", default="out/bench_consensus.json", help="where to write the JSON")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout and nothing else")
    return p


def expected_messages(protocol: str, n: int) -> int | None:
    """The textbook message count of one unbatched decision."""
    if protocol == "raft":
        return 2 * (n - 1)
    if protocol == "pbft":
        return (n - 1) + (n - 1) ** 2 + n * (n - 1)
    return None


def point(protocol: str, n: int, clients: int, seed: int, batch_max: int) -> dict[str, Any]:
    """One fault-free run of n replicas; messages per decision and latencies."""
    from fabric.sim import Delay, Faults, RunConfig, run

    # Raft's decisions cost O(n) messages, so it affords many at any n; PBFT's O(n^2) does not.
    decisions = DECISIONS_SMALL_N if n < LARGE_N or protocol == "raft" else DECISIONS_LARGE_N
    options: dict[str, Any] = {"batch_max": batch_max} if protocol == "pbft" else {}
    cfg = RunConfig(protocol=protocol, n=n, clients=clients, ops_per_client=max(1, decisions // clients),
                    vms=4, think_ms_max=0, options=options, sim_options=False, events_max=50_000_000,
                    liveness_ms=600_000)
    t0 = time.perf_counter()
    r = run(cfg, seed, Faults(delay=Delay(kind="uniform", base_ms=1, spread_ms=4, cap_ms=5)))
    wall = time.perf_counter() - t0
    return {"protocol": protocol, "n": n, "f": r.n and (n - 1) // (2 if protocol == "raft" else 3),
            "decisions": r.decisions, "messages": r.messages,
            "messages_per_decision": round(r.messages / r.decisions, 1) if r.decisions else None,
            "expected_per_decision": expected_messages(protocol, n),
            "by_type_per_decision": {k: round(v / r.decisions, 1) for k, v in r.messages_by_type.items()}
            if r.decisions else {},
            "latency_ms_p50": r.latency_ms_p50, "latency_ms_p99": r.latency_ms_p99,
            "virtual_ms": r.virtual_ms, "wall_s": round(wall, 2), "ok": r.ok,
            "problems": list(r.safety_violations[:2]) + list(r.liveness_failures[:2])}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit code."""
    from fabric.consensus import get_protocol
    from fabric.errors import FabricError
    from fabric.sim import CampaignConfig, RunConfig, run_campaign

    args = parser().parse_args(argv)
    try:
        for name in args.protocols:
            get_protocol(name)
        if any(not 1 <= n <= 256 for n in args.n) or args.clients < 1:
            raise ValueError("use 1..256 replicas and at least one client")
    except (FabricError, ValueError) as e:
        return fail(str(e), json_mode=args.json)
    points = []
    for name in args.protocols:
        spec = get_protocol(name)
        for n in args.n:
            if n < spec.replicas_min:
                continue
            pt = point(name, n, args.clients, args.seed, args.batch_max)
            points.append(pt)
            if not args.json:
                print(f"{name:5s} n={n:3d} f={pt['f']:2d} decisions={pt['decisions']:3d} "
                      f"msgs/decision={pt['messages_per_decision']!s:>8s} "
                      f"(textbook {pt['expected_per_decision']}) p50={pt['latency_ms_p50']} ms "
                      f"p99={pt['latency_ms_p99']} ms  [{pt['wall_s']} s]", flush=True)
    campaigns = []
    for name in args.protocols if args.campaign_seeds else ():
        cfg = CampaignConfig(run=RunConfig(protocol=name), seeds=args.campaign_seeds)
        summary = run_campaign(cfg).to_dict()
        summary.pop("failures")
        campaigns.append(summary)
        if not args.json:
            print(f"{name} campaign: {summary['runs']} runs, "
                  f"{summary['safety_violations']} safety violations, "
                  f"{summary['liveness_failures']} liveness failures, "
                  f"{summary['messages_per_decision']} messages/decision, {summary['wall_s']} s", flush=True)
    report = {"points": points, "campaigns": campaigns,
              "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                          "platform": platform.platform()}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, sort_keys=True))
    if args.json:
        emit_json(report)
    bad = any(not p["ok"] for p in points) or any(c["failing_seeds"] for c in campaigns)
    return EXIT_VIOLATION if bad else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
