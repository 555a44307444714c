"""Chaos: seeded trials of live migrations under injected faults, then checks that nothing was lost.

    python jobs/chaos.py --trials 50 --seed 1           # a table of trials; exit 1 on any violation
    python jobs/chaos.py --trials 1 --seed 1234 --json  # replay one trial alone

Each trial boots a few small guests, starts migrations, and strikes with one
fault at a seeded moment: a killed source, destination, ledger replica or
controller; a node killed and restarted; a partitioned or slowed data-center
link; a tampered, replayed or dropped frame. Then it checks (fabric/chaos.py)
that no VM runs twice or where the ledger does not say, that every VM whose
host lives runs there with exactly its workload's memory, and that no
migration was left open or outlived its deadline. The plan is a pure function
of the seed, so a failing seed replays alone.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script (ray job submit): make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.common import EXIT_OK, add_connection_args, emit_json, fail, quiet_ray_logs

EXIT_VIOLATION = 1
MIGRATION_DEADLINE_S = 20.0  # a migration's total_time_s_max in a trial
SETTLE_S_MAX = 40.0  # a trial waits this long for its migrations and the ledger to settle
TRIALS_MAX = 10_000


def parser() -> argparse.ArgumentParser:
    """Arguments of the chaos job."""
    p = argparse.ArgumentParser(prog="chaos", description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=10, help=f"trials to run (1..{TRIALS_MAX})")
    p.add_argument("--seed", type=int, default=1, help="seed of the first trial (trial k uses seed+k)")
    p.add_argument("--out", default="out/chaos.json", help="where to write the JSON ('' for nowhere)")
    add_connection_args(p)
    return p


def _settled(handle: Any, vms: set[str]) -> bool:
    """No migration of these VMs is open in the ledger or running on a node."""
    status = handle.status()
    if any(v["vm"] in vms and v["migrating_to"] for v in status["vms"]):
        return False
    return not any(o["vm"] in vms for n in status["nodes"] for o in n.get("outgoing", []))


def _wait(handle: Any, migrations: list[tuple[str, Any]], deadline: float) -> tuple[list[dict], list[str]]:
    """Each migration's report (or why there is none), and those still running at the deadline."""
    from fabric import FabricError

    reports: list[dict] = []
    for vm, m in migrations:
        try:
            reports.append(m.result(timeout=max(0.1, deadline - time.monotonic())).to_dict())
        except (FabricError, Exception) as e:  # the controller died: its handles are gone
            reports.append({"vm": vm, "status": "unknown", "abort_reason": f"{type(e).__name__}"})
    vms = {vm for vm, _ in migrations}
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if _settled(handle, vms):
                return reports, []
        time.sleep(0.1)
    with contextlib.suppress(Exception):
        if _settled(handle, vms):
            return reports, []
    return reports, sorted(vms)


def _strike(handle: Any, plan: Any) -> set[str]:
    """Carry out the plan's fault; the nodes it killed."""
    import ray

    from actors.names import CONTROLLER, NAMESPACE

    p, dead = plan.fault_params, set()
    if plan.fault in ("kill_destination", "kill_source", "kill_replica"):
        ray.kill(handle.node(p["node"]), no_restart=True)
        dead.add(p["node"])
    elif plan.fault == "restart_node":
        ray.kill(handle.node(p["node"]), no_restart=True)
        dead.add(p["node"])
        time.sleep(0.2)
        handle.restart_node(p["node"])
    elif plan.fault == "kill_controller":
        ray.kill(ray.get_actor(CONTROLLER, namespace=NAMESPACE), no_restart=False)  # Ray restarts it
    elif plan.fault == "partition_link":
        handle.link_fault(*p["dcs"], down_s=p["down_s"])
    elif plan.fault == "slow_link":
        from fabric.chaos import SLOW_LINK_BPS
        handle.link_fault(*p["dcs"], bandwidth_bps=SLOW_LINK_BPS)
    return dead


def _observe(handle: Any, plan: Any) -> list[Any]:
    """Where each of the trial's VMs is, by the ledger and by the nodes; and its memory, checked."""
    import ray

    from fabric.chaos import VmObservation, expected_digest

    status = handle.status()
    rows = {v["vm"]: v for v in status["vms"]}
    specs = {name: workload for name, _, workload in plan.vms}
    out = []
    for name in specs:
        running = tuple(n["name"] for n in status["nodes"] for v in n["vms"]
                        if v["name"] == name and v["state"] == "running")
        present = tuple(n["name"] for n in status["nodes"] for v in n["vms"] if v["name"] == name)
        row = rows.get(name)
        owner = row["node"] if row else None
        digest = expected = None
        if owner is not None and running == (owner,):
            node = handle.node(owner)
            info = ray.get(node.pause_vm.remote(name))
            digest = ray.get(node.vm_digest.remote(name, True))
            ray.get(node.resume_vm.remote(name))
            expected = expected_digest(specs[name], info["guest_time_s"])
        out.append(VmObservation(vm=name, ledger_owner=owner, ledger_open_migration=bool(
            row and row["migrating_to"]), running_on=running, present_on=present, digest=digest,
            expected_digest=expected))
    return out


def _cleanup(handle: Any, plan: Any, dead: set[str]) -> None:
    """Bring dead nodes back, lift link faults, and remove the trial's VMs."""
    from fabric.transport import default_link

    for node in dead:
        with contextlib.suppress(Exception):  # restart_node faults already brought it back
            handle.restart_node(node)
    if plan.fault == "slow_link":
        a, b = plan.fault_params["dcs"]
        handle.link_fault(a, b, bandwidth_bps=default_link(a, b).bandwidth_bps)
    for name, _, _ in plan.vms:
        try:
            handle.delete_vm(name)
        except Exception:
            with contextlib.suppress(Exception):  # it died with its host: only the ledger holds it
                handle.forget_vm(name)


def run_trial(handle: Any, seed: int) -> dict[str, Any]:
    """Plan, run and check trial `seed`; a JSON-ready row."""
    from fabric.chaos import check_trial, plan_trial

    plan = plan_trial(seed, handle.topology())
    started = time.monotonic()
    for name, node, workload in plan.vms:
        handle.create_vm(name, workload, where=node)
    time.sleep(0.2)  # the guests run and dirty memory
    config = {"total_time_s_max": MIGRATION_DEADLINE_S, "peer_timeout_s": 4.0}
    frame_fault = {"tamper_frame": "tamper_batch_seq", "replay_frame": "replay_batch_seq",
                   "drop_frame": "drop_batch_seq"}.get(plan.fault)
    migrations = []
    for vm, to in plan.migrations:
        faults = ({frame_fault: plan.fault_params["seq"]}
                  if frame_fault and vm == plan.fault_params.get("vm") else None)
        migrations.append((vm, handle.migrate(vm, to, wait=False, config=config, faults=faults)))
    time.sleep(plan.fault_delay_s)
    dead = _strike(handle, plan)
    reports, hung = _wait(handle, migrations, time.monotonic() + SETTLE_S_MAX)
    for node in dead:  # bring killed nodes back before looking: a live node must hold what it owns
        with contextlib.suppress(Exception):
            handle.restart_node(node)
    observations = _observe(handle, plan)
    violations, lost = check_trial(observations, dead_nodes=dead, hung=hung)
    _cleanup(handle, plan, set())
    outcomes = [r["status"] for r in reports]
    return {"seed": seed, "plan": plan.to_dict(), "fault": plan.fault, "fault_params": plan.fault_params,
            "fault_delay_s": plan.fault_delay_s, "vms": len(plan.vms), "migrations": outcomes,
            "lost_with_host": lost, "violations": violations, "seconds": time.monotonic() - started,
            "reasons": [f"{r.get('vm')}: {r.get('abort_reason', '')[:200]}" for r in reports
                        if r["status"] != "completed"],
            "observations": [o.__dict__ for o in observations]}


def main(argv: list[str] | None = None) -> int:
    """Run the trials; returns the exit code."""
    args = parser().parse_args(argv)
    if not 1 <= args.trials <= TRIALS_MAX:
        return fail(f"--trials must be 1..{TRIALS_MAX}", json_mode=args.json)
    import json

    import fabric
    from jobs.render import table

    try:
        handle = fabric.connect(args.address, fleet=[], ledger={"protocol": "raft"},
                                **quiet_ray_logs(args.json))
    except fabric.FabricError as e:
        return fail(str(e), json_mode=args.json)
    rows = []
    for k in range(args.trials):
        seed = args.seed + k
        row = run_trial(handle, seed)
        rows.append(row)
        if not args.json:
            mark = "VIOLATION" if row["violations"] else "ok"
            print(f"trial {k + 1}/{args.trials} seed {seed}: {row['fault']}: {row['migrations']} {mark}",
                  file=sys.stderr, flush=True)
    bad = [r for r in rows if r["violations"]]
    out = {"trials": len(rows), "seed": args.seed, "violations": sum(len(r["violations"]) for r in rows),
           "failing_seeds": [r["seed"] for r in bad], "rows": rows}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1, default=str))
    if args.json:
        emit_json(out)
    else:
        print(table([[r["seed"], r["fault"], " ".join(r["migrations"]), len(r["lost_with_host"]),
                      len(r["violations"]), r["seconds"]] for r in rows],
                    ["seed", "fault", "migrations", "lost with host", "violations", "s"]))
        for r in bad:
            print(f"seed {r['seed']} ({r['fault']}): " + "; ".join(r["violations"]))
        print(f"\n{len(rows)} trials, {out['violations']} violations"
              + (f"; replay one with --trials 1 --seed SEED ({out['failing_seeds']})" if bad else ""))
    return EXIT_VIOLATION if bad else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
