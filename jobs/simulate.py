"""Seeded simulation campaign of one consensus protocol, with random faults inside its fault model.

    python jobs/simulate.py --protocol raft --seeds 2000
    python jobs/simulate.py --protocol pbft --seeds 100000 --start 5000 --json
    python jobs/simulate.py --protocol bullshark --seeds 10000 --workers 2  # same result, 2 processes
    python jobs/simulate.py --protocol pbft --faults drop,partition,byzantine --seeds 500
    python jobs/simulate.py --protocol raft --replay 1234          # one seed, with its event log
    python jobs/simulate.py --protocol probft --replicas 16 --option l=1.2 --seeds 500
    python jobs/simulate.py --protocol probft --agreement 4 10 25 49 --seeds 200   # rate vs bound

Every registered protocol runs by name (raft, pbft, probft, tpbft, bullshark,
acp). Prints runs, faults injected, safety violations, fencing violations,
liveness failures and messages per decision; exits 1 if any run violated safety
or liveness (its seed replays the failure exactly with --replay), 2 on bad
arguments. ProBFT where its quorums are probabilistic (n > 4 with the default
o and l) counts agreement violations as a measured result and fails only on a
fencing violation (clients acted on two owners), a core that raised, or a
liveness failure. `--agreement` measures ProBFT's agreement-violation rate
under the colluding attack (fabric.sim.measure) at each n, next to the bound of
fabric.consensus.probft.analysis. No Ray: the simulator is pure Python (run
long campaigns under `nice -n 19`).
"""

from __future__ import annotations

import argparse
import json
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
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a protocol option (repeatable; VALUE as JSON, else a string), e.g. l=1.2")
    p.add_argument("--replay", type=int, default=None, metavar="SEED",
                   help="run only this seed and print its event log")
    p.add_argument("--agreement", type=int, nargs="+", default=None, metavar="N",
                   help="probft only: measure the agreement-violation rate under the colluding attack "
                        "at each n (--seeds runs each), next to the bound")
    p.add_argument("--byzantine-share", type=float, default=None,
                   help="with --agreement: f = share*n colluding replicas (default: the most, (n-1)//3)")
    p.add_argument("--workers", type=int, default=1,
                   help="processes running seeds in parallel (the result is the same for any count)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout and nothing else")
    return p


def _options(pairs: list[str]) -> dict[str, Any]:
    """--option KEY=VALUE pairs as a dict (ConfigError on a pair without '=')."""
    from fabric.errors import ConfigError

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--option {pair!r}: use KEY=VALUE")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


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
                    vms=args.vms, options=_options(args.option))
    return CampaignConfig(run=run, seeds=args.seeds, start=args.start, kinds=kinds,
                          heal_ms=args.heal_ms if args.heal_ms is not None else HEAL_MS,
                          workers=args.workers).validate()


def _print_summary(summary: dict[str, Any]) -> None:
    print(f"protocol {summary['protocol']}: {summary['runs']} runs, seeds "
          f"{summary['seeds'][0]}..{summary['seeds'][1] - 1}, {summary['wall_s']} s")
    faults = ", ".join(f"{k} {v}" for k, v in summary["faults_injected"].items() if v)
    print(f"  faults injected: {faults or 'none'}")
    print(f"  safety violations: {summary['safety_violations']} runs")
    if summary["probabilistic_agreement"]:
        print(f"    of which agreement violations (probabilistic quorums; measured, not failures): "
              f"{summary['agreement_violations']} runs")
    print(f"  fencing violations (clients acted on two owners): {summary['fencing_violations']} runs")
    print(f"  liveness failures: {summary['liveness_failures']} runs")
    print(f"  inconclusive linearizability checks: {summary['inconclusive_checks']}")
    print(f"  decisions: {summary['decisions']}, messages: {summary['messages']}, "
          f"messages per decision: {summary['messages_per_decision']}")
    for failure in summary["failures"][:5]:
        print(f"  seed {failure['seed']} failed (replay with --replay {failure['seed']}):")
        for line in failure["safety"] + failure["fencing"] + failure["liveness"]:
            print("    " + line.replace("\n", "\n    "))


def main(argv: list[str] | None = None) -> int:
    """Run the campaign (or one replay); return the exit code."""
    from fabric.errors import ConfigError
    from fabric.sim import run_campaign, run_seed

    args = parser().parse_args(argv)
    if args.agreement is not None:
        return _agreement(args)
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


def _agreement(args: argparse.Namespace) -> int:
    """--agreement: ProBFT's measured agreement-violation rate against the bound, per n."""
    from fabric.errors import ConfigError
    from fabric.sim.measure import probft_agreement

    if args.protocol != "probft":
        return fail("--agreement measures probft only", json_mode=args.json)
    try:
        options = _options(args.option)
        o, l = float(options.pop("o", 2.0)), float(options.pop("l", 1.5))  # noqa: E741
        if options:
            raise ConfigError(f"--agreement takes only the options o and l, not {sorted(options)}")
        if args.byzantine_share is not None and not 0 < args.byzantine_share < 1 / 3:
            raise ConfigError(f"--byzantine-share {args.byzantine_share}: use 0 < share < 1/3")
        rows = []
        for n in args.agreement:
            f = (n - 1) // 3
            if args.byzantine_share is not None:
                f = max(1, min(f, int(args.byzantine_share * n)))
            res = probft_agreement(n, f, args.seeds, start=args.start, o=o, l=l)
            rows.append(res.to_dict())
            if not args.json:
                b = res.bound
                print(f"n={n:3d} f={f:2d} sample={b['sample']:2d} q={b['q']:2d}: "
                      f"{res.violations}/{res.runs} runs split (rate {res.rate:.4f}, 95% upper "
                      f"{res.rate_upper95:.4f}); bound: per replica {b['per_replica']:.3g}, union "
                      f"{b['union_bound']:.3g}, Chernoff {b['chernoff_bound']:.3g}; fencing violations "
                      f"{res.fencing_violations} [{res.wall_s:.0f} s]", flush=True)
    except ConfigError as e:
        return fail(str(e), json_mode=args.json)
    if args.json:
        emit_json({"protocol": "probft", "attack": "collude", "o": o, "l": l, "rows": rows})
    return EXIT_VIOLATION if any(r["fencing_violations"] for r in rows) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
