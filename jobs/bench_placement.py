"""Benchmark: the shipped MADDPG checkpoint against every heuristic (and random), on held-out windows.

    python jobs/bench_placement.py                          # table; JSON written to out/
    python jobs/bench_placement.py --json                   # one JSON object on stdout
    python jobs/bench_placement.py --checkpoint PATH --trace ARRIVALS [--lifetimes FILE] --planetlab CSV ...

Every policy plays the same episodes: the held-out test split (the second half of
Azure V1 dev, PlanetLab test rows) tiled into consecutive windows, once per seed;
seed s sees shard s of the trace's batches, so the default 32 seeds cover every
batch of the split once. With --trace the given arrivals file is used whole
instead (and --planetlab replaces the CPU traces). The table gives per-window means
of the objective and of each reward component with 95% confidence intervals over
seeds, the decision latency per placement, and MADDPG's paired difference to the
best heuristic.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script (ray job submit): make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.common import EXIT_BAD_INPUT, EXIT_OK, emit_json, fail
from jobs.render import table

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINT = ROOT / "policies" / "checkpoints" / "default"


def parser() -> argparse.ArgumentParser:
    """Arguments of the benchmark."""
    p = argparse.ArgumentParser(prog="bench_placement", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--checkpoint", default=str(DEFAULT_CHECKPOINT), help="MADDPG actors (default: the shipped ones)"
    )
    p.add_argument(
        "--trace", default=None, help="an Azure V1 arrivals file to use whole instead of the test split"
    )
    p.add_argument(
        "--lifetimes", default=None, help="its lifetime file (default: drawn from the dev-select half)"
    )
    p.add_argument(
        "--planetlab",
        action="append",
        default=None,
        metavar="PATH",
        help="a PlanetLab day file (repeatable; default: the shared ones)",
    )
    p.add_argument(
        "--data", default=None, help="the shared data folder (default: $NOVACRON_DATA or ../shared/data)"
    )
    p.add_argument(
        "--seeds", type=int, default=None, help="seeds (default: the env's shards, 32: the whole split)"
    )
    p.add_argument(
        "--windows-max", type=int, default=None, help="use at most this many windows (default: all)"
    )
    p.add_argument(
        "--policies", nargs="*", default=None, help="policy names (default: maddpg, random, all heuristics)"
    )
    p.add_argument("--out", default="out/bench_placement.json", help="where to write the JSON")
    p.add_argument(
        "--json", action="store_true", help="print one JSON object on stdout and nothing else there"
    )
    return p


def paired_difference(a: list[Any], b: list[Any]) -> dict[str, float]:
    """Mean and 95% CI over seeds of a's objective minus b's (same episodes): negative means a is better."""
    from policies.evaluation.stats import mean_ci

    by_seed: dict[int, list[float]] = {}
    for ra, rb in zip(a, b, strict=True):
        assert (ra.seed, ra.window_start) == (rb.seed, rb.window_start), "paired episodes must match"
        by_seed.setdefault(ra.seed, []).append(ra.objective - rb.objective)
    mean, ci = mean_ci([sum(v) / len(v) for v in by_seed.values()])
    return {"mean": mean, "ci95": ci}


def render(summaries: list[dict[str, Any]], comparison: dict[str, Any] | None) -> str:
    """The results as a text table (mean +- 95% CI per window of 8 hours)."""
    from policies.env.config import COMPONENTS

    def pm(x: dict[str, float]) -> str:
        return f"{x['mean']:,.1f} ± {x['ci95']:,.1f}"

    rows = [
        [s["policy"], pm(s["objective"])]
        + [pm(s["components"][k]) for k in COMPONENTS]
        + [s["decision_us"]["p50"], s["decision_us"]["p99"]]
        for s in summaries
    ]
    text = table(rows, ["policy", "objective", *COMPONENTS, "µs/decision p50", "p99"])
    if comparison:
        d = comparison["difference"]
        verdict = (
            "better"
            if d["mean"] + d["ci95"] < 0
            else "worse"
            if d["mean"] - d["ci95"] > 0
            else "not distinguishable"
        )
        text += (
            f"\n\nMADDPG - {comparison['best_heuristic']} (best heuristic), paired over seeds: "
            f"{d['mean']:+.2f} ± {d['ci95']:.2f} per window -> MADDPG is {verdict}"
        )
    return text


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parser().parse_args(argv)
    from fabric.errors import FabricError
    from policies.env.config import PlacementEnvConfig
    from policies.env.env import PlacementEnv
    from policies.evaluation.runner import EvaluationPlan, evaluate, summarise, tiled_windows
    from policies.heuristics.placers import HEURISTICS, HeuristicPolicy, RandomPolicy
    from policies.traces.splits import TraceSources, load_split

    try:
        sources = TraceSources.default(args.data)
        if args.trace or args.planetlab:
            sources = TraceSources(
                azure_dir=sources.azure_dir,
                planetlab=tuple(args.planetlab) if args.planetlab else sources.planetlab,
                trace=args.trace,
                lifetimes=args.lifetimes,
            )
        split = "custom" if args.trace else "test"
        env_config = PlacementEnvConfig(sources=sources, split=split)
        env = PlacementEnv(env_config)
        data = load_split(sources, split)
        seeds = tuple(range(args.seeds if args.seeds is not None else env_config.shards))
        plan = EvaluationPlan(
            split=split,
            seeds=seeds,
            window_starts=tiled_windows(
                data,
                window_steps=env_config.window_steps,
                warmup_steps=env_config.warmup_steps,
                count_max=args.windows_max,
            ),
        )
        agents = tuple(env_config.dcs)
        names = args.policies or ["maddpg", "random", *HEURISTICS]
        policies: list[Any] = []
        for name in names:
            if name == "maddpg":  # as the placement service runs it (numpy; the same actions as RLlib's)
                from policies.checkpoint import load_numpy_actors

                policies.append(
                    load_numpy_actors(args.checkpoint, dcs=env.layout.dcs, hosts=env.layout.hosts)
                )
            elif name == "random":
                policies.append(RandomPolicy(env.layout, agents, seed=0))
            else:
                policies.append(HeuristicPolicy(name, env.layout, agents))
        results, summaries = {}, []
        for policy in policies:
            t0 = time.monotonic()
            results[policy.name] = evaluate(policy, env_config, plan, env=env)
            summaries.append(summarise(results[policy.name]))
            if not args.json:
                print(
                    f"{policy.name}: {len(results[policy.name])} episodes in {time.monotonic() - t0:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )
    except FabricError as e:
        return fail(str(e), EXIT_BAD_INPUT, json_mode=args.json)
    heuristics = [s for s in summaries if s["policy"] in HEURISTICS]
    comparison = None
    if "maddpg" in results and heuristics:
        best = min(heuristics, key=lambda s: s["objective"]["mean"])["policy"]
        comparison = {
            "best_heuristic": best,
            "difference": paired_difference(results["maddpg"], results[best]),
        }
    report = {
        "plan": {
            "split": split,
            "seeds": len(seeds),
            "windows": list(plan.window_starts),
            "window_steps": env_config.window_steps,
            "episodes_per_policy": len(plan.episodes()),
        },
        "env_config": env_config.to_dict(),
        "checkpoint": args.checkpoint if "maddpg" in names else None,
        "checkpoint_provenance": next(
            (p.meta.get("provenance") for p in policies if p.name == "maddpg" and hasattr(p, "meta")), None
        ),
        "summaries": summaries,
        "maddpg_vs_best_heuristic": comparison,
        "machine": {
            "host": platform.node(),
            "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d"),
        },
    }
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2, default=str) + "\n")
    if args.json:
        emit_json(report)
    else:
        print(render(summaries, comparison))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
