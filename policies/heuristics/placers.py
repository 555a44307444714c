"""The classic placers, written as policies on the env's interface (observations in, actions out).

Each heuristic reads only what a MADDPG actor reads (its data center's observation,
`policies.env.layout`) and answers with an action the env decodes the same way
(`policies.env.decode`), so the comparison is like for like:

- first-fit: the lowest host slot that fits;
- best-fit: the host left fullest after placing (largest memory fill + vCPU fill);
- worst-fit: the host left emptiest;
- dot-product: Tetris's alignment of the request with the host's free resources
  (Grandl et al., "Multi-resource packing for cluster schedulers", SIGCOMM 2014);
- least-loaded-dc: a request stays local only while this data center is no fuller than
  the least-loaded other one (from the gossiped load); else it goes there; hosts worst-fit.

All but least-loaded-dc keep requests local while a host fits and hand the overflow to
the least-loaded other data center. As placers they never migrate; the `+migrate`
variant of each adds the static-threshold migration of Beloglazov and Buyya (CCPE 2012,
"THR" with a 0.8 CPU threshold): a host busier than 80% of its cores sheds the VM with
the least memory that brings it under (their "minimum migration time" choice), to a
local host the placer picks, else to the handoff data center.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from policies.env.layout import SCORE_FEATURES, Layout, hot_slot, keep_slot
from policies.errors import UnknownPolicyError

PLACERS = ("first-fit", "best-fit", "worst-fit", "dot-product", "least-loaded-dc")
MIGRATE_SUFFIX = "+migrate"
HEURISTICS = PLACERS + tuple(p + MIGRATE_SUFFIX for p in PLACERS)
THR_CPU_LOAD = 0.8  # Beloglazov and Buyya's static threshold
_WEIGHTS = {  # score-feature weights per heuristic, in SCORE_FEATURES order
    "first-fit": (0.0, 0.0, 0.0, 0.0, 0.0),
    "best-fit": (1.0, 1.0, 0.0, 0.0, 0.0),
    "worst-fit": (-1.0, -1.0, 0.0, 0.0, 0.0),
    "dot-product": (0.0, 0.0, 0.0, 1.0, 0.0),
    "least-loaded-dc": (-1.0, -1.0, 0.0, 0.0, 0.0),
}


@dataclass(frozen=True)
class HeuristicPolicy:
    """A named heuristic for `layout`, acting for every data center."""

    name: str
    layout: Layout
    agents: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.name not in HEURISTICS:
            raise UnknownPolicyError(f"no heuristic {self.name!r}; heuristics are {HEURISTICS}")
        if len(self.agents) != self.layout.dcs:
            raise UnknownPolicyError(
                f"{len(self.agents)} agents for a layout of {self.layout.dcs} data centers"
            )

    def act(self, observations: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Each data center's action for its observation."""
        return {agent: self.action(observations[agent]) for agent in self.agents}

    @property
    def placer(self) -> str:
        """The placement heuristic, without the migration suffix."""
        return self.name.removesuffix(MIGRATE_SUFFIX)

    @property
    def migrates(self) -> bool:
        """Whether this is a `+migrate` variant."""
        return self.name.endswith(MIGRATE_SUFFIX)

    def action(self, obs: np.ndarray) -> np.ndarray:
        """One data center's action."""
        layout, placer = self.layout, self.placer
        blocks = layout.split_observation(np.asarray(obs, np.float64))
        action = np.zeros(layout.action_size)
        s = layout.action_slices
        if placer == "first-fit":
            action[s["host_bias"]] = np.linspace(1.0, -1.0, layout.hosts) if layout.hosts > 1 else 1.0
        action[s["weights"]] = _WEIGHTS[placer]
        peers = blocks["peers"]
        peer_util = np.maximum(peers[:, 0], peers[:, 1])  # the binding resource of each other DC
        # Handoff scores rank the other DCs by free share: overflow goes to the least loaded.
        action[s["handoff"]] = 1.0 - 2.0 * np.clip(peer_util, 0.0, 1.0)
        keep_below = float(peer_util.min()) if placer == "least-loaded-dc" and peer_util.size else 1.0
        action[s["keep"]] = keep_slot(keep_below)
        action[s["migrate"]] = (hot_slot(THR_CPU_LOAD), 1.0) if self.migrates else (1.0, -1.0)
        return action.astype(np.float32)


class RandomPolicy:
    """Uniform random actions, seeded: the floor every learned policy must clear."""

    name = "random"

    def __init__(self, layout: Layout, agents: tuple[str, ...], seed: int = 0) -> None:
        self.layout = layout
        self.agents = agents
        self._rng = np.random.default_rng(seed)

    def act(self, observations: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A random action per data center."""
        return {
            a: self._rng.uniform(-1.0, 1.0, self.layout.action_size).astype(np.float32) for a in self.agents
        }


assert len(SCORE_FEATURES) == len(_WEIGHTS["best-fit"])
