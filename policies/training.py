"""Training MADDPG placement policies in place: the config, the loop, model selection on dev, the export.

`train_placement` runs the algorithm for a number of env steps (a hard wall-clock cap
on top), evaluates the actors on the dev split every `eval_every` iterations, and
exports the best ones (lowest dev objective) with their provenance. `pinned_to(dc)`
gives the Ray options that keep a whole run, env runners included, on a data center.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fabric.errors import ConfigError
from fabric.topology import DC_PREFIX
from policies.env.config import PlacementEnvConfig
from policies.env.env import PlacementEnv
from policies.env.layout import Layout
from policies.errors import UnknownPolicyError
from policies.evaluation.runner import EvaluationPlan, evaluate, summarise, tiled_windows
from policies.heuristics.placers import HEURISTICS, HeuristicPolicy
from policies.maddpg.config import MADDPGConfig
from policies.maddpg.export import export_actors, load_actors
from policies.traces.splits import TraceSources, load_split

DC_RESOURCE_PER_PROCESS = 0.001  # a token amount: pins a process to a data center, never limits how many fit
ENV_STEPS_MAX = 10_000_000
BUDGET_MINUTES_MAX = 24 * 60


@dataclass(frozen=True, kw_only=True)
class TrainingSettings:
    """How long and how to train; everything that decides the result is here (and seeded)."""

    # The shipped default: ~12 minutes on the 2-core dev machine while others ran benchmarks.
    env_steps: int = 12_000  # stop after this many sampled env steps ...
    budget_minutes: float = 14.0  # ... or this much wall time, whichever comes first
    seed: int = 0
    num_env_runners: int = 0
    eval_every: int = 125  # iterations (of 16 env steps) between dev evaluations
    dev_seeds: int = 8  # seeds (= shards) of the dev evaluation
    dev_windows: int = 3
    # A heuristic whose fixed part (see prior_action) the actors start at and are pulled towards
    # with weight actor_action_l2; None: the zero action (itself a sensible policy, see layout).
    prior: str | None = None
    hyper: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_HYPER))

    def __post_init__(self) -> None:
        if not 1 <= self.env_steps <= ENV_STEPS_MAX:
            raise ConfigError(f"env_steps must be in [1, {ENV_STEPS_MAX}], not {self.env_steps}")
        if not 0 < self.budget_minutes <= BUDGET_MINUTES_MAX:
            raise ConfigError(
                f"budget_minutes must be in (0, {BUDGET_MINUTES_MAX}], not {self.budget_minutes}"
            )
        if not 0 <= self.num_env_runners <= 64:
            raise ConfigError(f"num_env_runners must be in [0, 64], not {self.num_env_runners}")
        for name in ("eval_every", "dev_seeds", "dev_windows"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if self.prior is not None and self.prior not in HEURISTICS:
            raise UnknownPolicyError(
                f"no heuristic {self.prior!r} to start from; heuristics are {HEURISTICS}"
            )


# Chosen on the tiny env (2 DCs x 2 hosts) while debugging why plain MADDPG collapsed: its
# actors saturated (fixed by the pre-activation penalty) and followed a critic extrapolating
# into actions the buffer hardly held (hence twin critics, target smoothing, delayed and
# warmed-up actors kept near the zero action, and no uniform-random start).
DEFAULT_HYPER: dict[str, Any] = {
    # Most costs land in the step of their cause and a rejection at most four steps later;
    # returns are dominated by future arrivals no observation foretells, so a short horizon
    # lets the critic fit them (correlation with Monte Carlo returns 0.6 at 0.7, 0.3 at 0.9).
    "gamma": 0.7,
    "actor_lr": 1e-4,
    "actor_action_l2": 0.1,  # keeps the actors near the sensible zero action unless the critics insist
    "train_batch_size_per_learner": 256,
    "num_steps_sampled_before_learning_starts": 1_000,
    # No uniform-random start: random migration thresholds mostly churn, and a critic fit to
    # them learnt "fewer migrations is better" and drove the actors there (dev objective
    # 51.7 -> 64.8 at 8k steps, measured); exploring around the sensible zero action did not.
    "random_steps_before_learning": 0,
    "updates_per_iteration": 8,
    "critic_hiddens": [256, 256],
    "twin_q": True,
    "target_noise": 0.2,
    "policy_delay": 2,
    "actor_warmup_updates": 1_000,
    "exploration_noise_initial": 0.3,
    "exploration_noise_final": 0.1,
    "exploration_noise_steps": 10_000,  # most of a default run
}
ROLLOUT_FRAGMENT_STEPS = 16  # env steps per sampling call: 8 updates per 16 steps


def prior_action(name: str, layout: Layout) -> list[float]:
    """Heuristic `name`'s fixed part as one action: its action with the load-dependent handoff scores zeroed.

    Taken at an all-zero observation; for every placer but least-loaded-dc only the
    handoff scores depend on the observation, so the rest is the heuristic exactly.
    """
    policy = HeuristicPolicy(name, layout, tuple(f"dc{i}" for i in range(layout.dcs)))
    action = policy.action(np.zeros(layout.observation_size, np.float32)).astype(float)
    action[layout.action_slices["handoff"]] = 0.0
    return [float(v) for v in action]


def pinned_to(dc: str | None) -> dict[str, float]:
    """Custom resources that pin a process to data center `dc` (empty: run anywhere)."""
    return {f"{DC_PREFIX}{dc}": DC_RESOURCE_PER_PROCESS} if dc else {}


def maddpg_config(
    env_config: PlacementEnvConfig, settings: TrainingSettings, *, dc: str | None = None
) -> MADDPGConfig:
    """The MADDPG config for `env_config`; env runners (and learners, if remote) pinned to `dc`."""
    resources = pinned_to(dc)
    hyper = dict(settings.hyper)
    if settings.prior is not None:
        layout = Layout(dcs=len(env_config.dcs), hosts=env_config.hosts_per_dc)
        hyper["action_prior"] = prior_action(settings.prior, layout)
    config = (
        MADDPGConfig()
        .environment(PlacementEnv, env_config=env_config.to_dict())
        .env_runners(
            num_env_runners=settings.num_env_runners,
            rollout_fragment_length=ROLLOUT_FRAGMENT_STEPS,
            custom_resources_per_env_runner=resources,
        )
        .learners(custom_resources_per_learner=resources)
        .multi_agent_for(list(env_config.dcs))
        .training(**hyper)
        .debugging(seed=settings.seed)
    )
    return config


@dataclass(kw_only=True)
class TrainingReport:
    """What a run did: progress rows, the selected checkpoint and its dev score."""

    checkpoint: str
    iterations: int = 0
    env_steps: int = 0
    wall_s: float = 0.0
    stopped_by: str = ""
    best_dev_objective: float | None = None
    best_iteration: int | None = None
    progress: list[dict[str, Any]] = field(default_factory=list)


def dev_plan(env_config: PlacementEnvConfig, settings: TrainingSettings) -> EvaluationPlan:
    """The model-selection episodes: dev windows, fixed seeds (disjoint from the benchmark's)."""
    data = load_split(env_config.sources or TraceSources.default(), "dev")
    windows = tiled_windows(
        data,
        window_steps=env_config.window_steps,
        warmup_steps=env_config.warmup_steps,
        count_max=settings.dev_windows,
    )
    return EvaluationPlan(split="dev", seeds=tuple(range(settings.dev_seeds)), window_starts=windows)


def replace_dir(source: Path, target: Path) -> None:
    """Make `target` a copy of `source`, swapping it in whole (no stale files from an older export)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    shutil.copytree(source, fresh, dirs_exist_ok=True)
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    fresh.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def train_placement(
    env_config: PlacementEnvConfig,
    settings: TrainingSettings,
    out: str | Path,
    *,
    dc: str | None = None,
    provenance: dict[str, Any] | None = None,
    algo_checkpoint: str | Path | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> TrainingReport:
    """Train, select on dev, export the best actors to `out`; optionally save the final algorithm too."""
    out = Path(out)
    staging = Path(tempfile.mkdtemp(prefix="maddpg-candidate-"))  # each dev evaluation's export
    algo = maddpg_config(env_config, settings, dc=dc).build_algo()
    plan = dev_plan(env_config, settings)
    dev_env = PlacementEnv(PlacementEnvConfig.from_dict({**env_config.to_dict(), "split": "dev"}))
    report = TrainingReport(checkpoint=str(out))
    t0 = time.monotonic()
    deadline = t0 + settings.budget_minutes * 60.0
    try:
        while True:
            result = algo.train()
            report.iterations += 1
            report.env_steps = int(result["env_runners"]["num_env_steps_sampled_lifetime"])
            report.stopped_by = (
                "env_steps"
                if report.env_steps >= settings.env_steps
                else "budget"
                if time.monotonic() >= deadline
                else ""
            )
            if report.iterations % settings.eval_every == 0 or report.stopped_by:
                meta = {
                    **(provenance or {}),
                    "settings": asdict(settings),
                    "iteration": report.iterations,
                    "env_steps": report.env_steps,
                }
                export_actors(algo, staging, env_config=env_config, provenance=meta)
                summary = summarise(evaluate(load_actors(staging), env_config, plan, env=dev_env))
                objective = float(summary["objective"]["mean"])  # type: ignore[index]
                improved = report.best_dev_objective is None or objective < report.best_dev_objective
                if improved:
                    report.best_dev_objective, report.best_iteration = objective, report.iterations
                    meta["dev_objective"] = {"mean": objective, "ci95": summary["objective"]["ci95"]}  # type: ignore[index]
                    export_actors(algo, staging, env_config=env_config, provenance=meta)
                    replace_dir(staging, out)
                row = {
                    "iteration": report.iterations,
                    "env_steps": report.env_steps,
                    "elapsed_s": round(time.monotonic() - t0, 1),
                    "train_return": result["env_runners"].get("episode_return_mean"),
                    "dev_objective": objective,
                    "best_dev_objective": report.best_dev_objective,
                    "selected": improved,
                }
                report.progress.append(row)
                if progress is not None:
                    progress(row)
            if report.stopped_by:
                break
        if algo_checkpoint is not None:
            algo.save_to_path(Path(algo_checkpoint).resolve())
    finally:
        report.wall_s = time.monotonic() - t0
        algo.stop()
        shutil.rmtree(staging, ignore_errors=True)
    return report
