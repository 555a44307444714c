"""`MADDPGConfig`: the settings of MADDPG on RLlib's new API stack.

    config = (MADDPGConfig()
              .environment(PlacementEnv, env_config=env_config.to_dict())
              .multi_agent(policies=agents, policy_mapping_fn=same_id)
              .training(actor_lr=1e-3, critic_lr=1e-3, tau=0.01, train_batch_size_per_learner=256))
    algo = config.build_algo()

One RLModule per agent (its module ID is the agent ID); every agent must act at
every step, with Box observations and Box actions in [-1, 1].
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils.annotations import override

from fabric.errors import ConfigError
from policies.maddpg.replay import CAPACITY_MAX
from policies.maddpg.rl_module import MODEL_DEFAULTS

UPDATES_PER_ITERATION_MAX = 10_000
HIDDEN_UNITS_MAX = 4096


def _same_id(agent_id: str, *args: Any, **kwargs: Any) -> str:
    """Policy mapping for MADDPG: each agent trains the module of its own name."""
    return agent_id


class MADDPGConfig(AlgorithmConfig):
    """Defines an MADDPG algorithm (Lowe et al., NeurIPS 2017) for RLlib's new API stack."""

    def __init__(self, algo_class: type | None = None) -> None:
        from policies.maddpg.algorithm import MADDPG

        super().__init__(algo_class=algo_class or MADDPG)
        # .training()
        self.actor_lr = 1e-3  # the paper's Adam learning rate (Lowe et al. 2017, appendix)
        self.critic_lr = 1e-3
        self.lr = None  # MADDPG uses actor_lr and critic_lr
        self.tau = 0.01  # the paper's Polyak coefficient
        self.gamma = 0.95  # the paper's discount
        self.actor_action_l2 = 1e-3  # the reference code's p_reg coefficient (on the pre-activations)
        self.replay_capacity = 1_000_000  # the paper's buffer size
        self.train_batch_size_per_learner = 1024  # the paper's batch size
        self.num_steps_sampled_before_learning_starts = 1_000
        self.random_steps_before_learning = 1_000  # uniform random actions first (TD3's start_timesteps)
        self.updates_per_iteration = 1
        self.policy_delay = 1  # actor updates every this many critic updates (TD3 uses 2)
        self.critic_huber_delta = 0.0  # 0: the paper's squared TD error
        self.actor_warmup_updates = 0  # critic-only updates before the actors start to move
        self.twin_q = bool(MODEL_DEFAULTS["twin_q"])
        self.target_noise = float(MODEL_DEFAULTS["target_noise"])
        self.target_noise_clip = float(MODEL_DEFAULTS["target_noise_clip"])
        self.actor_hiddens = list(MODEL_DEFAULTS["actor_hiddens"])
        self.critic_hiddens = list(MODEL_DEFAULTS["critic_hiddens"])
        self.exploration_noise_initial = float(MODEL_DEFAULTS["exploration_noise_initial"])
        self.exploration_noise_final = float(MODEL_DEFAULTS["exploration_noise_final"])
        self.exploration_noise_steps = int(MODEL_DEFAULTS["exploration_noise_steps"])
        self.exploration_random_fraction = float(MODEL_DEFAULTS["exploration_random_fraction"])
        self.final_layer_init = float(MODEL_DEFAULTS["final_layer_init"])
        self.action_prior = MODEL_DEFAULTS["action_prior"]
        # .env_runners()
        self.rollout_fragment_length = 1
        self.batch_mode = "truncate_episodes"
        # .reporting(): one training_step per train() call keeps iterations countable and cheap.
        self.min_time_s_per_iteration = None
        self.min_sample_timesteps_per_iteration = 0
        self.min_train_timesteps_per_iteration = 0

    @override(AlgorithmConfig)
    def training(
        self,
        *,
        actor_lr: float = NotProvided,
        critic_lr: float = NotProvided,
        tau: float = NotProvided,
        actor_action_l2: float = NotProvided,
        replay_capacity: int = NotProvided,
        num_steps_sampled_before_learning_starts: int = NotProvided,
        random_steps_before_learning: int = NotProvided,
        updates_per_iteration: int = NotProvided,
        actor_hiddens: list[int] = NotProvided,
        critic_hiddens: list[int] = NotProvided,
        exploration_noise_initial: float = NotProvided,
        exploration_noise_final: float = NotProvided,
        exploration_noise_steps: int = NotProvided,
        exploration_random_fraction: float = NotProvided,
        twin_q: bool = NotProvided,
        target_noise: float = NotProvided,
        target_noise_clip: float = NotProvided,
        policy_delay: int = NotProvided,
        critic_huber_delta: float = NotProvided,
        actor_warmup_updates: int = NotProvided,
        final_layer_init: float = NotProvided,
        action_prior: list[float] | None = NotProvided,
        **kwargs: Any,
    ) -> MADDPGConfig:
        """Sets MADDPG's training settings (keyword-only); returns self.

        Args:
            actor_lr: Adam learning rate of each actor.
            critic_lr: Adam learning rate of each critic.
            tau: Polyak coefficient of the target networks, updated after every gradient step.
            actor_action_l2: weight of the L2 pull on the actor's pre-activations (keeps tanh unsaturated).
            replay_capacity: joint transitions the replay buffer holds (FIFO).
            num_steps_sampled_before_learning_starts: env steps sampled before the first update.
            random_steps_before_learning: env steps acted uniformly at random before the actors take over.
            updates_per_iteration: gradient updates per training_step (each on a fresh replay batch).
            actor_hiddens: hidden layer sizes of each actor.
            critic_hiddens: hidden layer sizes of each critic.
            exploration_noise_initial: std of the Gaussian action noise at the start.
            exploration_noise_final: its std after `exploration_noise_steps` env steps.
            exploration_noise_steps: env steps of the linear anneal.
            exploration_random_fraction: probability that an action entry is drawn uniformly instead.
            twin_q: a second critic per agent; targets use the smaller target critic (MATD3).
            target_noise: std of the clipped noise on target actions (TD3's target policy smoothing; 0: off).
            target_noise_clip: bound of that noise.
            policy_delay: critic updates per actor update (1: every step, as MADDPG; TD3 uses 2).
            critic_huber_delta: > 0: the critics' loss is Huber with this delta (squared below it,
                linear above, as DQN's), so rare large costs do not dominate their fit; 0: squared.
            actor_warmup_updates: updates that train only the critics, before the actors start.
            final_layer_init: output layers start uniform in +-this (DDPG's init; 0: torch's default).
            action_prior: an action (values in [-1, 1]) the actors start at and are pulled towards
                (weight actor_action_l2); None: zeros.
            kwargs: passed to `AlgorithmConfig.training` (gamma, train_batch_size_per_learner, grad_clip...).
        """
        super().training(**kwargs)
        settings = {
            "actor_lr": actor_lr,
            "critic_lr": critic_lr,
            "tau": tau,
            "actor_action_l2": actor_action_l2,
            "replay_capacity": replay_capacity,
            "num_steps_sampled_before_learning_starts": num_steps_sampled_before_learning_starts,
            "random_steps_before_learning": random_steps_before_learning,
            "updates_per_iteration": updates_per_iteration,
            "actor_hiddens": actor_hiddens,
            "critic_hiddens": critic_hiddens,
            "exploration_noise_initial": exploration_noise_initial,
            "exploration_noise_final": exploration_noise_final,
            "exploration_noise_steps": exploration_noise_steps,
            "exploration_random_fraction": exploration_random_fraction,
            "twin_q": twin_q,
            "target_noise": target_noise,
            "target_noise_clip": target_noise_clip,
            "policy_delay": policy_delay,
            "critic_huber_delta": critic_huber_delta,
            "actor_warmup_updates": actor_warmup_updates,
            "final_layer_init": final_layer_init,
            "action_prior": action_prior,
        }
        for name, value in settings.items():
            if value is NotProvided:
                continue
            if name.endswith("hiddens"):
                value = list(value)
            elif name == "action_prior" and value is not None:
                value = [float(v) for v in value]
            setattr(self, name, value)
        return self

    @override(AlgorithmConfig)
    def validate(self) -> None:
        """Checks MADDPG's settings; each error says which value to change."""
        super().validate()
        checks = [
            ("actor_lr", 0.0 < self.actor_lr <= 1.0, "a learning rate in (0, 1], e.g. 1e-3"),
            ("critic_lr", 0.0 < self.critic_lr <= 1.0, "a learning rate in (0, 1], e.g. 1e-3"),
            ("tau", 0.0 < self.tau <= 1.0, "a Polyak coefficient in (0, 1], e.g. 0.01"),
            ("gamma", 0.0 <= self.gamma < 1.0, "a discount in [0, 1), e.g. 0.95"),
            ("actor_action_l2", 0.0 <= self.actor_action_l2 <= 1.0, "a weight in [0, 1], e.g. 1e-3"),
            ("replay_capacity", 1 <= self.replay_capacity <= CAPACITY_MAX, f"an int in [1, {CAPACITY_MAX}]"),
            (
                "train_batch_size_per_learner",
                1 <= self.train_batch_size_per_learner <= self.replay_capacity,
                "an int in [1, replay_capacity]",
            ),
            (
                "num_steps_sampled_before_learning_starts",
                self.num_steps_sampled_before_learning_starts >= 1,
                "at least 1 (the buffer must hold something to sample)",
            ),
            ("random_steps_before_learning", self.random_steps_before_learning >= 0, "an int >= 0"),
            (
                "updates_per_iteration",
                1 <= self.updates_per_iteration <= UPDATES_PER_ITERATION_MAX,
                f"an int in [1, {UPDATES_PER_ITERATION_MAX}]",
            ),
            ("actor_hiddens", _sizes_ok(self.actor_hiddens), f"1-4 layer sizes in [1, {HIDDEN_UNITS_MAX}]"),
            ("critic_hiddens", _sizes_ok(self.critic_hiddens), f"1-4 layer sizes in [1, {HIDDEN_UNITS_MAX}]"),
            ("exploration_noise_initial", 0.0 <= self.exploration_noise_initial <= 2.0, "a std in [0, 2]"),
            ("exploration_noise_final", 0.0 <= self.exploration_noise_final <= 2.0, "a std in [0, 2]"),
            ("exploration_noise_steps", self.exploration_noise_steps >= 1, "an int >= 1"),
            (
                "exploration_random_fraction",
                0.0 <= self.exploration_random_fraction <= 1.0,
                "a probability in [0, 1], e.g. 0.1",
            ),
            ("target_noise", 0.0 <= self.target_noise <= 1.0, "a std in [0, 1], e.g. 0.2"),
            ("target_noise_clip", 0.0 <= self.target_noise_clip <= 1.0, "a bound in [0, 1], e.g. 0.5"),
            ("policy_delay", 1 <= self.policy_delay <= 100, "an int in [1, 100], e.g. 2"),
            ("critic_huber_delta", 0.0 <= self.critic_huber_delta <= 1e3, "0 (squared) or a delta, e.g. 1"),
            ("actor_warmup_updates", self.actor_warmup_updates >= 0, "an int >= 0"),
            ("final_layer_init", 0.0 <= self.final_layer_init <= 1.0, "a bound in [0, 1], e.g. 3e-3"),
            (
                "action_prior",
                self.action_prior is None or all(-1.0 <= v <= 1.0 for v in self.action_prior),
                "None or one value in [-1, 1] per action entry",
            ),
            (
                "num_learners",
                self.num_learners <= 1,
                "0 or 1: the centralised critics need the whole joint batch on one learner",
            ),
            ("lr", self.lr is None, "None: MADDPG uses actor_lr and critic_lr"),
            (
                "enable_rl_module_and_learner",
                self.enable_rl_module_and_learner,
                "True: MADDPG runs on the new API stack only",
            ),
        ]
        for name, ok, fix in checks:
            if not ok:
                raise ConfigError(f"MADDPG: {name}={getattr(self, name)!r} is invalid; set it to {fix}")

    @override(AlgorithmConfig)
    def get_default_rl_module_spec(self) -> RLModuleSpec:
        from policies.maddpg.torch_rl_module import MADDPGTorchRLModule

        if self.framework_str != "torch":
            raise ConfigError(
                f"MADDPG is implemented for torch; call .framework('torch'), not {self.framework_str}"
            )
        return RLModuleSpec(module_class=MADDPGTorchRLModule)

    @override(AlgorithmConfig)
    def get_default_learner_class(self) -> type:
        from policies.maddpg.torch_learner import MADDPGTorchLearner

        return MADDPGTorchLearner

    @override(AlgorithmConfig)
    def get_multi_rl_module_spec(self, **kwargs: Any) -> MultiRLModuleSpec:
        """The per-agent specs, each told the joint sizes and agent order its centralised critic needs."""
        spec = super().get_multi_rl_module_spec(**kwargs)
        specs = spec.rl_module_specs
        agents = sorted(specs)  # a fixed order in every process: the critics' input layout depends on it
        for agent, s in specs.items():
            for what, space in (("observation", s.observation_space), ("action", s.action_space)):
                if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
                    raise ConfigError(f"MADDPG needs flat Box {what} spaces; agent {agent} has {space}")
        joint = {
            "maddpg_agents": agents,
            "joint_obs_dim": sum(int(s.observation_space.shape[0]) for s in specs.values()),
            "joint_action_dim": sum(int(s.action_space.shape[0]) for s in specs.values()),
        }
        for s in specs.values():
            s.model_config = {**(s.model_config or {}), **joint}
        return spec

    @property
    @override(AlgorithmConfig)
    def _model_config_auto_includes(self) -> dict[str, Any]:
        return super()._model_config_auto_includes | {
            "actor_hiddens": self.actor_hiddens,
            "critic_hiddens": self.critic_hiddens,
            "exploration_noise_initial": self.exploration_noise_initial,
            "exploration_noise_final": self.exploration_noise_final,
            "exploration_noise_steps": self.exploration_noise_steps,
            "exploration_random_fraction": self.exploration_random_fraction,
            "twin_q": self.twin_q,
            "target_noise": self.target_noise,
            "target_noise_clip": self.target_noise_clip,
            "final_layer_init": self.final_layer_init,
            "action_prior": self.action_prior,
        }

    def multi_agent_for(self, agents: list[str]) -> MADDPGConfig:
        """One module per agent, named after it (MADDPG's only mapping)."""
        return self.multi_agent(policies=list(agents), policy_mapping_fn=_same_id)


def _sizes_ok(sizes: list[int]) -> bool:
    return 1 <= len(sizes) <= 4 and all(1 <= int(n) <= HIDDEN_UNITS_MAX for n in sizes)
