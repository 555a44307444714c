"""`PlacementEnv`: one agent per data center places real Azure VM requests on its hosts.

A step is 5 minutes of trace time:
1. each controller applies its action to the requests waiting at its data center
   (new arrivals and earlier waiters), in arrival order: a local host, a handoff, or wait
   (`policies.env.decode`); then each places the requests handed to it the same way;
2. each controller may migrate VMs off its hot hosts;
3. the interval runs: each VM keeps `vcpus x utilisation` busy (its PlanetLab row at this
   time of day), so a host whose busy vCPUs exceed its cores is overloaded;
4. VMs whose lifetime ends leave, waiters age (and are rejected past `wait_steps_max`),
   and the next period's arrivals join the queues of their data centers.
The reward, shared by all agents, is minus the weighted components (`RewardWeights`);
each agent's info carries the raw components. Episodes end by truncation after
`window_steps` steps.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from ray.rllib.env.multi_agent_env import MultiAgentEnv

from fabric.errors import ConfigError
from policies.env.config import COMPONENTS, PlacementEnvConfig
from policies.env.decode import Request, Rules, decide, plan_migrations
from policies.env.hosts import Hosts
from policies.env.layout import FEATURE_MAX, Layout, QueueSummary
from policies.env.workload import Workload, build_workload
from policies.traces.planetlab import SAMPLES_PER_DAY
from policies.traces.splits import TraceSources, load_split


@dataclass
class _Waiting:
    vm: int  # index into the workload
    wait_steps: int = 0
    handoffs: int = 0


class PlacementEnv(MultiAgentEnv):
    """Multi-agent VM placement over several data centers, driven by real traces."""

    def __init__(self, config: dict[str, Any] | PlacementEnvConfig | None = None) -> None:
        super().__init__()
        if isinstance(config, PlacementEnvConfig):
            self.config = config
        else:
            self.config = PlacementEnvConfig.from_dict(dict(config or {}))
        c = self.config
        self.layout = Layout(dcs=len(c.dcs), hosts=c.hosts_per_dc)
        self.possible_agents = list(c.dcs)
        self.agents = list(c.dcs)
        obs_space = gym.spaces.Box(-1.0, FEATURE_MAX, (self.layout.observation_size,), np.float32)
        act_space = gym.spaces.Box(-1.0, 1.0, (self.layout.action_size,), np.float32)
        self.observation_spaces = {a: obs_space for a in self.agents}
        self.action_spaces = {a: act_space for a in self.agents}
        self._data = load_split(c.sources or TraceSources.default(), c.split)
        # A window (with its warm-up) must fit in the split: ConfigError here, not at the first reset.
        self._data.window_starts(warmup_steps=c.warmup_steps, window_steps=c.window_steps)
        self._rng = np.random.default_rng(c.seed)
        self._hosts = Hosts.empty(
            len(c.dcs) * c.hosts_per_dc,
            cores=c.host_cores,
            vcpus_max=c.vcpus_max_per_host,
            memory_gb_max=c.host_memory_gb,
        )
        self._by_dc = [
            self._hosts.view(i * c.hosts_per_dc, (i + 1) * c.hosts_per_dc) for i in range(len(c.dcs))
        ]
        self._workload: Workload | None = None
        self._t = 0
        self.window_start = -1
        self.shard = -1

    # -- RLlib / gymnasium API -------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        """Start an episode; options may fix `window_start` (a period of the split) and `shard`."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        options = options or {}
        c = self.config
        first, last = self._data.window_starts(warmup_steps=c.warmup_steps, window_steps=c.window_steps)
        start = options.get("window_start")
        self.window_start = int(self._rng.integers(first, last + 1)) if start is None else int(start)
        if not first <= self.window_start <= last:
            raise ConfigError(
                f"window_start must be in [{first}, {last}] for the {c.split} split "
                f"(warm-up {c.warmup_steps}, window {c.window_steps} steps), not {self.window_start}"
            )
        shard = options.get("shard")
        self.shard = int(self._rng.integers(c.shards)) if shard is None else int(shard)
        if not 0 <= self.shard < c.shards:
            raise ConfigError(f"shard must be in [0, {c.shards - 1}], not {self.shard}")
        self._workload = build_workload(
            self._data,
            first=self.window_start,
            steps=c.window_steps,
            warmup_steps=c.warmup_steps,
            shard=self.shard,
            shards=c.shards,
            dc_weights=c.dc_weights,
            batch_vms_max=c.batch_vms_max,
            rng=self._rng,
        )
        self._clear()
        self._t = 0
        self._place_history()
        self._measure_interval(0)  # the monitor's first reading
        self._queues = [deque() for _ in c.dcs]
        self._rejected_pending = self._enqueue_arrivals(0)
        info = {
            "window_start": self.window_start,
            "shard": self.shard,
            "vms_dropped": self._workload.vms_dropped,
            "warmup_unplaced": self._warmup_unplaced,
        }
        return self._observations(), {a: dict(info) for a in self.agents}

    def step(self, action_dict: dict[str, np.ndarray]) -> tuple[dict, dict, dict, dict, dict]:
        """Apply every controller's action, run one 5-minute interval, and advance the clock."""
        if self._workload is None:
            raise ConfigError("call reset() before step()")
        actions = self._checked_actions(action_dict)
        components = dict.fromkeys(COMPONENTS, 0.0)
        t0 = time.perf_counter()
        utilisation = [h.utilisation() for h in self._by_dc]
        rules = [Rules.from_action(a, self.layout, d, utilisation) for d, a in enumerate(actions)]
        decisions = self._place_requests(rules, components)
        decode_s = time.perf_counter() - t0
        self._migrate(rules, components)
        components["delayed"] = float(sum(len(q) for q in self._queues))
        self._measure_interval(self._t)
        components["overload_vcpu"] = float(
            np.maximum(self._hosts.cpu_demand - self._hosts.cores, 0.0)[self._hosts.present].sum()
        )
        components["active_hosts"] = float(((self._hosts.vms > 0) & self._hosts.present).sum())
        components["rejected"] += self._rejected_pending
        self._t += 1
        self._depart(self._t)
        rejected_by_age = self._age_queues()
        self._rejected_pending = self._enqueue_arrivals(self._t)
        components["rejected"] += rejected_by_age
        w = self.config.reward
        reward = -float(sum(getattr(w, k) * v for k, v in components.items()))
        done = self._t >= self.config.window_steps
        info = {"step": self._t - 1, "components": components, "decisions": decisions, "decode_s": decode_s}
        return (
            self._observations(),
            dict.fromkeys(self.agents, reward),
            {**dict.fromkeys(self.agents, False), "__all__": False},
            {**dict.fromkeys(self.agents, done), "__all__": done},
            {a: info for a in self.agents},
        )

    def get_observation_space(self, agent_id: str) -> gym.Space:
        """The observation space of `agent_id`."""
        return self.observation_spaces[agent_id]

    def get_action_space(self, agent_id: str) -> gym.Space:
        """The action space of `agent_id`."""
        return self.action_spaces[agent_id]

    # -- views for policies and tests -------------------------------------------------------------

    @property
    def hosts_by_dc(self) -> list[Hosts]:
        """Each data center's hosts (live views)."""
        return self._by_dc

    @property
    def step_index(self) -> int:
        """Steps taken in this episode."""
        return self._t

    # -- the episode's state --------------------------------------------------------------------

    def _clear(self) -> None:
        c, h = self.config, self._hosts
        for arr in (h.vcpus_used, h.memory_gb_used, h.cpu_demand):
            arr[:] = 0.0
        h.vms[:] = 0
        n = c.vms_max
        self._vm_active = np.zeros(n, bool)
        self._vm_host = np.full(n, -1, np.int64)  # global host index
        self._vm_index = np.full(n, -1, np.int64)  # index into the workload
        self._vm_end = np.zeros(n, np.int64)
        self._vm_demand = np.zeros(n)  # busy vCPUs over the last interval
        self._free_slots = list(range(n - 1, -1, -1))
        self._warmup_unplaced = 0

    def _start_vm(self, vm: int, host: int, end_step: int) -> None:
        assert self._free_slots, "the VM table is sized for every allocatable vCPU; it cannot overflow"
        w = self._workload
        assert w is not None
        slot = self._free_slots.pop()
        self._vm_active[slot], self._vm_host[slot], self._vm_index[slot] = True, host, vm
        self._vm_end[slot], self._vm_demand[slot] = end_step, 0.0
        self._hosts.add(host, w.vcpus[vm], w.memory_gb[vm])

    def _place_history(self) -> None:
        """VMs running at the window start, placed first-fit (origin DC first): the same for all policies."""
        w = self._workload
        assert w is not None
        hosts_per_dc = self.config.hosts_per_dc
        for vm in np.flatnonzero(w.arrival_step < 0):
            order = [int(w.origin_dc[vm])] + [d for d in range(len(self._by_dc)) if d != w.origin_dc[vm]]
            for d in order:
                fits = np.flatnonzero(self._by_dc[d].fits(w.vcpus[vm], w.memory_gb[vm]))
                if fits.size:
                    self._start_vm(
                        int(vm),
                        d * hosts_per_dc + int(fits[0]),
                        int(w.arrival_step[vm] + w.lifetime_steps[vm]),
                    )
                    break
            else:
                self._warmup_unplaced += 1

    def _enqueue_arrivals(self, step: int) -> int:
        """Queue the VMs arriving at `step`; returns how many were rejected for a full queue."""
        w = self._workload
        assert w is not None
        lo, hi = np.searchsorted(w.arrival_step, [step, step + 1])
        rejected = 0
        for vm in range(lo, hi):
            q = self._queues[int(w.origin_dc[vm])]
            if len(q) >= self.config.queue_vms_max:
                rejected += 1
            else:
                q.append(_Waiting(vm=vm))
        return rejected

    def _checked_actions(self, action_dict: dict[str, np.ndarray]) -> list[np.ndarray]:
        missing = set(self.agents) - set(action_dict)
        if missing:
            raise ConfigError(f"every data center acts each step; no action for {sorted(missing)}")
        out = []
        for a in self.agents:
            act = np.asarray(action_dict[a], np.float64).reshape(-1)
            if act.size != self.layout.action_size or not np.isfinite(act).all():
                raise ConfigError(f"the action of {a} must be {self.layout.action_size} finite numbers")
            out.append(np.clip(act, -1.0, 1.0))
        return out

    def _place_requests(self, rules: list[Rules], components: dict[str, float]) -> int:
        """Route every waiting request (pass 1), then the handed-off ones at their new DC (pass 2)."""
        w, c = self._workload, self.config
        assert w is not None
        incoming: list[list[_Waiting]] = [[] for _ in c.dcs]
        decisions = 0
        for d, queue in enumerate(self._queues):
            still = deque()
            for item in queue:
                decisions += 1
                where = decide(
                    rules[d],
                    self._by_dc[d],
                    Request(vcpus=w.vcpus[item.vm], memory_gb=w.memory_gb[item.vm], handoffs=item.handoffs),
                    handoffs_max=c.handoffs_max,
                )
                if where.kind == "host":
                    self._start_vm(
                        item.vm, d * c.hosts_per_dc + where.target, self._t + int(w.lifetime_steps[item.vm])
                    )
                elif where.kind == "handoff":
                    components["wan_gb"] += float(w.memory_gb[item.vm])
                    incoming[where.target].append(_Waiting(item.vm, item.wait_steps, item.handoffs + 1))
                else:
                    still.append(item)
            self._queues[d] = still
        for d, items in enumerate(incoming):
            for item in items:
                decisions += 1
                where = decide(
                    rules[d],
                    self._by_dc[d],
                    Request(vcpus=w.vcpus[item.vm], memory_gb=w.memory_gb[item.vm], handoffs=c.handoffs_max),
                    handoffs_max=c.handoffs_max,
                )
                if where.kind == "host":
                    self._start_vm(
                        item.vm, d * c.hosts_per_dc + where.target, self._t + int(w.lifetime_steps[item.vm])
                    )
                elif len(self._queues[d]) < c.queue_vms_max:
                    self._queues[d].append(item)
                else:
                    components["rejected"] += 1
        return decisions

    def _migrate(self, rules: list[Rules], components: dict[str, float]) -> None:
        w, c = self._workload, self.config
        assert w is not None
        for d in range(len(c.dcs)):
            lo = d * c.hosts_per_dc
            slots = np.flatnonzero(
                self._vm_active & (self._vm_host >= lo) & (self._vm_host < lo + c.hosts_per_dc)
            )
            if slots.size == 0:
                continue
            vms = self._vm_index[slots]
            moves = plan_migrations(
                rules[d],
                self._by_dc,
                vm_host=self._vm_host[slots] - lo,
                vm_vcpus=w.vcpus[vms],
                vm_memory_gb=w.memory_gb[vms],
                vm_demand=self._vm_demand[slots],
                moves_max=c.migrations_per_dc_max,
            )
            for m in moves:
                self._vm_host[slots[m.vm]] = m.target_dc * c.hosts_per_dc + m.target_host
                components["lan_gb" if m.target_dc == d else "wan_gb"] += m.memory_gb

    def _measure_interval(self, step: int) -> None:
        """Busy vCPUs of every VM and host during window step `step`."""
        w = self._workload
        assert w is not None
        slots = np.flatnonzero(self._vm_active)
        vms = self._vm_index[slots]
        self._vm_demand[slots] = w.vcpus[vms] * w.cpu_util(vms, step)
        self._hosts.cpu_demand[:] = np.bincount(
            self._vm_host[slots], weights=self._vm_demand[slots], minlength=len(self._hosts)
        )

    def _depart(self, step: int) -> None:
        w = self._workload
        assert w is not None
        for slot in np.flatnonzero(self._vm_active & (self._vm_end <= step)):
            vm = self._vm_index[slot]
            self._hosts.remove(int(self._vm_host[slot]), w.vcpus[vm], w.memory_gb[vm], self._vm_demand[slot])
            self._vm_active[slot], self._vm_host[slot], self._vm_index[slot] = False, -1, -1
            self._free_slots.append(int(slot))

    def _age_queues(self) -> int:
        rejected = 0
        for d, queue in enumerate(self._queues):
            kept = deque()
            for item in queue:
                item.wait_steps += 1
                if item.wait_steps > self.config.wait_steps_max:
                    rejected += 1
                else:
                    kept.append(item)
            self._queues[d] = kept
        return rejected

    def _queue_summary(self, d: int) -> QueueSummary:
        w = self._workload
        assert w is not None
        q = self._queues[d]
        vms = np.array([i.vm for i in q], np.int64)
        return QueueSummary(
            waiting=len(q),
            vcpus=float(w.vcpus[vms].sum()),
            memory_gb=float(w.memory_gb[vms].sum()),
            oldest_wait_steps=max((i.wait_steps for i in q), default=0),
            handed_off=sum(i.handoffs > 0 for i in q),
        )

    def _observations(self) -> dict[str, np.ndarray]:
        w = self._workload
        assert w is not None
        day = float(w.time_of_day[min(self._t, w.time_of_day.size - 1)]) / SAMPLES_PER_DAY
        return {
            a: self.layout.observe(
                d,
                self._by_dc,
                self._queue_summary(d),
                queue_vms_max=self.config.queue_vms_max,
                wait_steps_max=max(self.config.wait_steps_max, 1),
                day_fraction=day,
            )
            for d, a in enumerate(self.agents)
        }
