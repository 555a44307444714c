"""Seeded simulation campaign of one consensus protocol, with random faults inside its fault model.

    python jobs/simulate.py --protocol raft --seeds 2000
    python jobs/simulate.py --protocol pbft --seeds 100000 --start 5000 --json
    python jobs/simulate.py --protocol pbft --faults drop,partition,byzantine --seeds 500
    python jobs/simulate.py --protocol raft --replay 1234          # one seed, with its event log

Prints runs, faults injected, safety violations, liveness failures and messages
per decision; exits 1 if any run violated safety or liveness (its seed replays
the failure exactly with --replay), 2 on bad arguments. No Ray: the simulator
is pure Python (run long campaigns under `nice -n 19`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script (ray job submit): make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.common import EXIT_OK, emit_json, fail

EXIT_VIOLATION = 1  # a safety violation or a liveness failure in at least one run


def parser() -> argparse.ArgumentParser:
    """Arguments of the job."""
    from fabric.consensus import protocol_names
    from fabric.sim import FAULT_KINDS

    p = argparse.ArgumentParser(prog="simulate", description=__doc__.split("\n\n")[0])
    p.add_argument("--protocol", required=True, choices=protocol_names(), help="registered protocol")
    p.add_argument("--seeds", type=int, default=100, help="runs (seeds start .. start+seeds-1)")
    p.add_argument("--start", type=int, default=0, help="first seed")
    p.add_argument("--faults", default="all",
                   help=f"comma-separated fault kinds ({', '.join(FAULT_KINDS)}), 'all' (every kind "
                        "in the protocol's fault model) or 'none'")
    p.add_argument("--replicas", type=int, default=None, help="n (default: 3 for raft, 4 for pbft)")
    p.add_argument("--clients", type=int, default=2, help="clients per run")
    p.add_argument("--ops", type=int, default=5, help="operations per client")
    p.add_argument("--vms", type=int, default=2, help="VMs the clients contend for")
    p.add_argument("--heal-ms", type=int, default=None, help="faults end here (default 1500)")
    p.add_argument("--replay", type=int, default=None, metavar="SEED",
                   help="run only this seed and print its event log")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout and nothing else")
    return p


def _campaign_config(args: argparse.Namespace) -> Any:
    from fabric.sim import CampaignConfig, RunConfig
    from fabric.sim.campaign import HEAL_MS

    kinds: tuple[str, ...] | None
    if args.faults == "all":
        kinds = None
    elif args.faults == "none":
        kinds = ()
    else:
        kinds = tuple(k.strip() for k in args.faults.split(",") if k.strip())
    run = RunConfig(protocol=args.protocol, n=args.replicas, clients=args.clients, ops_per_client=args.ops,
                    vms=args.vms)
    return CampaignConfig(run=run, seeds=args.seeds, start=args.start, kinds=kinds,
                          heal_ms=args.heal_ms if args.heal_ms is not None else HEAL_MS).validate()


def _print_summary(summary: dict[str, Any]) -> None:
    print(f"protocol {summary['protocol']}: {summary['runs']} runs, seeds "
          f"{summary['seeds'][0]}..{summary['seeds'][1] - 1}, {summary['wall_s']} s")
    faults = ", ".join(f"{k} {v}" for k, v in summary["faults_injected"].items() if v)
    print(f"  faults injected: {faults or 'none'}")
    print(f"  safety violations: {summary['safety_violations']} runs")
    print(f"  liveness failures: {summary['liveness_failures']} runs")
    print(f"  inconclusive linearizability checks: {summary['inconclusive_checks']}")
    print(f"  decisions: {summary['decisions']}, messages: {summary['messages']}, "
          f"messages per decision: {summary['messages_per_decision']}")
    for failure in summary["failures"][:5]:
        print(f"  seed {failure['seed']} failed (replay with --replay {failure['seed']}):")
        for line in failure["safety"] + failure["liveness"]:
            print("    " + line.replace("\n", "\n    "))


def main(argv: list[str] | None = None) -> int:
    """Run the campaign (or one replay); return the exit code."""
    from fabric.errors import ConfigError
    from fabric.sim import run_campaign, run_seed

    args = parser().parse_args(argv)
    try:
        cfg = _campaign_config(args)
    except ConfigError as e:
        return fail(str(e), json_mode=args.json)
    if args.replay is not None:
        lines: list[str] = []
        result = run_seed(cfg, args.replay, log=None if args.json else lines.append)
        report = {"seed": result.seed, "protocol": result.protocol, "ok": result.ok,
                  "faults": cfg.faults_for(args.replay).summary(), "safety": list(result.safety_violations),
                  "liveness": list(result.liveness_failures), "messages": result.messages,
                  "decisions": result.decisions, "trace_digest": result.trace_digest}
        if args.json:
            emit_json(report)
        else:
            print(cfg.faults_for(args.replay))
            print("\n".join(lines))
            print(report)
        return EXIT_OK if result.ok else EXIT_VIOLATION

    def progress(r: Any) -> None:
        """A progress line on stderr."""
        if not args.json:
            print(f"  ... {r.runs} runs, {r.safety_violations + r.liveness_failures} failing, "
                  f"{r.wall_s:.0f} s", file=sys.stderr)

    result = run_campaign(cfg, progress=progress, progress_every=500)
    summary = result.to_dict()
    if args.json:
        emit_json(summary)
    else:
        _print_summary(summary)
    return EXIT_OK if not result.failing_seeds else EXIT_VIOLATION


if __name__ == "__main__":
    sys.exit(main())
