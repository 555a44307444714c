"""Print the fabric's data centers, nodes, VMs, running migrations and ledger health as tables.

    ray job submit --working-dir . -- python jobs/status.py
    novacron status --json
    novacron status --check      # exit 1 unless every node answers and the ledger has a leader

Exit codes: 0 printed (with --check: and healthy); 1 when the fabric did not
answer (or none runs and --no-boot was given), or with --check when a node is
unreachable or the ledger has no leader or lost replicas; 2 on bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script (ray job submit): make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.common import (
    EXIT_MIGRATION_FAILED,
    EXIT_OK,
    add_connection_args,
    emit_json,
    exit_code_for,
    fail,
    quiet_ray_logs,
)
from jobs.render import MB, table

RECENT_MIGRATIONS_SHOWN = 10  # finished migrations listed under the running ones


def parser() -> argparse.ArgumentParser:
    """Arguments of the status job."""
    p = argparse.ArgumentParser(prog="status", description=__doc__.split("\n\n")[0])
    add_connection_args(p)
    p.add_argument("--no-boot", action="store_true", help="fail instead of booting an absent fabric")
    p.add_argument("--check", action="store_true",
                   help="exit 1 unless every node answers and the ledger is healthy")
    return p


def ledger_health(status: dict[str, Any]) -> dict[str, Any]:
    """Protocol, leader (as a node name), replicas live, and a one-word state: healthy, degraded, down."""
    ledger = status["ledger"] or {}
    protocol = ledger.get("kind", "none")
    if protocol == "single-writer":
        return {"protocol": protocol, "leader": "fabric/ledger", "replicas": 1, "live_replicas": 1,
                "index": ledger.get("index"), "state": "healthy"}
    node_of = {n["replica"]["id"]: n["name"] for n in status["nodes"] if n.get("replica")}
    replicas, live = ledger.get("replicas", 0), ledger.get("live_replicas", 0)
    leader = ledger.get("leader")
    state = "down" if leader is None or not live else "degraded" if live < replicas else "healthy"
    return {"protocol": protocol, "leader": node_of.get(leader, leader), "replicas": replicas,
            "live_replicas": live, "index": ledger.get("index"), "state": state,
            "terms": sorted({s["term"] for s in ledger.get("statuses", []) if s})}


def data_center_rows(status: dict[str, Any]) -> list[list[Any]]:
    """One row per data center: nodes, VMs, memory, replicas."""
    rows = []
    for dc in status["topology"]["dcs"]:
        nodes = [n for n in status["nodes"] if n["dc"] == dc]
        rows.append([dc, len(nodes), sum(1 for n in nodes if "error" in n),
                     sum(len(n["vms"]) for n in nodes),
                     sum(n["memory_mib_used"] or 0 for n in nodes), sum(n["memory_mib_max"] for n in nodes),
                     sum(1 for n in nodes if n.get("replica"))])
    return rows


def _replica_cell(node: dict[str, Any]) -> str:
    r = node.get("replica")
    if not r:
        return "-"
    return f"#{r['id']} {r['role']}, term {r['term']}, commit {r['commit']}"


def running_rows(status: dict[str, Any]) -> list[list[Any]]:
    """One row per running migration, with its engine's progress."""
    progress = {o["vm"]: o for n in status["nodes"] for o in n.get("outgoing", [])}
    rows = []
    for m in status["migrations"]:
        if m["status"] != "active":
            continue
        p = progress.get(m["vm"], {})
        rnd = p.get("round")
        label = "-" if rnd is None else "stop-and-copy" if p.get("final_round") else str(rnd)
        done, total = p.get("round_pages_done", 0), p.get("round_pages_total", 0)
        rows.append([m["id"], m["source"], m["destination"], p.get("phase", "starting"), label,
                     f"{done:,}/{total:,}" if total else "-", p.get("pages_transferred", 0),
                     p.get("wire_bytes", 0) / MB, p.get("elapsed_ms", 0) / 1000])
    return rows


def status_text(status: dict[str, Any]) -> str:
    """The status as tables."""
    topo = status["topology"]
    kind = ("emulated data centers on shared hardware" if topo["emulated"]
            else "one data center per Ray node")
    out = [f"data centers ({kind})",
           table(data_center_rows(status), ["dc", "nodes", "unreachable", "vms", "MiB used", "MiB max",
                                            "ledger replicas"]),
           "", "nodes",
           table([[n["name"], n["dc"], len(n["vms"]), n["memory_mib_used"], n["memory_mib_max"],
                   len(n["incoming"]), len(n["outgoing"]), _replica_cell(n),
                   n.get("error") or n["ray_node_id"][:12]] for n in status["nodes"]],
                 ["node", "dc", "vms", "MiB used", "MiB max", "in", "out", "ledger replica",
                  "raylet (or error)"]),
           "", "VMs",
           table([[v["vm"], v["node"], v["dc"], v["epoch"], v["state"], v["memory_mib"],
                   v["migrating_to"] or "", v["workload"]] for v in status["vms"]],
                 ["vm", "node", "dc", "epoch", "state", "MiB", "migrating to", "workload"])]
    running = running_rows(status)
    out += ["", "running migrations" + ("" if running else ": none")]
    if running:
        out.append(table(running, ["migration", "from", "to", "phase", "round", "round pages",
                                   "pages sent", "wire MB", "elapsed s"]))
    finished = [m for m in status["migrations"] if m["status"] != "active"][-RECENT_MIGRATIONS_SHOWN:]
    if finished:
        out += ["", f"recent migrations (last {len(finished)})",
                table([[m["id"], m["source"], m["destination"], m["status"]] for m in finished],
                      ["migration", "from", "to", "status"])]
    h = ledger_health(status)
    out += ["", "ledger",
            table([[h["protocol"], h["state"], h["leader"] or "none", f"{h['live_replicas']}/{h['replicas']}",
                    h["index"], ", ".join(map(str, h.get("terms", []))) or "-"]],
                  ["protocol", "state", "leader", "replicas live", "commit index", "terms"])]
    links = (status["ledger"] or {}).get("links")
    if links:  # ACP following its links: the mode they measure, per link
        rows = [[k.replace("|", " <-> "), v["mode"] or "-", v["rtt_ms"], v["bandwidth_gbps"], v["probes"],
                 v["lost"]] for k, v in links["links"].items()]
        out += ["", f"ledger links (mode {links['mode'] or 'not yet measured'}, "
                    f"probed every {links['probe_s']} s)",
                table(rows, ["link", "mode", "RTT ms", "Gbit/s", "probes", "lost"])]
    return "\n".join(out)


def unhealthy(status: dict[str, Any]) -> list[str]:
    """What --check fails on: unreachable nodes, a ledger not fully up."""
    problems = [f"node {n['name']}: {n['error']}" for n in status["nodes"] if "error" in n]
    h = ledger_health(status)
    if h["state"] != "healthy":
        problems.append(f"ledger {h['state']}: leader {h['leader']}, "
                        f"{h['live_replicas']}/{h['replicas']} replicas live")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Run the job; returns the exit code."""
    args = parser().parse_args(argv)
    import fabric

    try:
        handle = fabric.connect(args.address, boot=not args.no_boot, **quiet_ray_logs(args.json))
        status = handle.status()
    except fabric.FabricError as e:
        return fail(str(e), exit_code_for(e), json_mode=args.json)
    problems = unhealthy(status)
    if args.json:
        emit_json({**status, "ledger_health": ledger_health(status), "problems": problems})
    else:
        print(status_text(status))
        if problems:
            print("\nproblems:\n" + "\n".join(f"  {p}" for p in problems))
    return EXIT_MIGRATION_FAILED if args.check and problems else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
