"""What an agent observes and what its action vector means, slot by slot.

Observation of the controller of data center i (all local, plus the load summary
the controllers gossip to each other each step):

- hosts (hosts x 5): memory used / max, vCPUs allocated / allocatable, CPU load (busy vCPUs /
  cores, capped at 2), active (runs a VM), present (not padding); each in [0, 2];
- queue (5): VMs waiting / queue bound, their vCPUs / DC allocatable, their memory / DC memory,
  oldest wait / wait bound, share already handed off once;
- peers ((dcs - 1) x 3): each other data center's memory used, vCPUs allocated, mean CPU load;
- clock (2): sin and cos of the time of day.

Action (continuous, each in [-1, 1]); `policies.env.decode` applies it to every
request waiting at the data center, in arrival order:

- host_bias (hosts): a fixed preference per host slot;
- weights (5): weights of the host-request features: memory fill after placing, vCPU fill
  after placing, CPU load, alignment (Tetris dot product), active;
- keep (1): the keep threshold ((keep + 1) / 2) ** (1/3): requests stay local up to this
  utilisation of the DC;
- handoff (dcs - 1): score of each other DC as the target of handoffs (the highest wins);
- migrate (2): the hot threshold (CPU load 0.6 at -1, 1.0 at 0, never at +1: see
  `hot_threshold`); allow cross-DC targets if > -0.5.

An action of zeros (where a freshly initialised actor starts) is a sensible policy:
requests stay local up to 79% utilisation (then go to a less loaded DC), overflow
goes to a DC with room, hosts above 100% CPU shed load, locally or across DCs.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from policies.env.hosts import Hosts

HOST_FEATURES = ("memory_used", "vcpus_used", "cpu_load", "active", "present")
QUEUE_FEATURES = ("waiting", "waiting_vcpus", "waiting_memory", "oldest_wait", "handed_off")
PEER_FEATURES = ("memory_used", "vcpus_used", "cpu_load")
CLOCK_FEATURES = ("day_sin", "day_cos")
SCORE_FEATURES = ("memory_fill", "vcpu_fill", "cpu_load", "alignment", "active")
MIGRATE_SLOTS = ("threshold", "remote")
FEATURE_MAX = 2.0  # loads and queue shares are capped here so observations stay in a fixed box
HOT_THRESHOLD_MIN = 0.6  # CPU load above which a host is hot, for a threshold slot of -1
HOT_THRESHOLD_MID = 1.0  # ... for a slot of 0: hosts busier than their cores shed load
SWITCH_ON = -0.5  # the remote switch is on above this (on for three quarters of uniform draws)
KEEP_EXPONENT = 1.0 / 3.0  # keep threshold = ((keep + 1) / 2) ** this: 0.79 for keep = 0, all of [0, 1]


def keep_threshold(keep: float) -> float:
    """Utilisation up to which requests stay local, for a keep slot value in [-1, 1]."""
    return ((min(max(keep, -1.0), 1.0) + 1.0) / 2.0) ** KEEP_EXPONENT


def keep_slot(threshold: float) -> float:
    """The keep slot value that gives `threshold` (the inverse of keep_threshold)."""
    return 2.0 * min(max(threshold, 0.0), 1.0) ** (1.0 / KEEP_EXPONENT) - 1.0


def hot_threshold(slot: float) -> float:
    """CPU load above which a host is hot: 0.6 at -1, 1.0 at 0, rising without bound towards +1 (never).

    A tangent rather than a switch: migrating less and not migrating at all lie on one
    smooth scale, so a critic's gradient along it means something everywhere.
    """
    t = (min(max(slot, -1.0), 1.0) + 1.0) / 2.0  # in [0, 1]
    if t >= 1.0:
        return math.inf
    return HOT_THRESHOLD_MIN + (HOT_THRESHOLD_MID - HOT_THRESHOLD_MIN) * math.tan(math.pi / 2.0 * t)


def hot_slot(threshold: float) -> float:
    """The threshold slot value that gives `threshold` (the inverse of hot_threshold; inf gives 1)."""
    if math.isinf(threshold):
        return 1.0
    t = math.atan(
        (max(threshold, HOT_THRESHOLD_MIN) - HOT_THRESHOLD_MIN) / (HOT_THRESHOLD_MID - HOT_THRESHOLD_MIN)
    )
    return 2.0 * t / (math.pi / 2.0) - 1.0


@dataclass(frozen=True, kw_only=True)
class QueueSummary:
    """What an agent sees of the requests waiting at its data center."""

    waiting: int
    vcpus: float
    memory_gb: float
    oldest_wait_steps: int
    handed_off: int


@dataclass(frozen=True, kw_only=True)
class Layout:
    """Sizes and slices of observations and actions for `dcs` data centers of `hosts` host slots."""

    dcs: int
    hosts: int

    @property
    def observation_size(self) -> int:
        """Length of one agent's observation."""
        return (
            self.hosts * len(HOST_FEATURES)
            + len(QUEUE_FEATURES)
            + (self.dcs - 1) * len(PEER_FEATURES)
            + len(CLOCK_FEATURES)
        )

    @property
    def action_size(self) -> int:
        """Length of one agent's action."""
        return self.hosts + len(SCORE_FEATURES) + 1 + (self.dcs - 1) + len(MIGRATE_SLOTS)

    @functools.cached_property
    def action_slices(self) -> dict[str, slice]:
        """Where each action block lies."""
        sizes = {
            "host_bias": self.hosts,
            "weights": len(SCORE_FEATURES),
            "keep": 1,
            "handoff": self.dcs - 1,
            "migrate": len(MIGRATE_SLOTS),
        }
        return _slices(sizes)

    @functools.cached_property
    def observation_slices(self) -> dict[str, slice]:
        """Where each observation block lies."""
        sizes = {
            "hosts": self.hosts * len(HOST_FEATURES),
            "queue": len(QUEUE_FEATURES),
            "peers": (self.dcs - 1) * len(PEER_FEATURES),
            "clock": len(CLOCK_FEATURES),
        }
        return _slices(sizes)

    def split_observation(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        """Named blocks of an observation: hosts (hosts x 5), queue (5), peers (dcs-1 x 3), clock (2)."""
        s = self.observation_slices
        return {
            "hosts": obs[s["hosts"]].reshape(self.hosts, len(HOST_FEATURES)),
            "queue": obs[s["queue"]],
            "peers": obs[s["peers"]].reshape(self.dcs - 1, len(PEER_FEATURES)),
            "clock": obs[s["clock"]],
        }

    def split_action(self, action: np.ndarray) -> dict[str, np.ndarray]:
        """Named blocks of an action."""
        return {name: action[s] for name, s in self.action_slices.items()}

    def observe(
        self,
        dc: int,
        hosts_by_dc: list[Hosts],
        queue: QueueSummary,
        *,
        queue_vms_max: int,
        wait_steps_max: int,
        day_fraction: float,
    ) -> np.ndarray:
        """The observation of data center `dc`'s controller."""
        own = hosts_by_dc[dc]
        host_block = np.stack(
            [
                np.where(own.present, own.memory_gb_used / own.memory_gb_max, 0.0),
                np.where(own.present, own.vcpus_used / own.vcpus_max, 0.0),
                own.cpu_load(),
                (own.vms > 0).astype(float),
                own.present.astype(float),
            ],
            axis=1,
        )
        vcpus_total = max(float(own.vcpus_max[own.present].sum()), 1e-9)
        memory_total = max(float(own.memory_gb_max[own.present].sum()), 1e-9)
        queue_block = np.array(
            [
                queue.waiting / queue_vms_max,
                queue.vcpus / vcpus_total,
                queue.memory_gb / memory_total,
                queue.oldest_wait_steps / wait_steps_max,
                queue.handed_off / max(queue.waiting, 1),
            ]
        )
        peers = [peer_summary(h) for i, h in enumerate(hosts_by_dc) if i != dc]
        angle = 2.0 * np.pi * day_fraction
        obs = np.concatenate(
            [host_block.ravel(), queue_block, np.ravel(peers), [np.sin(angle), np.cos(angle)]]
        )
        return np.clip(obs, -1.0, FEATURE_MAX).astype(np.float32)


def peer_summary(hosts: Hosts) -> np.ndarray:
    """Memory used, vCPUs allocated (fractions) and mean CPU load of a data center: what it gossips."""
    p = hosts.present
    if not p.any():
        return np.ones(len(PEER_FEATURES))
    return np.array(
        [
            hosts.memory_gb_used[p].sum() / hosts.memory_gb_max[p].sum(),
            hosts.vcpus_used[p].sum() / hosts.vcpus_max[p].sum(),
            hosts.cpu_load()[p].mean(),
        ]
    )


def _slices(sizes: dict[str, int]) -> dict[str, slice]:
    out, at = {}, 0
    for name, n in sizes.items():
        out[name] = slice(at, at + n)
        at += n
    return out
