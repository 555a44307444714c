"""`JointReplayBuffer`: every agent's transition of one env step in one row, so critics see them together.

MADDPG's critics condition on all agents' observations and actions at the same
time step (Lowe et al., 2017, eq. 5), so the buffer stores joint transitions: row
`i` holds every agent's (o, a, r, o', done) of one env step. A sampled batch is a
`MultiAgentBatch` whose per-module batches are row-aligned (row k of every module
is the same env step), and each carries `TRANSITION_ID` so the learner can check it.
Capacity is a hard bound: the oldest rows are overwritten first (FIFO ring).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ray.rllib.core.columns import Columns
from ray.rllib.env.multi_agent_episode import MultiAgentEpisode
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

from fabric.errors import ConfigError

TRANSITION_ID = "transition_id"  # the env step a row came from, the same in every module's batch
CAPACITY_MAX = 10_000_000


class AlignmentError(AssertionError):
    """Agents' transitions of one episode chunk do not line up step for step (a sampling bug)."""


class JointReplayBuffer:
    """A FIFO ring of joint transitions, sampled uniformly with its own seeded RNG."""

    def __init__(
        self,
        *,
        agent_ids: list[str],
        obs_dims: dict[str, int],
        action_dims: dict[str, int],
        capacity: int,
        seed: int,
    ) -> None:
        if not 1 <= capacity <= CAPACITY_MAX:
            raise ConfigError(f"replay capacity must be in [1, {CAPACITY_MAX}], not {capacity}")
        self.agent_ids = list(agent_ids)
        self.capacity = capacity
        self._obs = {a: np.zeros((capacity, obs_dims[a]), np.float32) for a in agent_ids}
        self._next_obs = {a: np.zeros((capacity, obs_dims[a]), np.float32) for a in agent_ids}
        self._actions = {a: np.zeros((capacity, action_dims[a]), np.float32) for a in agent_ids}
        self._rewards = {a: np.zeros(capacity, np.float32) for a in agent_ids}
        self._terminateds = np.zeros(capacity, bool)
        self._ids = np.zeros(capacity, np.int64)
        self._size = 0
        self._next = 0
        self._added = 0  # joint transitions ever added: the next TRANSITION_ID
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self._size

    @property
    def added(self) -> int:
        """Joint transitions added over the buffer's life."""
        return self._added

    def add_episodes(self, episodes: list[MultiAgentEpisode]) -> int:
        """Store every joint step of the episode chunks; returns how many."""
        stored = 0
        for episode in episodes:
            columns = joint_columns(episode, self.agent_ids)
            stored += self._put(columns)
        return stored

    def _put(self, columns: dict[str, Any]) -> int:
        n = len(columns["terminateds"])
        keep = slice(max(0, n - self.capacity), n)  # a chunk longer than the ring keeps its newest rows
        rows = (self._next + np.arange(keep.stop - keep.start)) % self.capacity
        for a in self.agent_ids:
            self._obs[a][rows], self._next_obs[a][rows] = (
                columns["obs"][a][keep],
                columns["next_obs"][a][keep],
            )
            self._actions[a][rows], self._rewards[a][rows] = (
                columns["actions"][a][keep],
                columns["rewards"][a][keep],
            )
        self._terminateds[rows] = columns["terminateds"][keep]
        self._ids[rows] = self._added + np.arange(keep.start, keep.stop)
        self._added += n
        self._next = (self._next + rows.size) % self.capacity
        self._size = min(self._size + rows.size, self.capacity)
        return n

    def sample(self, batch_size: int) -> MultiAgentBatch:
        """`batch_size` joint transitions drawn uniformly (with replacement), one aligned batch per agent."""
        if self._size == 0:
            raise ConfigError("the replay buffer is empty; sample after adding transitions")
        rows = self._rng.integers(self._size, size=batch_size)
        batches = {
            a: SampleBatch(
                {
                    Columns.OBS: self._obs[a][rows],
                    Columns.ACTIONS: self._actions[a][rows],
                    Columns.REWARDS: self._rewards[a][rows],
                    Columns.NEXT_OBS: self._next_obs[a][rows],
                    Columns.TERMINATEDS: self._terminateds[rows],
                    TRANSITION_ID: self._ids[rows],
                }
            )
            for a in self.agent_ids
        }
        return MultiAgentBatch(batches, env_steps=batch_size)

    def get_state(self) -> dict[str, Any]:
        """Counters and RNG (the transitions themselves are not checkpointed: they are cheap to resample)."""
        return {"added": self._added, "rng": self._rng.bit_generator.state}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore `get_state()` output."""
        self._added = int(state["added"])
        self._rng.bit_generator.state = state["rng"]


def joint_columns(episode: MultiAgentEpisode, agent_ids: list[str]) -> dict[str, Any]:
    """An episode chunk as aligned per-agent arrays: obs, actions, rewards, next_obs (+ shared terminateds).

    Every agent must act at every env step (the placement env guarantees it); the
    env's per-step `step` info must agree across agents, else AlignmentError.
    """
    steps = len(episode)
    out: dict[str, Any] = {"obs": {}, "actions": {}, "rewards": {}, "next_obs": {}}
    stamps = []
    for a in agent_ids:
        sa = episode.agent_episodes.get(a)
        if sa is None or len(sa) != steps:
            raise AlignmentError(
                f"agent {a} has {0 if sa is None else len(sa)} steps in a chunk of {steps}: "
                "MADDPG needs every agent to act at every step"
            )
        obs = np.asarray(sa.get_observations(), np.float32)
        out["obs"][a], out["next_obs"][a] = obs[:-1], obs[1:]
        out["actions"][a] = np.asarray(sa.get_actions(), np.float32)
        out["rewards"][a] = np.asarray(sa.get_rewards(), np.float32)
        infos = sa.get_infos()[1:]
        stamps.append([i.get("step", -1) if isinstance(i, dict) else -1 for i in infos])
    if any(s != stamps[0] for s in stamps):
        raise AlignmentError(f"agents' steps disagree within one chunk: {stamps}")
    terminated = bool(episode.is_terminated)
    out["terminateds"] = np.zeros(steps, bool)
    if steps and terminated:
        out["terminateds"][-1] = True
    return out
