"""Trained actors on disk: export from an algorithm, load for evaluation and the placement service.

An export is an RLlib `MultiRLModule` checkpoint of the inference-only actors
(`MultiRLModule.save_to_path`: one folder per agent, weights and constructor
arguments) plus `placement.json`: the env config the actors were trained for and
how they were made. `load_actors` also accepts a full algorithm checkpoint
(`Algorithm.save_to_path`), whose modules live under `learner_group/learner/rl_module`.
Loading unpickles the modules' constructor arguments: load only checkpoints you trust.
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

from policies.env.config import PlacementEnvConfig
from policies.env.layout import Layout
from policies.errors import CheckpointError

PLACEMENT_META = "placement.json"
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
    meta = {"env_config": env_config.to_dict(), "agents": list(env_config.dcs), "provenance": provenance}
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
    meta = _read_meta(path)
    agents = tuple(meta.get("agents") or sorted(multi.keys()))
    if set(agents) != set(multi.keys()):
        raise CheckpointError(
            f"{path}: placement.json names agents {agents}, the checkpoint holds {sorted(multi.keys())}"
        )
    layout = _layout_of(multi, agents, path)
    if dcs is not None and dcs != layout.dcs:
        raise CheckpointError(f"{path} was trained for {layout.dcs} data centers, not {dcs}")
    if hosts is not None and hosts > layout.hosts:
        raise CheckpointError(
            f"{path} was trained for at most {layout.hosts} hosts per data center, not {hosts}"
        )
    for m in multi.values():
        if isinstance(m, torch.nn.Module):
            m.eval()
    return ActorPolicy(modules={a: multi[a] for a in agents}, agents=agents, layout=layout, meta=meta)


def _read_meta(path: Path) -> dict[str, Any]:
    meta_file = path / PLACEMENT_META
    if not meta_file.is_file():
        return {}
    try:
        return json.loads(meta_file.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{meta_file} is not valid JSON: {e}") from None


def _layout_of(multi: MultiRLModule, agents: tuple[str, ...], path: Path) -> Layout:
    """The env layout the actors were built for, from their spaces (hosts solved from the obs size)."""
    dcs = len(agents)
    obs_sizes = {int(multi[a].observation_space.shape[0]) for a in agents}
    act_sizes = {int(multi[a].action_space.shape[0]) for a in agents}
    if len(obs_sizes) != 1 or len(act_sizes) != 1:
        raise CheckpointError(f"{path}: the agents' spaces differ; not a placement checkpoint")
    probe = Layout(dcs=dcs, hosts=1)
    per_host_obs = probe.observation_size - Layout(dcs=dcs, hosts=0).observation_size
    hosts, rest = divmod(obs_sizes.pop() - Layout(dcs=dcs, hosts=0).observation_size, per_host_obs)
    layout = Layout(dcs=dcs, hosts=hosts)
    if rest or hosts < 1 or layout.action_size != act_sizes.pop():
        raise CheckpointError(
            f"{path}: observation/action sizes match no placement layout for {dcs} data centers"
        )
    return layout


def env_config_of(policy: ActorPolicy) -> PlacementEnvConfig | None:
    """The env config stored with the actors, if the checkpoint has one."""
    raw = policy.meta.get("env_config")
    return PlacementEnvConfig.from_dict(raw) if raw else None
