"""`MADDPG`: the Algorithm whose `training_step` samples, stores, replays, updates and syncs weights."""

from __future__ import annotations

from typing import Any

from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.execution.rollout_ops import synchronous_parallel_sample
from ray.rllib.utils.annotations import override
from ray.rllib.utils.metrics import (
    ENV_RUNNER_RESULTS,
    ENV_RUNNER_SAMPLING_TIMER,
    LEARNER_RESULTS,
    LEARNER_UPDATE_TIMER,
    NUM_AGENT_STEPS_SAMPLED_LIFETIME,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    REPLAY_BUFFER_ADD_DATA_TIMER,
    REPLAY_BUFFER_RESULTS,
    REPLAY_BUFFER_SAMPLE_TIMER,
    SYNCH_WORKER_WEIGHTS_TIMER,
    TIMERS,
)

from policies.maddpg.config import MADDPGConfig
from policies.maddpg.replay import JointReplayBuffer


class MADDPG(Algorithm):
    """Multi-agent DDPG with centralised critics (Lowe et al. 2017) on RLlib's new API stack."""

    @classmethod
    @override(Algorithm)
    def get_default_config(cls) -> MADDPGConfig:
        return MADDPGConfig()

    @override(Algorithm)
    def setup(self, config: Any) -> None:
        super().setup(config)
        specs = self.config.get_multi_rl_module_spec(spaces=self.spaces).rl_module_specs
        self.agent_ids = sorted(specs)
        self.replay = JointReplayBuffer(
            agent_ids=self.agent_ids,
            obs_dims={a: int(s.observation_space.shape[0]) for a, s in specs.items()},
            action_dims={a: int(s.action_space.shape[0]) for a, s in specs.items()},
            capacity=self.config.replay_capacity,
            seed=self.config.seed or 0,
        )

    @override(Algorithm)
    def training_step(self) -> None:
        """Sample, store joint transitions, replay batches into the learner, sync the actors."""
        sampled = self.metrics.peek((ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), default=0)
        # 1. Sample: uniform random actions until random_steps_before_learning, then the noisy actors.
        with self.metrics.log_time((TIMERS, ENV_RUNNER_SAMPLING_TIMER)):
            episodes, env_runner_results = synchronous_parallel_sample(
                worker_set=self.env_runner_group,
                concat=True,
                sample_timeout_s=self.config.sample_timeout_s,
                random_actions=sampled < self.config.random_steps_before_learning,
                _uses_new_env_runners=True,
                _return_metrics=True,
            )
        self.metrics.aggregate(env_runner_results, key=ENV_RUNNER_RESULTS)
        # 2. Store: one row per env step, all agents together.
        with self.metrics.log_time((TIMERS, REPLAY_BUFFER_ADD_DATA_TIMER)):
            self.replay.add_episodes(episodes)
        self.metrics.log_value((REPLAY_BUFFER_RESULTS, "size"), len(self.replay), window=1)
        sampled = self.metrics.peek((ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), default=0)
        if sampled < self.config.num_steps_sampled_before_learning_starts:
            return
        timesteps = {
            NUM_ENV_STEPS_SAMPLED_LIFETIME: sampled,
            NUM_AGENT_STEPS_SAMPLED_LIFETIME: self.metrics.peek(
                (ENV_RUNNER_RESULTS, NUM_AGENT_STEPS_SAMPLED_LIFETIME), default={}
            ),
        }
        for _ in range(self.config.updates_per_iteration):
            # 3. Replay: an aligned joint batch.
            with self.metrics.log_time((TIMERS, REPLAY_BUFFER_SAMPLE_TIMER)):
                batch = self.replay.sample(self.config.train_batch_size_per_learner)
            # 4. Update critics, actors and (Polyak) targets of all agents at once.
            with self.metrics.log_time((TIMERS, LEARNER_UPDATE_TIMER)):
                learner_results = self.learner_group.update(batch=batch, timesteps=timesteps)
            self.metrics.aggregate(learner_results, key=LEARNER_RESULTS)
        # 5. Sync: the env runners' inference-only actors get the new weights.
        with self.metrics.log_time((TIMERS, SYNCH_WORKER_WEIGHTS_TIMER)):
            self.env_runner_group.sync_weights(
                from_worker_or_learner_group=self.learner_group, policies=self.agent_ids, inference_only=True
            )
