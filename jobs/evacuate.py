"""Move every VM off a node or a whole data center, several live migrations at once.

    ray job submit --working-dir . -- python jobs/evacuate.py --from us-west-2
    novacron evacuate --from eu-west --concurrency 4 --json

The fabric's placement picks each VM's target among the nodes left: in the
same data center first when one node is evacuated, else outside the evacuated
set. At most --concurrency migrations run at once. Exit codes: 0 when every
VM moved, 1 when at least one did not (it keeps running where it was), 2 on
bad input (an unknown node or data center, a bad option).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

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
    positive_int,
    quiet_ray_logs,
)

POLL_S = 0.5  # status polls while the evacuation runs; each one asks every node


def parser() -> argparse.ArgumentParser:
    """Arguments of the evacuate job."""
    p = argparse.ArgumentParser(prog="evacuate", description=__doc__.split("\n\n")[0])
    p.add_argument("--from", dest="target", required=True, metavar="NODE_OR_DC",
                   help="the node (us-west-2) or data center (us-west) to empty")
    p.add_argument("--concurrency", type=positive_int, default=2,
                   help="migrations at once (default 2; the controller allows up to 16)")
    add_connection_args(p)
    add_migration_args(p)
    p.add_argument("--no-progress", action="store_true", help="no progress lines")
    return p


class _Evacuation(threading.Thread):
    """FabricHandle.evacuate blocks until every migration ends: run it beside the progress poll."""

    def __init__(self, handle: Any, target: str, concurrency: int, config: dict[str, Any]) -> None:
        super().__init__(name="evacuation", daemon=True)
        self._call = (handle, target, concurrency, config)
        self.reports: list[dict[str, Any]] | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        handle, target, concurrency, config = self._call
        try:
            self.reports = [r.to_dict() for r in handle.evacuate(target, concurrency=concurrency,
                                                                 config=config)]
        except BaseException as e:  # handed to the main thread, which reports it
            self.error = e


def _follow(handle: Any, run: _Evacuation, vms: set[str], before: set[str], total: int) -> None:
    """Draw progress from status polls until the evacuation returns."""
    from jobs.render import EvacuationProgress

    progress = EvacuationProgress(total)
    while True:
        finished = not run.is_alive()  # one more poll after the end draws the last outcomes
        try:
            status = handle.status()
        except Exception as e:  # a slow or failing poll must not stop the evacuation
            print(f"  (status poll failed: {e})", file=sys.stderr)
        else:
            mine = [m for m in status["migrations"] if m["id"] not in before and m["vm"] in vms]
            outgoing = {o["vm"]: o for n in status["nodes"] for o in n.get("outgoing", [])}
            progress.update(mine, outgoing)
        if finished:
            break
        run.join(POLL_S)
    progress.finish()


def result_table(reports: list[dict[str, Any]], where: dict[str, str]) -> str:
    """The final table: one row per VM."""
    from jobs.render import MB, table

    rows = [[r["vm"], r["source"], r["destination"] or "-", r["status"], where.get(r["vm"], "?"),
             r["total_time_ms"], r["downtime_ms"] if r["status"] == "completed" else None, r["rounds"],
             r["wire_bytes"] / MB, r["abort_reason"][:60]] for r in reports]
    return table(rows, ["vm", "from", "to", "status", "runs on", "total ms", "downtime ms", "rounds",
                        "wire MB", "reason"])


def main(argv: list[str] | None = None) -> int:
    """Run the job; returns the exit code."""
    args = parser().parse_args(argv)
    import fabric

    try:
        handle = fabric.connect(args.address, **quiet_ray_logs(args.json))
        leaving = [n.name for n in handle.topology().resolve(args.target)]
        on_them = [v for v in handle.list_vms() if v["node"] in leaving]
        before = {m["id"] for m in handle.status()["migrations"]}
    except fabric.FabricError as e:
        return fail(str(e), exit_code_for(e), json_mode=args.json)
    show = not (args.json or args.no_progress)
    if show:
        print(f"evacuating {args.target} ({', '.join(leaving)}): {len(on_them)} VMs, "
              f"{args.concurrency} at a time", file=sys.stderr)
    t0 = time.monotonic()
    run = _Evacuation(handle, args.target, args.concurrency, migration_config(args))
    run.start()
    if show:
        _follow(handle, run, {v["vm"] for v in on_them}, before, len(on_them))
    run.join()
    if isinstance(run.error, fabric.FabricError):
        return fail(str(run.error), exit_code_for(run.error), json_mode=args.json)
    if run.error is not None:  # e.g. the controller died: say so, keep stdout to the one object
        traceback.print_exception(run.error, file=sys.stderr)
        return fail(f"the evacuation did not finish: {run.error!r}", EXIT_MIGRATION_FAILED, args.json)
    reports, elapsed_s = run.reports or [], time.monotonic() - t0
    try:  # where the ledger says each VM runs now
        where = {v["vm"]: v["node"] for v in handle.list_vms()}
    except fabric.FabricError:  # else where each migration left it
        where = {r["vm"]: r["vm_location"] for r in reports}
    moved = [r["vm"] for r in reports if r["status"] == "completed"]
    not_moved = [r["vm"] for r in reports if r["status"] != "completed"]
    if args.json:
        emit_json({"target": args.target, "nodes": leaving, "concurrency": args.concurrency,
                   "elapsed_s": round(elapsed_s, 3), "moved": moved, "not_moved": not_moved,
                   "locations": {r["vm"]: where.get(r["vm"]) for r in reports}, "reports": reports})
    else:
        print(result_table(reports, where) if reports else f"no VMs on {args.target}: nothing to move")
        summary = f"\n{len(moved)} of {len(reports)} VMs moved off {args.target} in {elapsed_s:.1f} s"
        print(summary + (f"; not moved: {', '.join(not_moved)}" if not_moved else ""))
    return EXIT_OK if not not_moved else EXIT_MIGRATION_FAILED


if __name__ == "__main__":
    sys.exit(main())
