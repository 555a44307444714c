"""The demo: an embedded Ray with three emulated data centers, running VMs, one live migration.

    novacron demo            # progress bars and a report
    novacron demo --json     # the migration report as one JSON object
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.common import (
    EXIT_MIGRATION_FAILED,
    EXIT_OK,
    add_connection_args,
    add_migration_args,
    emit_json,
    fail,
    migration_config,
    quiet_ray_logs,
)

WARMUP_S = 1.0  # let the guests run (and dirty memory) before the migration starts


def parser() -> argparse.ArgumentParser:
    """Arguments of the demo."""
    p = argparse.ArgumentParser(prog="demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--vm", default=None, help="VM to migrate (default: the kv guest)")
    p.add_argument("--to", default="eu-west", help="target data center or node (default eu-west)")
    add_connection_args(p)
    add_migration_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit code."""
    args = parser().parse_args(argv)
    import fabric
    from jobs.render import RoundBars, follow, report_text, table

    say = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr))
    say("NovaCron Fabric demo: booting Ray with three emulated data centers "
        "(us-east, us-west, eu-west; two nodes each) on this machine...")
    try:
        handle = fabric.connect(args.address, **quiet_ray_logs(args.json))
    except fabric.FabricError as e:
        return fail(str(e), json_mode=args.json)
    if handle.dashboard_url:
        say(f"Ray dashboard: http://{handle.dashboard_url}  (actors are named fabric/...)")
    vms = handle.list_vms()
    say("\n" + table([[v["vm"], v["node"], v["dc"], v["state"], v["memory_mib"], v["workload"]]
                      for v in vms], ["vm", "node", "dc", "state", "MiB", "workload"]) + "\n")
    names = [v["vm"] for v in vms]
    vm = args.vm or next((n for n in ("kv-1", "kv-syn-1") if n in names), names[0] if names else "")
    time.sleep(WARMUP_S)
    try:
        migration = handle.migrate(vm, args.to, wait=False, config=migration_config(args))
    except fabric.FabricError as e:
        return fail(str(e), json_mode=args.json)
    say(f"live-migrating {vm} to {args.to} while its workload keeps writing memory:")
    bars = None if args.json else RoundBars()
    follow(migration.progress, bars)
    report = migration.result().to_dict()
    if args.json:
        emit_json(report)
    else:
        if bars is not None:
            bars.finish(report)
        print("\n" + report_text(report))
        after = handle.list_vms()
        print("\n" + table([[v["vm"], v["node"], v["dc"], v["epoch"], v["state"]] for v in after],
                           ["vm", "node", "dc", "epoch", "state"]))
    return EXIT_OK if report["status"] == "completed" else EXIT_MIGRATION_FAILED


if __name__ == "__main__":
    sys.exit(main())
