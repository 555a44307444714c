"""`MADDPGTorchRLModule`: the torch networks of `MADDPGRLModule`."""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis import TargetNetworkAPI
from ray.rllib.core.rl_module.rl_module import RLModule
from ray.rllib.core.rl_module.torch.torch_rl_module import TorchRLModule
from ray.rllib.utils.annotations import override
from torch import nn

from policies.maddpg.rl_module import (
    ACTIONS_NEXT_TARGET,
    ACTIONS_PI,
    ACTIONS_PI_PRE,
    PRIOR_ABS_MAX,
    MADDPGRLModule,
)


def mlp(sizes: list[int], out_activation: nn.Module | None) -> nn.Sequential:
    """Linear layers with ReLU between them and an optional output activation."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    if out_activation is not None:
        layers.append(out_activation)
    return nn.Sequential(*layers)


class MADDPGTorchRLModule(TorchRLModule, MADDPGRLModule):
    """Deterministic actor (tanh of an MLP); critic over all agents' concatenated observations and actions."""

    framework: str = "torch"

    @override(MADDPGRLModule)
    def build_actor(self) -> nn.Module:
        # Pre-activations out; tanh is applied in the forward passes, so the learner can
        # regularise the pre-activations (a penalty on tanh's output vanishes once it saturates).
        actor = self._small_output(mlp([self.obs_dim, *self.actor_hiddens, self.action_dim], None))
        # The prior's pre-activation: the actor's output bias starts there (its weights are small).
        prior = torch.as_tensor(self.action_prior, dtype=torch.float32).clamp(-PRIOR_ABS_MAX, PRIOR_ABS_MAX)
        self.prior_pre = torch.atanh(prior)
        if any(self.action_prior):
            with torch.no_grad():
                actor[-1].bias.copy_(self.prior_pre)
        return actor

    @override(MADDPGRLModule)
    def build_critic(self) -> nn.Module:
        return self._small_output(
            mlp([self.joint_obs_dim + self.joint_action_dim, *self.critic_hiddens, 1], None)
        )

    def _small_output(self, net: nn.Sequential) -> nn.Sequential:
        """Output layer uniform in +-final_layer_init (DDPG's initialisation), if set."""
        if self.final_layer_init > 0.0:
            last = net[-1]
            assert isinstance(last, nn.Linear)
            nn.init.uniform_(last.weight, -self.final_layer_init, self.final_layer_init)
            nn.init.uniform_(last.bias, -self.final_layer_init, self.final_layer_init)
        return net

    @override(RLModule)
    def _forward_inference(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        with torch.no_grad():
            return {Columns.ACTIONS: torch.tanh(self.pi(batch[Columns.OBS]))}

    @override(RLModule)
    def _forward_exploration(self, batch: dict[str, Any], t: int = 0, **kwargs: Any) -> dict[str, Any]:
        # Gaussian noise on the deterministic action, as DDPG/MADDPG's continuous variant
        # (Lillicrap et al. 2016 used OU noise; Fujimoto et al. 2018 showed Gaussian does as well).
        with torch.no_grad():
            mu = torch.tanh(self.pi(batch[Columns.OBS]))
            noise = torch.randn_like(mu) * self.exploration_noise(t)
            actions = torch.clamp(mu + noise, -1.0, 1.0)
            if self.random_fraction > 0.0:
                uniform = torch.rand_like(actions) * 2.0 - 1.0
                actions = torch.where(torch.rand_like(actions) < self.random_fraction, uniform, actions)
            return {Columns.ACTIONS: actions}

    @override(RLModule)
    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        with torch.no_grad():
            next_target = torch.tanh(self.target_pi(batch[Columns.NEXT_OBS]))
            if self.target_noise > 0.0:
                # Target policy smoothing (Fujimoto et al. 2018, eq. 15): clipped noise on a'.
                noise = torch.clamp(
                    torch.randn_like(next_target) * self.target_noise,
                    -self.target_noise_clip,
                    self.target_noise_clip,
                )
                next_target = torch.clamp(next_target + noise, -1.0, 1.0)
        pre = self.pi(batch[Columns.OBS])
        return {
            ACTIONS_PI: torch.tanh(pre),
            ACTIONS_PI_PRE: pre - self.prior_pre.to(pre.device),
            ACTIONS_NEXT_TARGET: next_target,
        }

    @override(TargetNetworkAPI)
    def forward_target(self, batch: dict[str, Any]) -> dict[str, Any]:
        with torch.no_grad():
            return {Columns.ACTIONS: torch.tanh(self.target_pi(batch[Columns.OBS]))}

    @override(MADDPGRLModule)
    def compute_q(self, joint_obs: torch.Tensor, joint_actions: torch.Tensor) -> torch.Tensor:
        return self.qf(torch.cat([joint_obs, joint_actions], dim=-1)).squeeze(-1)

    @override(MADDPGRLModule)
    def compute_q_twin(self, joint_obs: torch.Tensor, joint_actions: torch.Tensor) -> torch.Tensor:
        return self.qf_twin(torch.cat([joint_obs, joint_actions], dim=-1)).squeeze(-1)

    @override(MADDPGRLModule)
    def compute_q_target(self, joint_obs: torch.Tensor, joint_actions: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            xa = torch.cat([joint_obs, joint_actions], dim=-1)
            q = self.target_qf(xa).squeeze(-1)
            # Clipped double Q (Fujimoto et al. 2018, eq. 10): the smaller target curbs overestimation.
            return torch.minimum(q, self.target_qf_twin(xa).squeeze(-1)) if self.twin_q else q
