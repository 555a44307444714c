"""The placement environment: data centers of hosts, real VM requests, one agent per data center.

`PlacementEnv` subclasses RLlib's MultiAgentEnv, so it is imported on first use:
the config, layout and decoding stay importable without Ray's RL stack.
"""

from __future__ import annotations

from typing import Any

from policies.env.config import COMPONENTS, PlacementEnvConfig, RewardWeights
from policies.env.hosts import Hosts
from policies.env.layout import Layout

__all__ = ["COMPONENTS", "Hosts", "Layout", "PlacementEnv", "PlacementEnvConfig", "RewardWeights"]


def __getattr__(name: str) -> Any:
    if name == "PlacementEnv":
        from policies.env.env import PlacementEnv

        return PlacementEnv
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
