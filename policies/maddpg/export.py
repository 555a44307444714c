"""Trained actors on disk: export from an algorithm, load for evaluation and the placement service.

An export is an RLlib `MultiRLModule` checkpoint of the inference-only actors
(`MultiRLModule.save_to_path`: one folder per agent, weights and constructor
arguments) plus `placement.json`: the agents, the env config the actors were trained
for, the actors' form (`policies.checkpoint.ACTOR_FORMAT`) and how they were made.
`load_actors` reads it through RLlib (and also accepts a full algorithm checkpoint,
`Algorithm.save_to_path`, whose modules live under `learner_group/learner/rl_module`);
it unpickles the modules' constructor arguments: load only checkpoints you trust.
`policies.checkpoint.load_numpy_actors` reads an export's weights alone, without torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_LEARNER_GROUP, COMPONENT_RL_MODULE
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.multi_rl_module import MultiRLModule
from ray.rllib.core.rl_module.rl_module import RLModule

from policies.checkpoint import (
    PLACEMENT_META,
    actor_description,
    check_fits,
    env_config_in,
    layout_for,
    read_meta,
)
from policies.env.config import PlacementEnvConfig
from policies.env.layout import Layout
from policies.errors import CheckpointError

__all__ = ["PLACEMENT_META", "ActorPolicy", "env_config_of", "export_actors", "load_actors"]
ALGORITHM_MODULES = Path(COMPONENT_LEARNER_GROUP) / COMPONENT_LEARNER / COMPONENT_RL_MODULE


@dataclass
class ActorPolicy:
    """Trained MADDPG actors acting for every data center (deterministic: no exploration noise)."""

    modules: dict[str, RLModule]
    agents: tuple[str, ...]  # the env's agent order
    layout: Layout
    meta: dict[str, Any] = field(default_factory=dict)
    name: str = "maddpg"

    def act(self, observations: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Each data center's action for its observation."""
        return {a: self.action(a, observations[a]) for a in self.agents}

    def action(self, agent: str, obs: np.ndarray) -> np.ndarray:
        """One data center's action."""
        with torch.no_grad():
            out = self.modules[agent].forward_inference(
                {Columns.OBS: torch.as_tensor(obs[None], dtype=torch.float32)}
            )
        return out[Columns.ACTIONS][0].numpy()


def export_actors(
    algo: Any, path: str | Path, *, env_config: PlacementEnvConfig, provenance: dict[str, Any]
) -> Path:
    """Save `algo`'s actors (inference-only) and `placement.json` to `path`."""
    path = Path(path)
    state = algo.learner_group.get_state(
        components=f"{COMPONENT_LEARNER}/{COMPONENT_RL_MODULE}", inference_only=True
    )[COMPONENT_LEARNER][COMPONENT_RL_MODULE]
    spec = algo.config.get_multi_rl_module_spec(spaces=algo.spaces, inference_only=True)
    module = spec.build()
    module.set_state(state)
    module.save_to_path(path)
    layout = Layout(dcs=len(env_config.dcs), hosts=env_config.hosts_per_dc)
    meta = {
        "env_config": env_config.to_dict(),
        "agents": list(env_config.dcs),
        "actor": actor_description(algo.config.actor_hiddens, layout.observation_size, layout.action_size),
        "provenance": provenance,
    }
    (path / PLACEMENT_META).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
    return path


def load_actors(path: str | Path, *, dcs: int | None = None, hosts: int | None = None) -> ActorPolicy:
    """Load actors from an export or an algorithm checkpoint; CheckpointError if missing or incompatible.

    `dcs` and `hosts`, when given, are what the caller will feed the actors: the
    checkpoint must have been trained for exactly `dcs` data centers and at least
    `hosts` host slots per data center (fewer hosts are padded).
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"no checkpoint at {path}")
    modules_dir = path / ALGORITHM_MODULES if (path / ALGORITHM_MODULES).is_dir() else path
    try:
        multi = MultiRLModule.from_checkpoint(modules_dir)
    except Exception as e:  # a foreign or damaged folder: any failure means "not loadable"
        raise CheckpointError(
            f"{path} is not a readable RLlib module checkpoint: {type(e).__name__}: {e}"
        ) from e
    meta = read_meta(path)
    agents = tuple(meta.get("agents") or sorted(multi.keys()))
    if set(agents) != set(multi.keys()):
        raise CheckpointError(
            f"{path}: placement.json names agents {agents}, the checkpoint holds {sorted(multi.keys())}"
        )
    layout = _layout_of(multi, agents, path)
    check_fits(layout, path, dcs=dcs, hosts=hosts)
    for m in multi.values():
        if isinstance(m, torch.nn.Module):
            m.eval()
    return ActorPolicy(modules={a: multi[a] for a in agents}, agents=agents, layout=layout, meta=meta)


def _layout_of(multi: MultiRLModule, agents: tuple[str, ...], path: Path) -> Layout:
    """The env layout the actors were built for, from their spaces (hosts solved from the obs size)."""
    obs_sizes = {int(multi[a].observation_space.shape[0]) for a in agents}
    act_sizes = {int(multi[a].action_space.shape[0]) for a in agents}
    if len(obs_sizes) != 1 or len(act_sizes) != 1:
        raise CheckpointError(f"{path}: the agents' spaces differ; not a placement checkpoint")
    layout = layout_for(len(agents), obs_sizes.pop(), act_sizes.pop())
    if layout is None:
        raise CheckpointError(
            f"{path}: observation/action sizes match no placement layout for {len(agents)} data centers"
        )
    return layout


def env_config_of(policy: ActorPolicy) -> PlacementEnvConfig | None:
    """The env config stored with the actors, if the checkpoint has one."""
    return env_config_in(policy.meta)
