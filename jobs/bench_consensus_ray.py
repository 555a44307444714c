"""The replicated ledger on Ray: committed operations per second and commit latency.

    python jobs/bench_consensus_ray.py                     # Raft and PBFT, n = 4 and 7, batching on/off
    python jobs/bench_consensus_ray.py --json --ops 300

Each configuration boots a fabric whose ledger runs on n node actors of this
machine, then three nodes register throwaway VMs through their ledger clients
(16 outstanding each) and time every commit. "Without batching" is one entry
per Raft append and one request per PBFT pre-prepare. Yardsticks: a bare Ray
actor round trip measured here, and PySyncObj's published 15K ops/s for a
Python Raft on 3 nodes (its README; measured on other hardware).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script (ray job submit): make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.common import EXIT_OK, emit_json, fail

PYSYNCOBJ_OPS_PER_S = 15_000  # published: github.com/bakwc/PySyncObj README, 3 nodes
LOADERS = 3  # node actors that generate load
CONCURRENCY = 16  # ledger operations each loader keeps outstanding (its client pool)
UNBATCHED = {"raft": {"entries_per_msg_max": 1}, "pbft": {"batch_max": 1}}


def parser() -> argparse.ArgumentParser:
    """Arguments of the benchmark."""
    p = argparse.ArgumentParser(prog="bench_consensus_ray", description=__doc__.split("\n\n")[0])
    p.add_argument("--protocols", nargs="+", default=["raft", "pbft"], choices=["raft", "pbft"])
    p.add_argument("--replicas", type=int, nargs="+", default=[4, 7], help="group sizes (default 4 7)")
    p.add_argument("--ops", type=int, default=600, help="operations per configuration (default 600)")
    p.add_argument("--out", default="out/bench_consensus_ray.json", help="where to write the JSON")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    return p


def teardown() -> None:
    """Kill every fabric actor of this Ray session, so the next configuration boots afresh."""
    import ray

    from actors.names import CONTROLLER, NAMESPACE

    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
             if a["namespace"] == NAMESPACE]
    for name in sorted(names, key=lambda n: n != CONTROLLER):  # the controller first: it restarts others
        with contextlib.suppress(ValueError):  # already gone
            ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
    time.sleep(1.0)


def ray_round_trip_ms(handle: Any, samples: int = 300) -> float:
    """Median round trip of an empty call to a node actor (the yardstick)."""
    import ray

    node = handle.node(handle.topology().nodes[0].name)
    ray.get(node.ping.remote())
    times = []
    for _ in range(samples):
        t0 = time.perf_counter()
        ray.get(node.ping.remote())
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def run_one(protocol: str, n: int, batching: bool, ops: int) -> dict[str, Any]:
    """One configuration: ops/s and commit latency percentiles."""
    import ray

    import fabric

    options = {} if batching else UNBATCHED[protocol]
    nodes_per_dc = max(2, -(-n // 3))
    probe = fabric.connect(fleet=[], nodes_per_dc=nodes_per_dc, ledger={"protocol": "single-writer"})
    names = [s.name for s in probe.topology().nodes]
    teardown()
    h = fabric.connect(fleet=[], nodes_per_dc=nodes_per_dc,
                       ledger={"protocol": protocol, "replicas": names[:n], "clients_per_actor": CONCURRENCY,
                               "options": options})
    try:
        loaders = [h.node(name) for name in names[:LOADERS]]
        ray.get([node.ledger_load.remote(5, 1, "warmup") for node in loaders])  # a leader, warm caches
        per = max(1, ops // len(loaders))
        t0 = time.monotonic()
        try:
            results = ray.get([node.ledger_load.remote(per, CONCURRENCY, "bench") for node in loaders])
        except Exception as e:  # an operation timed out (LedgerUnavailable): a row, not a crash
            return {"protocol": protocol, "replicas": n, "batching": batching, "ops": 0, "ops_per_s": 0.0,
                    "p50_ms": None, "p99_ms": None, "concurrency": CONCURRENCY * len(loaders),
                    "options": options, "error": str(e).splitlines()[-1][:300]}
        wall = time.monotonic() - t0
        lat = sorted(x for r in results for x in r["latencies_ms"])
        return {"protocol": protocol, "replicas": n, "batching": batching, "ops": len(lat),
                "ops_per_s": len(lat) / wall, "p50_ms": lat[len(lat) // 2],
                "p99_ms": lat[min(len(lat) - 1, int(0.99 * len(lat)))],
                "concurrency": CONCURRENCY * len(loaders), "options": options}
    finally:
        teardown()


def run(protocols: list[str], replicas: list[int], ops: int) -> dict[str, Any]:
    """Every configuration, plus the round-trip yardstick; JSON-ready."""
    import os
    import platform

    import fabric

    h = fabric.connect(fleet=[], ledger={"protocol": "single-writer"}, include_dashboard=False)
    rtt = ray_round_trip_ms(h)
    teardown()
    rows = [run_one(p, n, b, ops) for p in protocols for n in replicas for b in (True, False)]
    return {"benchmark": "bench_consensus_ray", "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                        "load_average": os.getloadavg()},
            "ray_round_trip_ms_p50": rtt, "pysyncobj_published_ops_per_s": PYSYNCOBJ_OPS_PER_S,
            "notes": "every replica is a Ray actor on this one machine; commit = the ledger client "
                     "has the result; load from 3 node actors, 16 outstanding each", "rows": rows}


def table_text(out: dict[str, Any]) -> str:
    """The result as a table with the yardsticks."""
    from jobs.render import table

    rows = [[r["protocol"], r["replicas"], "on" if r["batching"] else "off", r["ops"], r["ops_per_s"],
             r["p50_ms"], r["p99_ms"]] for r in out["rows"]]
    errors = "".join(f"\n  {r['protocol']} n={r['replicas']} batching "
                     f"{'on' if r['batching'] else 'off'}: {r['error']}"
                     for r in out["rows"] if r.get("error"))
    return (table(rows, ["protocol", "n", "batching", "ops", "ops/s", "p50 ms", "p99 ms"]) + errors
            + f"\n\nyardsticks: a bare Ray actor round trip here {out['ray_round_trip_ms_p50']:.2f} ms "
              f"(p50); PySyncObj publishes {PYSYNCOBJ_OPS_PER_S:,} ops/s for a Python Raft on 3 nodes")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit code."""
    args = parser().parse_args(argv)
    if args.ops < 10 or any(n < 1 for n in args.replicas):
        return fail("--ops must be >= 10 and --replicas positive", json_mode=args.json)
    if "pbft" in args.protocols and any(n < 4 for n in args.replicas):
        return fail("pbft needs at least 4 replicas", json_mode=args.json)
    out = run(args.protocols, args.replicas, args.ops)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1))
    if args.json:
        emit_json(out)
    else:
        print(table_text(out))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
