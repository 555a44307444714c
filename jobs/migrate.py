"""Live-migrate one VM to a data center or node, then print the report.

    ray job submit --working-dir . -- python jobs/migrate.py --vm kv-1 --to eu-west
    novacron migrate --vm kv-1 --to eu-west-2 --json
    novacron migrate --vm kv-1 --to us-west --plot kv-1.png    # and a PNG of its rounds

Attaches to the running fabric (named actors in the `novacron` namespace) or
boots it, with its default VMs, if there is none. Exit codes: 0 completed,
1 not completed (the VM keeps running at its source) or the plot could not be
written, 2 bad input (unknown VM or target, bad option).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script (ray job submit): make the project importable
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


def parser() -> argparse.ArgumentParser:
    """Arguments of the migrate job."""
    p = argparse.ArgumentParser(prog="migrate", description=__doc__.split("\n\n")[0])
    p.add_argument("--vm", required=True, help="name of the VM to move")
    p.add_argument("--to", required=True, help="target data center (e.g. eu-west) or node (eu-west-2)")
    add_connection_args(p)
    add_migration_args(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--plot", metavar="PATH", default=None,
                   help="write a PNG of the rounds (pages remaining, bandwidth, dirty rate) to PATH")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the job; returns the exit code."""
    args = parser().parse_args(argv)
    import fabric
    from jobs.render import RoundBars, follow, report_text

    try:
        handle = fabric.connect(args.address, **quiet_ray_logs(args.json))
        migration = handle.migrate(args.vm, args.to, wait=False, config=migration_config(args))
    except fabric.FabricError as e:
        return fail(str(e), exit_code_for(e), json_mode=args.json)
    bars = None if (args.json or args.no_progress) else RoundBars()
    if bars is not None:
        print(f"migrating {args.vm} to {args.to} ({migration.id})", file=sys.stderr)
        follow(migration.progress, bars)
    report = migration.result().to_dict()
    if bars is not None:
        bars.finish(report)
    if args.json:
        emit_json(report)  # the report alone, as MigrationReport.from_dict reads it
    else:
        print(report_text(report))
    if args.plot:
        from jobs.plot import plot_migration

        try:
            where = plot_migration(report, args.plot)
        except (OSError, ValueError) as e:
            return fail(f"no plot written: {e}", EXIT_MIGRATION_FAILED)
        print(f"\nmigration plot: {where}", file=sys.stderr if args.json else sys.stdout)
    return EXIT_OK if report["status"] == "completed" else EXIT_MIGRATION_FAILED


if __name__ == "__main__":
    sys.exit(main())
