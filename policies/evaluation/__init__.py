"""Evaluating placement policies: one plan of seeds and windows for all, components with CIs, latency."""

from policies.evaluation.protocol import PlacementPolicy
from policies.evaluation.runner import (
    EpisodeResult,
    EvaluationPlan,
    evaluate,
    run_episode,
    summarise,
    tiled_windows,
)
from policies.evaluation.stats import mean_ci

__all__ = [
    "EpisodeResult",
    "EvaluationPlan",
    "PlacementPolicy",
    "evaluate",
    "mean_ci",
    "run_episode",
    "summarise",
    "tiled_windows",
]
