"""Move VMs off hot hosts as the placement policy advises, a few live migrations at once.

    ray job submit --working-dir . -- python jobs/rebalance.py --dry-run
    novacron rebalance --cpu-busy kv-1=1.8 --cpu-busy web-1=0.9 --concurrency 2
    novacron rebalance --checkpoint policies/checkpoints/default --json

The job reads the fabric's nodes and VMs, asks a placement service
(actors.placement.PlacementService, started for this job as
`fabric/placement/rebalance-<id>`) which VMs to move off hosts whose CPU load
is above the policy's threshold, and migrates them. A host's cores are its Ray
node's CPUs shared among the fabric nodes on that Ray node (--cores overrides).
A VM's load is the busy vCPUs its node measured (the CPU time its guest used
over the last ~10 s, fabric.memory.cpu_meter), or what --cpu-busy says for it
(e.g. from your own monitoring). Exit codes: 0 every planned move
completed (or none was needed, or --dry-run), 1 a move did not complete, 2 bad
input.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script (ray job submit): make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.common import (
    EXIT_BAD_INPUT,
    EXIT_MIGRATION_FAILED,
    EXIT_OK,
    add_connection_args,
    add_migration_args,
    emit_json,
    exit_code_for,
    fail,
    migration_config,
    positive_int,
    quiet_ray_logs,
)

DEFAULT_HEURISTIC = "best-fit+migrate"  # the advisor's own fallback: a threshold policy that migrates
POLL_S = 0.5


def parser() -> argparse.ArgumentParser:
    """Arguments of the rebalance job."""
    p = argparse.ArgumentParser(prog="rebalance", description=__doc__.split("\n\n")[0])
    policy = p.add_mutually_exclusive_group()
    policy.add_argument("--heuristic", default=None,
                        help=f"placement heuristic to ask (default {DEFAULT_HEURISTIC})")
    policy.add_argument("--checkpoint", default=None,
                        help="trained MADDPG checkpoint to ask (falls back to a heuristic, and says so)")
    p.add_argument("--cpu-busy", action="append", default=[], metavar="VM=VCPUS",
                   help="a VM's CPU load in busy vCPUs (repeatable); unlisted VMs count as idle")
    p.add_argument("--cores", type=float, default=None,
                   help="cores per fabric node (default: its Ray node's CPUs over the fabric nodes on it)")
    p.add_argument("--concurrency", type=positive_int, default=2, help="migrations at once (default 2)")
    p.add_argument("--dry-run", action="store_true", help="print the plan, move nothing")
    add_connection_args(p)
    add_migration_args(p)
    p.add_argument("--no-progress", action="store_true", help="no progress lines")
    return p


def parse_cpu_busy(pairs: list[str]) -> dict[str, float]:
    """`--cpu-busy VM=VCPUS` values as {vm: vcpus}; ValueError says which one is wrong."""
    out: dict[str, float] = {}
    for pair in pairs:
        vm, sep, value = pair.partition("=")
        try:
            busy = float(value)
        except ValueError:
            busy = -1.0
        if not sep or not vm or not busy >= 0:
            raise ValueError(f"--cpu-busy {pair!r}: use VM=VCPUS with VCPUS >= 0, e.g. kv-1=1.5")
        out[vm] = busy
    return out


def fabric_state(status: dict[str, Any], cpus_by_raylet: dict[str, float], cpu_busy: dict[str, float],
                 cores: float | None = None) -> dict[str, Any]:
    """The advisor's rebalance input (see policies.advisor) from the fabric's status, reachable nodes only;
    a VM's load is `cpu_busy[vm]` where given, else what its node measured."""
    from policies.fabric_input import shared_cores

    reachable = [n for n in status["nodes"] if "error" not in n]
    shared = shared_cores({n["name"]: n["ray_node_id"] for n in reachable}, cpus_by_raylet)
    dcs = []
    for dc in status["topology"]["dcs"]:
        hosts = []
        for n in (n for n in reachable if n["dc"] == dc):
            host_cores = cores if cores is not None else shared[n["name"]]
            host = {"name": n["name"], "memory_mib_max": n["memory_mib_max"],
                    "memory_mib_used": n["memory_mib_used"], "vms": len(n["vms"]),
                    "vm_list": [{"name": v["name"], "memory_mib": v["memory_mib"], "vcpus": 1,
                                 "cpu_busy": cpu_busy.get(v["name"], v.get("cpu_busy") or 0.0)}
                                for v in n["vms"]]}
            if host_cores > 0:  # without cores the advisor sees no CPU overload on the host
                host["cores"] = host_cores
            hosts.append(host)
        if hosts:
            dcs.append({"name": dc, "hosts": hosts})
    return {"dcs": dcs}


def ask_placement(state: dict[str, Any], config: dict[str, Any]) -> tuple[list[dict[str, Any]],
                                                                         dict[str, Any]]:
    """The placement service's moves for `state`, and its description of the policy it used."""
    import ray

    from actors.names import NAMESPACE
    from actors.placement import PlacementService
    from policies.advisor import AdvisorConfig

    AdvisorConfig.from_dict(config)  # a bad policy name fails here, typed, not inside the actor
    # Job-scoped: named by role for the dashboard, gone with this job.
    name = f"fabric/placement/rebalance-{uuid.uuid4().hex[:8]}"
    service = PlacementService.options(name=name, namespace=NAMESPACE).remote(config)
    try:
        return ray.get(service.rebalance.remote(state)), ray.get(service.describe.remote())
    finally:
        ray.kill(service)


def _run_moves(handle: Any, moves: list[dict[str, Any]], concurrency: int, config: dict[str, Any],
               show: bool) -> list[dict[str, Any]]:
    """Migrate each planned VM to its target host, `concurrency` at a time; the reports in plan order."""
    import fabric
    from jobs.render import EvacuationProgress

    progress = EvacuationProgress(len(moves)) if show else None
    waiting, running, reports = list(moves), {}, {}
    while waiting or running:
        while waiting and len(running) < concurrency:
            move = waiting.pop(0)
            try:
                running[move["vm"]] = handle.migrate(move["vm"], move["to_host"], wait=False, config=config)
            except fabric.FabricError as e:  # e.g. it moved meanwhile: that move is not made
                reports[move["vm"]] = {"vm": move["vm"], "source": move["from_host"], "destination": "",
                                       "status": "aborted", "abort_reason": f"not started: {e}",
                                       "total_time_ms": 0.0, "downtime_ms": 0.0, "rounds": 0,
                                       "wire_bytes": 0}
        polls = {vm: m.progress() for vm, m in running.items()}
        if progress is not None:
            progress.update(list(polls.values()), {vm: p.get("progress") or {} for vm, p in polls.items()})
        for vm, p in polls.items():
            if p["status"] != "active":
                reports[vm] = running.pop(vm).result().to_dict()
        if running:
            time.sleep(POLL_S)
    if progress is not None:
        progress.finish()
    return [reports[m["vm"]] for m in moves]


def main(argv: list[str] | None = None) -> int:
    """Run the job; returns the exit code."""
    args = parser().parse_args(argv)
    try:
        cpu_busy = parse_cpu_busy(args.cpu_busy)
    except ValueError as e:
        return fail(str(e), EXIT_BAD_INPUT, json_mode=args.json)
    if args.cores is not None and not args.cores > 0:
        return fail(f"--cores must be > 0, not {args.cores}", EXIT_BAD_INPUT, json_mode=args.json)
    policy = ({"checkpoint": args.checkpoint} if args.checkpoint
              else {"heuristic": args.heuristic or DEFAULT_HEURISTIC})
    import ray

    import fabric

    try:
        handle = fabric.connect(args.address, **quiet_ray_logs(args.json))
        status = handle.status()
        unknown = set(cpu_busy) - {v["vm"] for v in status["vms"]}
        if unknown:
            raise fabric.UnknownVmError(f"--cpu-busy names VMs the fabric does not have: {sorted(unknown)}")
        cpus = {n["NodeID"]: float(n.get("Resources", {}).get("CPU", 0.0)) for n in ray.nodes() if n["Alive"]}
        moves, policy_info = ask_placement(fabric_state(status, cpus, cpu_busy, args.cores), policy)
    except fabric.FabricError as e:
        return fail(str(e), exit_code_for(e), json_mode=args.json)
    show = not (args.json or args.no_progress)
    from jobs.render import MB, table

    if not args.json:
        print(f"policy: {policy_info['policy']}"
              + (f" (fell back: {policy_info['fallback_reason']})" if policy_info.get("fallback") else ""))
        print(table([[m["vm"], m["from_host"], m["to_host"], m["cpu_busy"], m["memory_mib"], m["reason"]]
                     for m in moves], ["vm", "from", "to", "busy vCPUs", "MiB", "why"]) if moves
              else "no moves advised: a host sheds a VM only when its CPU load is above the policy's "
                   "threshold and another host can take the VM and stay below it"
              + ("" if cpu_busy else " (measured guest CPU; --cpu-busy VM=VCPUS overrides it)"))
    reports = [] if args.dry_run or not moves else _run_moves(handle, moves, args.concurrency,
                                                             migration_config(args), show)
    failed = [r["vm"] for r in reports if r["status"] != "completed"]
    if args.json:
        emit_json({"policy": policy_info, "moves": moves, "dry_run": args.dry_run, "reports": reports,
                   "not_moved": failed})
    elif reports:
        print("\n" + table([[r["vm"], r["source"], r["destination"] or "-", r["status"], r["total_time_ms"],
                             r["downtime_ms"], r["rounds"], r["wire_bytes"] / MB, r["abort_reason"][:60]]
                            for r in reports],
                           ["vm", "from", "to", "status", "total ms", "downtime ms", "rounds", "wire MB",
                            "reason"]))
    return EXIT_MIGRATION_FAILED if failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
