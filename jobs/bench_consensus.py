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

    python jobs/bench_consensus.py --wan                        # the internet-mode protocols over a WAN
    python jobs/bench_consensus.py --ray [OPTIONS]              # on Ray: jobs/bench_consensus_ray.py

--wan runs PBFT, ProBFT, Bullshark and T-PBFT (--protocols to change) at
n = 4, 10, 20, 50 (--n) over WAN-like delays: every pair of sites (replicas
and clients) has its own fixed one-way latency of 25-75 ms (round trips of
50-150 ms) plus up to 5 ms of jitter. Two fault-free runs per point:

- unloaded: one client, operations back to back, one request per batch (T-PBFT:
  its stamp and one request): messages per decision as the protocol's own cost,
  and commit latency (client call to result, virtual ms);
- loaded: --wan-clients clients (256) issuing operations back to back, batches of
  up to 64, and each replica's CPU modelled as --cpu-us (250) microseconds per
  message it takes (about an Ed25519 verify plus handling in this Python code;
  FIFO per replica): decisions per simulated second, latency and messages per
  decision under that load. The simulator models latency and CPU, not bandwidth.

Yardsticks: ProBFT's claim of about 20% of PBFT's messages (n + 2n*o*sqrt(n)
against ~2n^2; 21% at n = 100 with o = 2); Bullshark's 125,000 tx/s at n = 50
on real WAN machines (Narwhal's workers disseminate 500 KB batches; compare the
shape of the curves against n, not the numbers).
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
WAN_PROTOCOLS = ("pbft", "probft", "bullshark", "tpbft", "tpbft-half")
# Variants by label: T-PBFT with a consensus group of the most trusted half (at least 4).
VARIANTS = {"tpbft-half": ("tpbft", lambda n: {"group_size": max(4, n // 2)})}
WAN_N = (4, 10, 20, 50)
WAN_UNLOADED_OPS = 6  # decisions of the unloaded run
WAN_LOADED_OPS = 3  # operations per client of the loaded run
WAN_BATCH = 64
CLIENT_RETRY_MS = 3_000  # a client's first retry: well above a WAN commit (Bullshark's ~1 s at n=50)
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
    p.add_argument("--ray", action="store_true",
                   help="as the first argument: the ledger on Ray instead (jobs/bench_consensus_ray.py, "
                        "whose options follow)")
    p.add_argument("--wan", action="store_true",
                   help="the internet-mode protocols over WAN delays, unloaded and loaded (see above)")
    p.add_argument("--wan-clients", type=int, default=256, help="--wan: clients of the loaded run")
    p.add_argument("--cpu-us", type=int, default=250,
                   help="--wan: replica CPU per message taken, microseconds (loaded run)")
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


def wan_delay() -> Any:
    """Sites with fixed one-way latencies of 25-75 ms per pair, plus up to 5 ms of jitter."""
    from fabric.sim import Delay

    return Delay(kind="wan", base_ms=25, spread_ms=50, jitter_ms=5, cap_ms=200)


def wan_run(protocol: str, n: int, *, clients: int, ops: int, batch: int, cpu_us: int, seed: int
            ) -> dict[str, Any]:
    """One fault-free run over WAN delays: messages per decision, decisions per second, latency."""
    from fabric.consensus.client import ClientConfig
    from fabric.sim import Faults, RunConfig, run

    extra: dict[str, Any] = {}
    if protocol in VARIANTS:
        protocol, extra = VARIANTS[protocol][0], VARIANTS[protocol][1](n)
    batch_max = max(2, batch) if protocol == "tpbft" else batch  # T-PBFT's stamp takes one place
    cfg = RunConfig(protocol=protocol, n=n, clients=clients, ops_per_client=ops,
                    vms=min(1000, max(4, clients)), think_ms_max=0, options={"batch_max": batch_max, **extra},
                    sim_options=False, events_max=50_000_000, liveness_ms=600_000, cpu_us_per_message=cpu_us,
                    client=ClientConfig(retry_ms=CLIENT_RETRY_MS, retry_ms_max=4 * CLIENT_RETRY_MS))
    t0 = time.perf_counter()
    r = run(cfg, seed, Faults(delay=wan_delay()))
    wall = time.perf_counter() - t0
    d = r.decisions
    return {"decisions": d, "messages": r.messages,
            "messages_per_decision": round(r.messages / d, 1) if d else None,
            "by_type_per_decision": {k: round(v / d, 1) for k, v in r.messages_by_type.items()} if d else {},
            "decisions_per_s": round(d * 1000 / r.virtual_ms, 1) if r.virtual_ms else None,
            "latency_ms_p50": r.latency_ms_p50, "latency_ms_p99": r.latency_ms_p99,
            "virtual_ms": r.virtual_ms, "wall_s": round(wall, 2), "ok": r.ok,
            "problems": list(r.safety_violations[:2]) + list(r.liveness_failures[:2])}


def wan_point(protocol: str, n: int, *, clients: int, cpu_us: int, seed: int) -> dict[str, Any]:
    """The unloaded and the loaded run of one protocol at n."""
    unloaded = wan_run(protocol, n, clients=1, ops=WAN_UNLOADED_OPS, batch=1, cpu_us=0, seed=seed)
    loaded = wan_run(protocol, n, clients=clients, ops=WAN_LOADED_OPS, batch=WAN_BATCH, cpu_us=cpu_us,
                     seed=seed)
    group = VARIANTS[protocol][1](n).get("group_size", n) if protocol in VARIANTS else n
    return {"protocol": protocol, "n": n, "f": (group - 1) // 3, "group": group, "unloaded": unloaded,
            "loaded": loaded, "ok": unloaded["ok"] and loaded["ok"]}


def wan_table(points: list[dict[str, Any]]) -> list[str]:
    """The --wan points as a markdown table, with ProBFT's messages as a share of PBFT's."""
    pbft = {p["n"]: p["unloaded"]["messages_per_decision"] for p in points if p["protocol"] == "pbft"}
    rows = ["| protocol | n | msgs/decision | vs PBFT | latency p50 / p99 ms | loaded: decisions/s | "
            "loaded p50 / p99 ms | loaded msgs/decision |", "|---|---|---|---|---|---|---|---|"]
    for p in points:
        u, ld = p["unloaded"], p["loaded"]
        base = pbft.get(p["n"])
        mine = u["messages_per_decision"]
        share = f"{100 * mine / base:.0f}%" if base and mine else "-"
        rows.append(f"| {p['protocol']} | {p['n']} | {u['messages_per_decision']:,} | {share} | "
                    f"{u['latency_ms_p50']} / {u['latency_ms_p99']} | {ld['decisions_per_s']:,} | "
                    f"{ld['latency_ms_p50']} / {ld['latency_ms_p99']} | {ld['messages_per_decision']:,} |")
    return rows


def main_wan(args: argparse.Namespace) -> int:
    """--wan: the table of the internet-mode protocols over WAN delays."""
    protocols = args.protocols if args.protocols_given else list(WAN_PROTOCOLS)
    sizes = args.n if args.n_given else list(WAN_N)
    points = []
    for n in sizes:
        for name in protocols:
            if name in VARIANTS and VARIANTS[name][1](n).get("group_size", n) >= n:
                continue  # the variant is the protocol itself at this n
            pt = wan_point(name, n, clients=args.wan_clients, cpu_us=args.cpu_us, seed=args.seed)
            points.append(pt)
            if not args.json:
                u, ld = pt["unloaded"], pt["loaded"]
                print(f"{name:9s} n={n:3d} msgs/decision={u['messages_per_decision']} "
                      f"p50={u['latency_ms_p50']} ms | loaded {ld['decisions_per_s']}/s "
                      f"p50={ld['latency_ms_p50']} ms msgs/decision={ld['messages_per_decision']} "
                      f"[{u['wall_s'] + ld['wall_s']:.1f} s]", flush=True)
    report = {"wan": {"delay": "per-pair one-way 25-75 ms + U[0,5] ms jitter", "clients": args.wan_clients,
                      "cpu_us_per_message": args.cpu_us, "batch_max": WAN_BATCH, "seed": args.seed,
                      "points": points},
              "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                          "platform": platform.platform()}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, sort_keys=True))
    if args.json:
        emit_json(report)
    else:
        print("\n".join(wan_table(points)))
    return EXIT_OK if all(p["ok"] for p in points) else EXIT_VIOLATION


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit code."""
    from fabric.consensus import get_protocol
    from fabric.errors import FabricError
    from fabric.sim import CampaignConfig, RunConfig, run_campaign

    raw = list(sys.argv[1:] if argv is None else argv)
    if raw[:1] == ["--ray"]:  # the on-Ray part lives in its own job: it boots fabrics
        from jobs.bench_consensus_ray import main as main_ray

        return main_ray(raw[1:])
    args = parser().parse_args(raw)
    args.protocols_given = "--protocols" in raw
    args.n_given = "--n" in raw
    try:
        for name in args.protocols:
            get_protocol(VARIANTS[name][0] if name in VARIANTS else name)
        if any(not 1 <= n <= 256 for n in args.n) or args.clients < 1:
            raise ValueError("use 1..256 replicas and at least one client")
        if not 1 <= args.wan_clients <= 4096 or not 0 <= args.cpu_us <= 1_000_000:
            raise ValueError("use 1..4096 --wan-clients and 0..1000000 --cpu-us")
        if args.wan and any(n < 4 for n in args.n if args.n_given):
            raise ValueError("--wan runs BFT protocols: use n >= 4")
    except (FabricError, ValueError) as e:
        return fail(str(e), json_mode=args.json)
    if args.wan:
        return main_wan(args)
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
