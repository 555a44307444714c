"""Print the fabric's data centers, nodes, VMs, migrations and ledger health.

    ray job submit --working-dir . -- python jobs/status.py
    novacron status --json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script (ray job submit): make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.common import EXIT_OK, add_connection_args, emit_json, fail, quiet_ray_logs


def parser() -> argparse.ArgumentParser:
    """Arguments of the status job."""
    p = argparse.ArgumentParser(prog="status", description=__doc__.split("\n\n")[0])
    add_connection_args(p)
    p.add_argument("--no-boot", action="store_true", help="fail instead of booting an absent fabric")
    return p


def status_text(status: dict[str, Any]) -> str:
    """The status as tables."""
    from jobs.render import table

    topo = status["topology"]
    kind = ("emulated data centers on shared hardware" if topo["emulated"]
            else "one data center per Ray node")
    out = [f"data centers: {', '.join(topo['dcs'])} ({kind})", "",
           table([[n["name"], n["dc"], len(n["vms"]), n["memory_mib_used"], n["memory_mib_max"],
                   len(n["incoming"]), len(n["outgoing"]), n["ray_node_id"][:12]]
                  for n in status["nodes"]],
                 ["node", "dc", "vms", "MiB used", "MiB max", "incoming", "outgoing", "raylet"]),
           "",
           table([[v["vm"], v["node"], v["dc"], v["epoch"], v["state"], v["memory_mib"],
                   v["migrating_to"] or "", v["workload"]] for v in status["vms"]],
                 ["vm", "node", "dc", "epoch", "state", "MiB", "migrating to", "workload"])]
    if status["migrations"]:
        out += ["", table([[m["id"], m["source"], m["destination"], m["status"]]
                           for m in status["migrations"]],
                          ["migration", "from", "to", "status"])]
    ledger = status["ledger"] or {}
    out += ["", f"ledger: {ledger.get('kind')} at index {ledger.get('index')}, "
                f"{ledger.get('vms')} VMs, persistent={ledger.get('persistent')}"]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Run the job; returns the exit code."""
    args = parser().parse_args(argv)
    import fabric

    try:
        handle = fabric.connect(args.address, boot=not args.no_boot, **quiet_ray_logs(args.json))
        status = handle.status()
    except fabric.FabricError as e:
        return fail(str(e), json_mode=args.json)
    if args.json:
        emit_json(status)
    else:
        print(status_text(status))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
