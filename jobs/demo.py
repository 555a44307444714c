"""The demo: an embedded Ray with three emulated data centers, running VMs, one live migration.

    novacron demo                        # progress bars, a report, and a PNG of the migration's rounds
    novacron demo --json                 # the migration report as one JSON object
    novacron demo --plot /tmp/kv-1.png   # the plot elsewhere (--no-plot: none)

Exit codes: 0 the migration completed, 1 it did not, 2 bad input.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, TextIO

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.common import (
    EXIT_MIGRATION_FAILED,
    EXIT_OK,
    add_connection_args,
    add_migration_args,
    emit_json,
    exit_code_for,
    fail,
    migration_config,
    quiet_ray_logs,
)

WARMUP_S = 1.0  # let the guests run (and dirty memory) before the migration starts
PLOT_PATH_DEFAULT = "out/demo-migration.png"  # relative to where the demo runs, as the benchmarks' out/


def parser() -> argparse.ArgumentParser:
    """Arguments of the demo."""
    p = argparse.ArgumentParser(prog="demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--vm", default=None, help="VM to migrate (default: the kv guest)")
    p.add_argument("--to", default="eu-west", help="target data center or node (default eu-west)")
    p.add_argument("--plot", metavar="PATH", default=PLOT_PATH_DEFAULT,
                   help=f"where to write the migration's plot (default {PLOT_PATH_DEFAULT})")
    p.add_argument("--no-plot", action="store_true", help="write no plot")
    add_connection_args(p)
    add_migration_args(p)
    return p


def _write_plot(report: dict[str, Any], path: str, out: TextIO) -> None:
    """Write the migration's plot and say where; the demo's outcome does not depend on it."""
    from jobs.plot import plot_migration

    try:
        print(f"\nmigration plot (pages remaining, bandwidth, dirty rate per round): "
              f"{plot_migration(report, path)}", file=out)
    except (OSError, ValueError, ImportError) as e:
        print(f"\nno migration plot: {e}", file=sys.stderr)


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
        return fail(str(e), exit_code_for(e), json_mode=args.json)
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
        return fail(str(e), exit_code_for(e), json_mode=args.json)
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
    if not args.no_plot:
        _write_plot(report, args.plot, sys.stderr if args.json else sys.stdout)
    return EXIT_OK if report["status"] == "completed" else EXIT_MIGRATION_FAILED


if __name__ == "__main__":
    sys.exit(main())
