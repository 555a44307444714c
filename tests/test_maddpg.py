"""MADDPG on RLlib's new API stack: centralised critics, aligned replay, learning, checkpoints, runners.

One Ray session for the module (two CPUs and a `dc:us-east` resource, for the
pinned-runner test). The tiny env: two data centers of four hosts, 16-step windows,
batches of at most 8 VMs (see TINY).
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import ray
import torch
from ray.rllib.core.columns import Columns

from fabric.errors import ConfigError
from policies.checkpoint import load_numpy_actors
from policies.env import PlacementEnv, PlacementEnvConfig
from policies.evaluation import EvaluationPlan, evaluate, mean_ci, summarise, tiled_windows
from policies.heuristics import RandomPolicy
from policies.maddpg import MADDPG, MADDPGConfig
from policies.maddpg.export import export_actors, load_actors
from policies.maddpg.replay import TRANSITION_ID, AlignmentError, JointReplayBuffer
from policies.maddpg.torch_learner import check_aligned, joint, td_loss
from policies.traces.splits import TraceSources, load_split
from policies.training import DEFAULT_HYPER, TrainingSettings, maddpg_config, pinned_to

pytestmark = pytest.mark.ray

# The tiny env: the same PlacementEnv on the real traces, cut so that a short run has a signal.
# Batches over 8 VMs are left out: with the default cap (64) a few large batches, rejected or handed
# off whole, made the per-step cost's spread (1.6) four times its mean (0.4), and a linear fit on
# observations and actions gave the actions 0.1% of its variance (measured). What remains is mostly
# consolidation (active hosts), decided by each controller's host choice, on four hosts per data
# center so that choice matters.
TINY = {
    "dcs": ("a", "b"),
    "hosts_per_dc": 4,
    "dc_weights": (0.6, 0.4),
    "window_steps": 16,
    "shards": 96,
    "batch_vms_max": 8,
}
TINY_HYPER = {  # the training job's settings, scaled to a run of a minute
    **DEFAULT_HYPER,
    "train_batch_size_per_learner": 128,
    "num_steps_sampled_before_learning_starts": 256,
    "random_steps_before_learning": 0,
    "critic_hiddens": [128, 128],
    "actor_warmup_updates": 400,
    "exploration_noise_steps": 2000,
    # Host choice is an argmax of the action's scores, so it is decided while the actions are still
    # ~0.01. With the job's actor_lr 1e-4 and pull 0.1 the actions then kept growing and the learnt
    # choice flipped back and forth (3 of 4 seeds lost most of their gain by 150 iterations,
    # measured); a slower actor held to small actions keeps it.
    "actor_lr": 3e-5,
    "actor_action_l2": 1.0,
}
SEED = 0
TRAIN_ITERATIONS = 125  # 2,000 env steps, 880 updates (the actors move after the first 400)
MARGIN = 0.10  # the trained mean objective must be at least 10% below random's and below the start's
# Measured on the held-out episodes below (48, lower is better): random 3.24; the zero action 1.64,
# first-fit 1.63 (the best heuristic here). The actors start near zero (DDPG's small output layer), but
# their host scores, tiny as they are, still decide the argmax, with random signs: the start spreads
# VMs over the hosts. Seed 0 (this test): start 2.40 -> trained 1.64. Seeds 1-5, same code: 3.43 ->
# 2.16, 2.87 -> 1.63, 2.86 -> 1.64, 1.90 -> 1.65, 2.17 -> 1.86 (all pass both checks). With the
# critic's gradient taken out of the actors' loss (the pull towards zero alone) seeds 0 and 2 went
# to 2.57 and 3.01: the gain is learnt. It reaches first-fit's level, not beyond (policies/README.md).


@pytest.fixture(scope="module")
def ray_session():
    """A fresh local Ray for this module (never a stale cluster)."""
    ray.init(
        address="local",
        num_cpus=2,
        resources={"dc:us-east": 1.0},
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny(sources: TraceSources) -> PlacementEnvConfig:
    """The tiny env's config."""
    return PlacementEnvConfig(sources=sources, **TINY)


def tiny_config(tiny: PlacementEnvConfig, **overrides) -> MADDPGConfig:
    """MADDPG on the tiny env, in-process sampling, seeded."""
    overrides.setdefault("seed", SEED)
    settings = TrainingSettings(hyper={**TINY_HYPER, **overrides.pop("hyper", {})}, **overrides)
    return maddpg_config(tiny, settings)


def held_out(tiny: PlacementEnvConfig) -> tuple[EvaluationPlan, PlacementEnv]:
    """Held-out windows (the dev split) and seeds: the same episodes for every policy compared."""
    data = load_split(tiny.sources, "dev")
    windows = tiled_windows(data, window_steps=tiny.window_steps, warmup_steps=tiny.warmup_steps, count_max=8)
    plan = EvaluationPlan(split="dev", seeds=tuple(range(100, 106)), window_starts=windows)
    return plan, PlacementEnv(PlacementEnvConfig.from_dict({**tiny.to_dict(), "split": "dev"}))


class ActorsOf:
    """The algorithm's deterministic actors as an evaluation policy."""

    name = "maddpg"

    def __init__(self, algo, agents) -> None:
        self.actors = {a: algo.get_module(a) for a in agents}

    def act(self, obs):
        return {a: v[0].numpy() for a, v in actions_of(self.actors, obs).items()}


@pytest.fixture(scope="module")
def trained(ray_session, tiny: PlacementEnvConfig):
    """MADDPG trained briefly on the tiny env (shared by the learning and checkpoint tests), and its
    untrained start's results on the held-out episodes."""
    algo = tiny_config(tiny).build_algo()
    plan, env = held_out(tiny)
    untrained = evaluate(ActorsOf(algo, env.agents), tiny, plan, env=env)
    for _ in range(TRAIN_ITERATIONS):
        result = algo.train()
    yield algo, result, untrained
    algo.stop()


def fixed_obs(tiny: PlacementEnvConfig) -> dict[str, np.ndarray]:
    """Observations from a seeded reset of the tiny env."""
    obs, _ = PlacementEnv(tiny).reset(seed=123, options={"shard": 5})
    return obs


def actions_of(modules, obs: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Deterministic actions of each agent's module."""
    return {
        a: modules[a].forward_inference({Columns.OBS: torch.as_tensor(obs[a][None])})[Columns.ACTIONS]
        for a in obs
    }


def test_config_validation_says_how_to_fix(tiny: PlacementEnvConfig) -> None:
    for bad, match in (
        ({"tau": 0.0}, "tau=0.0 is invalid; set it to a Polyak"),
        ({"policy_delay": 0}, "policy_delay"),
        ({"critic_huber_delta": -1.0}, "critic_huber_delta"),
        ({"actor_hiddens": []}, "actor_hiddens"),
    ):
        with pytest.raises(ConfigError, match=match):
            MADDPGConfig().environment(PlacementEnv, env_config=tiny.to_dict()).training(**bad).validate()


def test_critic_loss_is_squared_or_huber() -> None:
    error = torch.tensor([0.1, -0.2, 3.0])
    assert torch.isclose(td_loss(error, 0.0), (error**2).mean())
    # Huber: squared (halved) below the delta, linear beyond it, so a rare large cost weighs less.
    assert torch.isclose(td_loss(error, 1.0), torch.tensor((0.005 + 0.02 + 2.5) / 3))


def test_the_critic_sees_every_agents_observation_and_action(trained) -> None:
    algo, _, _ = trained
    learner = algo.learner_group._learner
    batch = learner._convert_batch_type(algo.replay.sample(64)).policy_batches
    agents = learner.module["a"].unwrapped().agents
    assert agents == ["a", "b"]
    # The critic's input is every agent's observation and action, in the agents' order.
    x = joint(batch, agents, Columns.OBS)
    acts = joint(batch, agents, Columns.ACTIONS)
    assert torch.equal(x, torch.cat([batch["a"][Columns.OBS], batch["b"][Columns.OBS]], dim=-1))
    obs_dim, act_dim = batch["a"][Columns.OBS].shape[1], batch["a"][Columns.ACTIONS].shape[1]
    for critic_of in agents:
        module = learner.module[critic_of].unwrapped()
        xa = torch.cat([x, acts], dim=-1).requires_grad_(True)
        module.qf(xa).sum().backward()
        module.qf.zero_grad(set_to_none=True)  # leave the learner's networks as they were
        grad = xa.grad.abs().sum(dim=0)
        blocks = {f"obs {a}": grad[i * obs_dim : (i + 1) * obs_dim] for i, a in enumerate(agents)}
        blocks |= {
            f"action {a}": grad[2 * obs_dim + i * act_dim : 2 * obs_dim + (i + 1) * act_dim]
            for i, a in enumerate(agents)
        }
        for name, g in blocks.items():
            assert g.sum() > 0, f"{critic_of}'s critic ignores {name}"

    # And the loss uses them: changing only b's observations, or only b's actions, changes a's
    # critic loss (the critic's own output, not the actor's term that also reads them).
    def a_critic_loss(b: dict) -> float:
        changed = {**batch, "b": b}
        torch.manual_seed(0)  # the same target-smoothing noise every time
        learner.compute_losses(fwd_out=learner.module.forward_train(changed), batch=changed)
        loss = learner._temp_losses[("a", "qf")].item()
        learner._temp_losses.clear()
        return loss

    updates = learner._critic_updates
    before = a_critic_loss(batch["b"])
    assert a_critic_loss(batch["b"]) == before  # deterministic: a difference below is the input's
    assert a_critic_loss({**batch["b"], Columns.OBS: batch["b"][Columns.OBS] + 0.5}) != before
    assert a_critic_loss({**batch["b"], Columns.ACTIONS: -batch["b"][Columns.ACTIONS]}) != before
    learner._critic_updates = updates  # these were not updates


def test_replay_rows_are_joint_and_misaligned_batches_are_refused(
    ray_session, tiny: PlacementEnvConfig
) -> None:
    env = PlacementEnv(tiny)
    dims = {a: env.layout.observation_size for a in env.agents}
    buffer = JointReplayBuffer(
        agent_ids=list(env.agents),
        obs_dims=dims,
        action_dims={a: env.layout.action_size for a in env.agents},
        capacity=8,
        seed=0,
    )
    algo = tiny_config(tiny).build_algo()
    try:
        episodes = algo.env_runner.sample(num_timesteps=20, random_actions=True)
    finally:
        algo.stop()
    assert buffer.add_episodes(episodes) == 20 and len(buffer) == 8  # the ring keeps the newest 8
    batch = buffer.sample(32)
    ids = batch.policy_batches["a"][TRANSITION_ID]
    assert np.array_equal(ids, batch.policy_batches["b"][TRANSITION_ID]) and ids.min() >= 12
    torch_batch = {
        a: {TRANSITION_ID: torch.as_tensor(b[TRANSITION_ID])} for a, b in batch.policy_batches.items()
    }
    check_aligned(torch_batch, ["a", "b"])
    torch_batch["b"][TRANSITION_ID] = torch_batch["b"][TRANSITION_ID].flip(0) + 1
    with pytest.raises(AlignmentError):
        check_aligned(torch_batch, ["a", "b"])


def test_short_training_learns_beyond_its_start_and_random_actions(trained, tiny: PlacementEnvConfig) -> None:
    """After a short run the actors beat both their untrained start and random actions on held-out
    episodes, each by MARGIN and beyond the paired 95% interval (numbers: MARGIN's note)."""
    algo, result, untrained = trained
    assert result["env_runners"]["num_env_steps_sampled_lifetime"] >= TRAIN_ITERATIONS * 16
    timers = result["timers"]
    for phase in (
        "env_runner_sampling_timer",
        "replay_buffer_add_data_timer",
        "replay_buffer_sampling_timer",
        "learner_update_timer",
        "synch_weights",
    ):
        assert phase in timers, phase
    plan, env = held_out(tiny)
    learned = evaluate(ActorsOf(algo, env.agents), tiny, plan, env=env)
    random = evaluate(RandomPolicy(env.layout, tuple(env.agents), seed=0), tiny, plan, env=env)
    learned_mean = summarise(learned)["objective"]["mean"]
    numbers = {
        "trained": learned_mean,
        "start": summarise(untrained)["objective"]["mean"],
        "random": summarise(random)["objective"]["mean"],
    }
    for baseline, results in (("start", untrained), ("random", random)):
        assert learned_mean <= (1.0 - MARGIN) * numbers[baseline], (baseline, numbers)
        # Paired over the 48 episodes (each a different window or shard): better beyond the 95% interval.
        gain, ci = mean_ci([a.objective - b.objective for a, b in zip(learned, results, strict=True)])
        assert gain + ci < 0, (baseline, gain, ci, numbers)


def test_checkpoint_save_and_restore_reproduce_actions_exactly(
    trained, tiny: PlacementEnvConfig, tmp_path
) -> None:
    algo, _, _ = trained
    obs = fixed_obs(tiny)
    before = actions_of({a: algo.get_module(a) for a in obs}, obs)
    algo.save_to_path(tmp_path / "algo")
    restored = MADDPG.from_checkpoint(tmp_path / "algo")
    try:
        after = actions_of({a: restored.get_module(a) for a in obs}, obs)
        learner_state = restored.learner_group._learner.module["a"].unwrapped().state_dict()
        for key, value in algo.learner_group._learner.module["a"].unwrapped().state_dict().items():
            assert torch.equal(value, learner_state[key]), key  # critics and targets too
        updates = algo.learner_group._learner._critic_updates
        assert updates > 0 and restored.learner_group._learner._critic_updates == updates
    finally:
        restored.stop()
    for a in obs:
        assert torch.equal(before[a], after[a])
    export_actors(algo, tmp_path / "export", env_config=tiny, provenance={"test": True})
    exported = load_actors(tmp_path / "export")
    for a in obs:
        assert np.array_equal(exported.action(a, obs[a]), before[a][0].numpy())
    assert exported.meta["provenance"] == {"test": True}
    # The placement service's reader (numpy, no torch): the same actions up to float32 rounding.
    light = load_numpy_actors(tmp_path / "export")
    assert light.layout == exported.layout and light.agents == exported.agents
    for a in obs:
        np.testing.assert_allclose(light.action(a, obs[a]), before[a][0].numpy(), rtol=0, atol=1e-5)


def test_remote_env_runners_pinned_to_a_data_center(ray_session, tiny: PlacementEnvConfig) -> None:
    assert pinned_to("us-east") == {"dc:us-east": 0.001} and pinned_to(None) == {}
    settings = TrainingSettings(
        num_env_runners=1,
        hyper={
            **TINY_HYPER,
            "num_steps_sampled_before_learning_starts": 32,
            "random_steps_before_learning": 0,
        },
    )
    config = maddpg_config(tiny, settings, dc="us-east")
    assert config.custom_resources_per_env_runner == {"dc:us-east": 0.001}
    algo = config.build_algo()
    try:
        for _ in range(3):
            result = algo.train()
        assert result["env_runners"]["num_env_steps_sampled_lifetime"] >= 48
        learner_pi = algo.learner_group._learner.module["a"].unwrapped().pi.state_dict()
        remote_pi = algo.env_runner_group.foreach_env_runner(
            lambda er: er.module["a"].pi.state_dict(), remote_worker_ids=[1], local_env_runner=False
        )[0]
        for key, value in learner_pi.items():
            assert torch.equal(value, torch.as_tensor(remote_pi[key])), key  # weights synced to the runner
    finally:
        algo.stop()
