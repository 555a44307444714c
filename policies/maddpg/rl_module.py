"""`MADDPGRLModule`: one agent's deterministic actor and its centralised critic, framework-neutral.

Lowe et al., "Multi-Agent Actor-Critic for Mixed Cooperative-Competitive
Environments" (NeurIPS 2017): agent i acts with a deterministic policy mu_i(o_i) on
its own observation; its critic Q_i(x, a_1, ..., a_N) sees every agent's observation
(x = o_1..o_N) and action. Only the actor runs on env runners (inference-only); the
critic and both target networks live on the learner.

The module's `model_config` carries, besides its network sizes, the joint sizes the
critic needs (`joint_obs_dim`, `joint_action_dim`) and the agents' order
(`maddpg_agents`): `MADDPGConfig.get_multi_rl_module_spec` fills them in from the
spaces of all agents.
"""

from __future__ import annotations

import abc
from typing import Any

from ray.rllib.core.learner.utils import make_target_network
from ray.rllib.core.rl_module.apis import InferenceOnlyAPI, TargetNetworkAPI
from ray.rllib.core.rl_module.rl_module import RLModule
from ray.rllib.utils.annotations import override
from ray.rllib.utils.typing import NetworkType

from fabric.errors import ConfigError

ACTIONS_PI = "actions_pi"  # mu_i(o_i), differentiable: the actor's loss goes through it
ACTIONS_PI_PRE = (
    "actions_pi_pre"  # mu_i's pre-activations minus the prior's (mu_i = tanh of them), for the L2
)
ACTIONS_NEXT_TARGET = "actions_next_target"  # mu'_i(o'_i): the target actor's action at the next step
MODEL_DEFAULTS = {
    "actor_hiddens": [64, 64],
    "critic_hiddens": [128, 128],
    # MATD3 (Ackermann et al. 2019, arXiv:1910.01465): TD3's fixes (Fujimoto et al. 2018) in MADDPG.
    "twin_q": False,  # a second critic; targets use the smaller of the two target critics
    "target_noise": 0.0,  # std of the noise on the target actors' actions (target policy smoothing)
    "target_noise_clip": 0.5,
    "exploration_noise_initial": 0.3,  # std of the Gaussian added to actions while learning
    "exploration_noise_final": 0.05,
    "exploration_noise_steps": 20_000,  # env steps over which the std anneals linearly
    # Each action entry is replaced by a uniform draw with this probability while learning, so the
    # buffer keeps covering the whole action box: where the env is flat in an entry (a switch, a
    # threshold above every load), a critic that never saw the far side extrapolates at random,
    # and the actor follows it there.
    "exploration_random_fraction": 0.0,
    # The output layers of actor and critic start uniform in +-this (DDPG, Lillicrap et al. 2016,
    # sec. 7): the first actions are near zero, and in the placement env the zero action is a
    # sensible policy, where a default-initialised actor acts noticeably at random. 0: torch's init.
    "final_layer_init": 3e-3,
    # A prior action (one value in [-1, 1] per action entry; None: zeros): the actor starts there
    # (its output bias) and the learner's L2 term pulls towards it rather than towards zero, so
    # the actor moves away from it only where the critics insist.
    "action_prior": None,
}
PRIOR_ABS_MAX = 0.9  # a prior is clipped here: tanh never reaches +-1, and atanh(0.9) = 1.47 stays trainable
REQUIRED_JOINT_KEYS = ("joint_obs_dim", "joint_action_dim", "maddpg_agents")


class MADDPGRLModule(RLModule, InferenceOnlyAPI, TargetNetworkAPI, abc.ABC):
    """Actor `pi`, critic `qf`, and their targets `target_pi` and `target_qf`."""

    @override(RLModule)
    def setup(self) -> None:
        config = {**MODEL_DEFAULTS, **(self.model_config or {})}
        self.actor_hiddens = list(config["actor_hiddens"])
        self.critic_hiddens = list(config["critic_hiddens"])
        self.noise_initial = float(config["exploration_noise_initial"])
        self.noise_final = float(config["exploration_noise_final"])
        self.noise_steps = int(config["exploration_noise_steps"])
        self.random_fraction = float(config["exploration_random_fraction"])
        self.twin_q = bool(config["twin_q"])
        self.target_noise = float(config["target_noise"])
        self.target_noise_clip = float(config["target_noise_clip"])
        self.final_layer_init = float(config["final_layer_init"])
        prior = config["action_prior"]
        self.action_prior = [0.0] * int(self.action_space.shape[0]) if prior is None else list(prior)
        if len(self.action_prior) != int(self.action_space.shape[0]):
            raise ConfigError(
                f"action_prior has {len(self.action_prior)} values; "
                f"the action has {self.action_space.shape[0]}"
            )
        self.obs_dim = int(self.observation_space.shape[0])
        self.action_dim = int(self.action_space.shape[0])
        self.pi = self.build_actor()
        if not self.inference_only:
            missing = [k for k in REQUIRED_JOINT_KEYS if k not in config]
            if missing:
                raise ConfigError(
                    f"a learner-side MADDPG module needs {missing} in its model_config; build it "
                    "through MADDPGConfig, which fills them in from all agents' spaces"
                )
            self.agents = list(config["maddpg_agents"])
            self.joint_obs_dim = int(config["joint_obs_dim"])
            self.joint_action_dim = int(config["joint_action_dim"])
            self.qf = self.build_critic()
            if self.twin_q:
                self.qf_twin = self.build_critic()

    def exploration_noise(self, t: int) -> float:
        """Std of the exploration noise after `t` env steps (linear anneal, then flat)."""
        frac = min(max(t, 0) / max(self.noise_steps, 1), 1.0)
        return self.noise_initial + frac * (self.noise_final - self.noise_initial)

    @abc.abstractmethod
    def build_actor(self) -> NetworkType:
        """mu_i: observation -> action in [-1, 1]."""

    @abc.abstractmethod
    def build_critic(self) -> NetworkType:
        """Q_i: (all observations, all actions) -> scalar."""

    @abc.abstractmethod
    def compute_q(self, joint_obs: Any, joint_actions: Any) -> Any:
        """Q_i(x, a_1..a_N) for a batch (critic)."""

    @abc.abstractmethod
    def compute_q_twin(self, joint_obs: Any, joint_actions: Any) -> Any:
        """The twin critic's Q_i (only with twin_q)."""

    @abc.abstractmethod
    def compute_q_target(self, joint_obs: Any, joint_actions: Any) -> Any:
        """Q'_i(x, a_1..a_N) for a batch (target critic; with twin_q the smaller of the two)."""

    @override(TargetNetworkAPI)
    def make_target_networks(self) -> None:
        self.target_pi = make_target_network(self.pi)
        self.target_qf = make_target_network(self.qf)
        if self.twin_q:
            self.target_qf_twin = make_target_network(self.qf_twin)

    @override(TargetNetworkAPI)
    def get_target_network_pairs(self) -> list[tuple[NetworkType, NetworkType]]:
        pairs = [(self.pi, self.target_pi), (self.qf, self.target_qf)]
        return pairs + ([(self.qf_twin, self.target_qf_twin)] if self.twin_q else [])

    @override(InferenceOnlyAPI)
    def get_non_inference_attributes(self) -> list[str]:
        return ["qf", "target_pi", "target_qf"] + (["qf_twin", "target_qf_twin"] if self.twin_q else [])

    @override(RLModule)
    def get_initial_state(self) -> dict:
        return {}
