"""Train the MADDPG placement policy in place on the Ray cluster, and export it for the placement service.

    ray job submit --working-dir . -- python jobs/train_placement.py --out /tmp/actors   # on a cluster
    python jobs/train_placement.py --address local                                 # the shipped default
    python jobs/train_placement.py --dc eu-west --num-env-runners 2                  # pinned to a data center

Training runs on the train split (Azure V1 train arrivals, PlanetLab train rows);
every --eval-every iterations the actors are scored on the dev split, and the best
so far are exported to --out (RLlib module checkpoint + placement.json with the
provenance). Progress goes to stderr, one line per dev evaluation; --json prints
one JSON report on stdout. With --dc, the whole run (driver-side learner and env
runners) is scheduled on nodes carrying the `dc:<name>` resource.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script (ray job submit): make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.common import EXIT_OK, add_connection_args, emit_json, fail, quiet_ray_logs

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "policies" / "checkpoints" / "default"


def parser() -> argparse.ArgumentParser:
    """Arguments of the training job."""
    from policies.training import TrainingSettings

    d = TrainingSettings()
    p = argparse.ArgumentParser(prog="train_placement", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--env-steps", type=int, default=d.env_steps, help=f"env steps to train (default {d.env_steps})"
    )
    p.add_argument(
        "--budget-minutes",
        type=float,
        default=d.budget_minutes,
        help=f"wall-clock cap in minutes (default {d.budget_minutes:g})",
    )
    p.add_argument("--seed", type=int, default=d.seed, help="seed of everything (default 0)")
    p.add_argument(
        "--num-env-runners",
        type=int,
        default=d.num_env_runners,
        help="remote env runners (default 0: sample in the training process)",
    )
    p.add_argument("--eval-every", type=int, default=d.eval_every, help="iterations between dev evaluations")
    p.add_argument("--dev-seeds", type=int, default=d.dev_seeds, help="seeds of each dev evaluation")
    p.add_argument("--dev-windows", type=int, default=d.dev_windows, help="windows of each dev evaluation")
    p.add_argument(
        "--prior",
        default=d.prior,
        help="start the actors at this heuristic's fixed part and pull them towards it (default: none)",
    )
    p.add_argument("--dc", default=None, help="pin the run to this data center (the dc:<name> resource)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="where to export the selected actors")
    p.add_argument(
        "--algo-checkpoint", default=None, help="also save the final algorithm (Algorithm.save_to_path) here"
    )
    p.add_argument(
        "--data", default=None, help="the shared data folder (default: $NOVACRON_DATA or ../shared/data)"
    )
    add_connection_args(p)
    return p


def git_commit() -> str:
    """The checked-out commit (+ "-dirty" if the code in policies/ or this job differs), or "" outside git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT, timeout=10
        )
        dirty = subprocess.run(
            [
                "git",
                "status",
                "--porcelain",
                "--",
                "policies",
                ":!policies/checkpoints",
                "jobs/train_placement.py",
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    if head.returncode != 0:
        return ""
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def run_training(args_dict: dict[str, Any], command: str) -> dict[str, Any]:
    """Build the env and settings from the arguments, train, and return the report as a dict."""
    import ray
    import torch

    from policies.env.config import PlacementEnvConfig
    from policies.traces.splits import TraceSources
    from policies.training import TrainingSettings, train_placement

    settings = TrainingSettings(
        env_steps=args_dict["env_steps"],
        budget_minutes=args_dict["budget_minutes"],
        seed=args_dict["seed"],
        num_env_runners=args_dict["num_env_runners"],
        eval_every=args_dict["eval_every"],
        dev_seeds=args_dict["dev_seeds"],
        dev_windows=args_dict["dev_windows"],
        prior=args_dict["prior"],
    )
    # Without --data the export records no paths: the env finds the shared data where it runs.
    env_config = PlacementEnvConfig(
        sources=TraceSources.default(args_dict["data"]) if args_dict["data"] else None
    )
    provenance = {
        "command": command,
        "git_commit": git_commit(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": platform.node(),
        "ray": ray.__version__,
        "torch": torch.__version__,
        "dc": args_dict["dc"],
    }

    def show(row: dict[str, Any]) -> None:
        print(
            f"iter {row['iteration']:>5}  env steps {row['env_steps']:>7}  {row['elapsed_s']:>7.0f} s  "
            f"dev objective {row['dev_objective']:8.2f}  best {row['best_dev_objective']:8.2f}"
            + ("  (exported)" if row["selected"] else ""),
            file=sys.stderr,
            flush=True,
        )

    report = train_placement(
        env_config,
        settings,
        args_dict["out"],
        dc=args_dict["dc"],
        provenance=provenance,
        algo_checkpoint=args_dict["algo_checkpoint"],
        progress=show,
    )
    return {
        "checkpoint": report.checkpoint,
        "iterations": report.iterations,
        "env_steps": report.env_steps,
        "wall_s": round(report.wall_s, 1),
        "stopped_by": report.stopped_by,
        "best_dev_objective": report.best_dev_objective,
        "best_iteration": report.best_iteration,
        "progress": report.progress,
        "settings": {**vars(settings)},
        "command": command,
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parser().parse_args(argv)
    import ray

    from fabric.errors import FabricError
    from policies.training import pinned_to

    command = "python jobs/train_placement.py " + " ".join(argv if argv is not None else sys.argv[1:])
    args_dict = {
        k: getattr(args, k)
        for k in (
            "env_steps",
            "budget_minutes",
            "seed",
            "num_env_runners",
            "eval_every",
            "dev_seeds",
            "dev_windows",
            "prior",
            "dc",
            "out",
            "algo_checkpoint",
            "data",
        )
    }
    args_dict["out"] = str(Path(args.out).resolve())
    if args_dict["algo_checkpoint"]:
        args_dict["algo_checkpoint"] = str(Path(args_dict["algo_checkpoint"]).resolve())
    try:
        ray.init(address=args.address, **quiet_ray_logs(args.json))
        if args.dc:
            # The whole run (its learner and local env runner) in one task on the data center's nodes.
            remote = ray.remote(num_cpus=1, resources=pinned_to(args.dc))(run_training)
            result = ray.get(remote.remote(args_dict, command))
        else:
            result = run_training(args_dict, command)
    except FabricError as e:
        return fail(str(e), json_mode=args.json)
    if args.json:
        emit_json(result)
    else:
        print(json.dumps({k: v for k, v in result.items() if k != "progress"}, indent=2, default=str))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
