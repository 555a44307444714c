"""Run policies on the same seeds and trace windows, and tabulate reward components with CIs.

A plan fixes the split, the seeds and the window starts; every policy is run on
every (seed, window) pair with the same env seed and shard, so each policy meets
exactly the same VM requests, data-center assignments and CPU traces. Seed s uses
shard `s % shards`: with as many seeds as shards, the episodes cover every batch of
the split's windows once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from policies.env.config import COMPONENTS, PlacementEnvConfig
from policies.env.env import PlacementEnv
from policies.evaluation.protocol import PlacementPolicy
from policies.evaluation.stats import mean_ci
from policies.traces.splits import SplitData

EPISODE_SEED_STRIDE = 100_003  # keeps (seed, window) -> env seed one-to-one for windows below it


@dataclass(frozen=True, kw_only=True)
class EvaluationPlan:
    """Which episodes every policy plays."""

    split: str
    seeds: tuple[int, ...]
    window_starts: tuple[int, ...]

    def episodes(self) -> list[tuple[int, int]]:
        """(seed, window start) pairs, in a fixed order."""
        return [(s, w) for s in self.seeds for w in self.window_starts]


@dataclass(kw_only=True)
class EpisodeResult:
    """One policy's totals over one window."""

    policy: str
    seed: int
    window_start: int
    components: dict[str, float]
    objective: float  # the weighted sum of the components: minus the episode return
    decisions: int
    decision_s_per_step: list[float] = field(default_factory=list)  # act + decode, per decision, each step


def tiled_windows(
    data: SplitData, *, window_steps: int, warmup_steps: int, count_max: int | None = None
) -> tuple[int, ...]:
    """Non-overlapping window starts covering the split; `count_max` keeps an evenly spaced subset."""
    first, last = data.window_starts(warmup_steps=warmup_steps, window_steps=window_steps)
    starts = list(range(first, last + 1, window_steps))
    if count_max is not None and len(starts) > count_max:
        picks = np.linspace(0, len(starts) - 1, count_max).round().astype(int)
        starts = [starts[i] for i in picks]
    return tuple(starts)


def episode_seed(seed: int, window_start: int) -> int:
    """The env seed of one (seed, window) episode."""
    return seed * EPISODE_SEED_STRIDE + window_start


def run_episode(env: PlacementEnv, policy: PlacementPolicy, *, seed: int, window_start: int) -> EpisodeResult:
    """Play one window with `policy`; no learning, no exploration."""
    obs, _ = env.reset(
        seed=episode_seed(seed, window_start),
        options={"window_start": window_start, "shard": seed % env.config.shards},
    )
    totals = dict.fromkeys(COMPONENTS, 0.0)
    decisions, per_step = 0, []
    done = False
    while not done:
        t0 = time.perf_counter()
        actions = policy.act(obs)
        act_s = time.perf_counter() - t0
        obs, _, _, truncated, infos = env.step(actions)
        info = next(iter(infos.values()))
        for k, v in info["components"].items():
            totals[k] += v
        decisions += info["decisions"]
        if info["decisions"]:
            per_step.append((act_s + info["decode_s"]) / info["decisions"])
        done = truncated["__all__"]
    w = env.config.reward
    objective = sum(getattr(w, k) * v for k, v in totals.items())
    return EpisodeResult(
        policy=policy.name,
        seed=seed,
        window_start=window_start,
        components=totals,
        objective=objective,
        decisions=decisions,
        decision_s_per_step=per_step,
    )


def evaluate(
    policy: PlacementPolicy,
    env_config: PlacementEnvConfig,
    plan: EvaluationPlan,
    env: PlacementEnv | None = None,
) -> list[EpisodeResult]:
    """Every episode of `plan` with `policy`."""
    if env is None:
        env = PlacementEnv(PlacementEnvConfig.from_dict({**env_config.to_dict(), "split": plan.split}))
    return [run_episode(env, policy, seed=s, window_start=w) for s, w in plan.episodes()]


def summarise(results: list[EpisodeResult]) -> dict[str, object]:
    """Per-episode means of the objective and each component, with 95% CIs over seeds; decision latency."""
    seeds = sorted({r.seed for r in results})
    by_seed = {s: [r for r in results if r.seed == s] for s in seeds}

    def per_seed(value) -> list[float]:
        return [float(np.mean([value(r) for r in rs])) for rs in by_seed.values()]

    out: dict[str, object] = {"policy": results[0].policy, "episodes": len(results), "seeds": len(seeds)}
    mean, ci = mean_ci(per_seed(lambda r: r.objective))
    out["objective"] = {"mean": mean, "ci95": ci}
    out["components"] = {}
    for k in COMPONENTS:
        m, c = mean_ci(per_seed(lambda r, k=k: r.components[k]))
        out["components"][k] = {"mean": m, "ci95": c}  # type: ignore[index]
    per_decision = np.concatenate([r.decision_s_per_step for r in results]) if results else np.zeros(0)
    out["decisions"] = int(sum(r.decisions for r in results))
    out["decision_us"] = (
        {
            "p50": float(np.percentile(per_decision, 50) * 1e6),
            "p99": float(np.percentile(per_decision, 99) * 1e6),
        }
        if per_decision.size
        else {"p50": None, "p99": None}
    )
    return out
