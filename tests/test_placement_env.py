"""The placement env: RLlib's env checker, seeded and policy-independent workloads, the documented reward."""

from __future__ import annotations

import numpy as np
import pytest
from ray.rllib.utils.pre_checks.env import check_multiagent_environments

from fabric.errors import ConfigError
from policies.env import COMPONENTS, PlacementEnv, PlacementEnvConfig, RewardWeights
from policies.heuristics import HeuristicPolicy, RandomPolicy
from policies.traces.splits import TraceSources

TINY = {
    "dcs": ("a", "b"),
    "hosts_per_dc": 2,
    "dc_weights": (0.6, 0.4),
    "window_steps": 8,
    "warmup_steps": 24,
    "shards": 96,
}


@pytest.fixture(scope="module")
def env(sources: TraceSources) -> PlacementEnv:
    """A tiny env: two data centers of two hosts, 8-step windows."""
    return PlacementEnv(PlacementEnvConfig(sources=sources, **TINY))


def play(env: PlacementEnv, policy, *, seed: int, window_start: int | None = None, shard: int = 0):
    """Run one episode; returns the per-step infos of the first agent and the rewards."""
    options = {"shard": shard} | ({"window_start": window_start} if window_start is not None else {})
    obs, _ = env.reset(seed=seed, options=options)
    infos, rewards, done = [], [], False
    while not done:
        obs, reward, _, truncated, info = env.step(policy.act(obs))
        for space_obs in obs.values():
            assert env.observation_spaces["a"].contains(space_obs)
        infos.append(info["a"])
        rewards.append(reward["a"])
        assert len(set(reward.values())) == 1  # the reward is shared
        done = truncated["__all__"]
    return infos, rewards


def test_env_passes_rllibs_env_checker(env: PlacementEnv) -> None:
    check_multiagent_environments(env)


def test_reward_is_minus_the_weighted_components(env: PlacementEnv) -> None:
    infos, rewards = play(env, RandomPolicy(env.layout, tuple(env.agents), seed=1), seed=3)
    w = env.config.reward
    for info, reward in zip(infos, rewards, strict=True):
        assert set(info["components"]) == set(COMPONENTS)
        assert reward == pytest.approx(-sum(getattr(w, k) * v for k, v in info["components"].items()))
    assert len(infos) == env.config.window_steps


def test_same_seed_same_episode_and_the_workload_does_not_depend_on_the_policy(env: PlacementEnv) -> None:
    random = RandomPolicy(env.layout, tuple(env.agents), seed=7)
    first, _ = play(env, random, seed=11, window_start=500)
    arrivals_random = env._workload.arrival_step.copy()
    again, _ = play(env, RandomPolicy(env.layout, tuple(env.agents), seed=7), seed=11, window_start=500)
    assert [i["components"] for i in first] == [i["components"] for i in again]
    play(env, HeuristicPolicy("best-fit", env.layout, tuple(env.agents)), seed=11, window_start=500)
    assert np.array_equal(env._workload.arrival_step, arrivals_random)


def test_observations_are_local_plus_gossip(env: PlacementEnv) -> None:
    obs, _ = env.reset(seed=5, options={"shard": 1})
    blocks = env.layout.split_observation(obs["a"])
    own = env.hosts_by_dc[0]
    assert np.allclose(blocks["hosts"][:, 0], own.memory_gb_used / own.memory_gb_max, atol=1e-6)
    peer = env.hosts_by_dc[1]
    assert blocks["peers"][0][0] == pytest.approx(
        peer.memory_gb_used.sum() / peer.memory_gb_max.sum(), abs=1e-6
    )


def test_bad_settings_and_actions_are_refused(env: PlacementEnv, sources: TraceSources) -> None:
    with pytest.raises(ConfigError, match="dc_weights"):
        PlacementEnvConfig(dcs=("a", "b"), dc_weights=(1.0,))
    with pytest.raises(ConfigError, match="hosts_per_dc"):
        PlacementEnvConfig(hosts_per_dc=0)
    with pytest.raises(ConfigError, match="reward weight"):
        RewardWeights(rejected=-1.0)
    with pytest.raises(ConfigError, match="unknown placement env settings"):
        PlacementEnvConfig.from_dict({"hosts": 3})
    env.reset(seed=0)
    with pytest.raises(ConfigError, match="no action"):
        env.step({"a": np.zeros(env.layout.action_size)})
    with pytest.raises(ConfigError, match="finite"):
        env.step({a: np.full(env.layout.action_size, np.nan) for a in env.agents})
    with pytest.raises(ConfigError, match="window_start"):
        env.reset(seed=0, options={"window_start": 10**6})


def test_config_round_trips_through_json_form(sources: TraceSources) -> None:
    config = PlacementEnvConfig(sources=sources, **TINY)
    assert PlacementEnvConfig.from_dict(config.to_dict()) == config
