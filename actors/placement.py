"""`PlacementService`: the fabric's placement advisor as a Ray actor.

Its creator names it (e.g. `fabric/placement` in the `novacron` namespace) and
passes a config: `{"checkpoint": PATH}` for trained MADDPG actors (falling back to
a heuristic, and saying so, when the checkpoint is missing or does not fit the
fabric), or `{"heuristic": NAME}`. The input and answer formats are documented in
`policies.advisor`.

    svc = PlacementService.options(name="fabric/placement", namespace="novacron").remote(
        {"checkpoint": str(DEFAULT_CHECKPOINT)})
    ray.get(svc.place.remote({"vm": "web-2", "memory_mib": 256, "origin_dc": "us-east"}, dcs))
"""

from __future__ import annotations

from typing import Any

import ray

from policies.advisor import AdvisorConfig, PlacementAdvisor


@ray.remote(num_cpus=0)
class PlacementService:
    """Answers 'where should this VM go' and 'which VMs should move' with one loaded policy."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._advisor = PlacementAdvisor(AdvisorConfig.from_dict(config))

    def place(self, request: dict[str, Any], dcs: list[dict[str, Any]]) -> dict[str, Any]:
        """The chosen data center and host for `request` (with `policy` and `fallback_reason`)."""
        return self._advisor.place(request, dcs)

    def rebalance(self, state: dict[str, Any]) -> list[dict[str, Any]]:
        """VMs to move off hot hosts, each with its target data center and host."""
        return self._advisor.rebalance(state)

    def describe(self) -> dict[str, Any]:
        """Which policy is loaded, whether it fell back, and why."""
        return self._advisor.describe()
