"""`PlacementAdvisor`: where a VM should go and which VMs should move, from the fabric's view of its hosts.

The placement service actor wraps one. It loads a trained checkpoint (MADDPG
actors) or a heuristic, builds the same observations the env builds, and decides
with the same code (`policies.env.decode`). When the checkpoint is missing, cannot
be read, or was trained for another shape of fabric (other number of data centers,
more hosts per data center than it has slots for), it falls back to a heuristic and
says why in every answer.

Input (memory in MiB, the fabric's unit; CPU in vCPUs):

    request = {"vm": "web-1", "memory_mib": 4096, "vcpus": 2, "origin_dc": "us-east"}
    dcs = [{"name": "us-east", "hosts": [
              {"name": "us-east-1", "memory_mib_max": 524288, "memory_mib_used": 40960,
               "vcpus_max": 128, "vcpus_used": 10, "cores": 16, "cpu_busy": 3.5, "vms": 3}, ...]}, ...]

`vcpus` defaults to 1 and `origin_dc` to the first data center: the request arrives
there, and that data center's controller keeps it or hands it to another, as in the
env. Two optional fields narrow the choice: `"hosts": [names]` (only these hosts may
take it; the others still shape the observations) and `"handoff": false` (it stays in
`origin_dc`). A host without
`vcpus_max` has no vCPU limit, and without `cores` no CPU-overload signal (the fabric
gives each node its share of its Ray node's CPUs); `cpu_busy` (busy vCPUs over the last
interval, which fabric nodes measure) defaults to 0. `rebalance` takes `{"dcs": [...]}`
whose hosts also list their VMs:
`"vm_list": [{"name": "kv-1", "memory_mib": 256, "vcpus": 1, "cpu_busy": 0.4}]`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fabric.errors import ConfigError
from policies.checkpoint import NumpyActors, env_config_in, load_numpy_actors
from policies.env.config import PlacementEnvConfig
from policies.env.decode import Request, Rules, decide, plan_migrations
from policies.env.hosts import Hosts
from policies.env.layout import Layout, QueueSummary
from policies.errors import CheckpointError, UnknownPolicyError
from policies.heuristics.placers import HEURISTICS, HeuristicPolicy

log = logging.getLogger("novacron.placement")

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "default"  # the shipped actors
DEFAULT_FALLBACK = "best-fit+migrate"
DCS_MAX = 64
HOSTS_PER_DC_MAX = 1024
VMS_PER_REQUEST_MAX = 100_000
SECONDS_PER_DAY = 86_400


@dataclass(frozen=True, kw_only=True)
class AdvisorConfig:
    """What to load: a checkpoint (falling back to `fallback` if unusable), or the heuristic `heuristic`."""

    checkpoint: str | None = None
    heuristic: str | None = None
    fallback: str = DEFAULT_FALLBACK

    def __post_init__(self) -> None:
        if (self.checkpoint is None) == (self.heuristic is None):
            raise ConfigError("give exactly one of checkpoint (a path) or heuristic (a name)")
        for name in (self.heuristic, self.fallback):
            if name is not None and name not in HEURISTICS:
                raise UnknownPolicyError(f"no heuristic {name!r}; heuristics are {HEURISTICS}")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> AdvisorConfig:
        """Parse {"checkpoint": path} or {"heuristic": name}, optionally with "fallback"."""
        unknown = set(raw) - {"checkpoint", "heuristic", "fallback"}
        if unknown:
            raise ConfigError(
                f"unknown placement settings {sorted(unknown)}; use checkpoint, heuristic, fallback"
            )
        return cls(**raw)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form that `from_dict` reads back."""
        out: dict[str, Any] = {"fallback": self.fallback}
        if self.checkpoint is not None:
            out["checkpoint"] = self.checkpoint
        if self.heuristic is not None:
            out["heuristic"] = self.heuristic
        return out


class PlacementAdvisor:
    """Answers placement and rebalancing questions with one loaded policy."""

    def __init__(self, config: AdvisorConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = clock
        self._actors: NumpyActors | None = None
        self.fallback_reason: str | None = None
        self._logged: set[str] = set()
        # The env's default limits, replaced by the checkpoint's when it carries its env config.
        self.env_defaults = _EnvLimits.of(PlacementEnvConfig())
        if config.checkpoint is not None:
            try:
                self._actors = load_numpy_actors(Path(config.checkpoint))
                stored = env_config_in(self._actors.meta)
                if stored is not None:
                    self.env_defaults = _EnvLimits.of(stored)
            except CheckpointError as e:
                self._actors = None
                self.fallback_reason = f"checkpoint unusable, using {config.fallback}: {e}"
                self._log_once(self.fallback_reason)
        if self._actors is not None:
            log.info("placement policy: maddpg actors from %s", config.checkpoint)

    def _log_once(self, reason: str) -> None:
        """Log each distinct fallback reason once (a warning: the configured policy is not answering)."""
        if reason not in self._logged:
            self._logged.add(reason)
            log.warning("placement falls back to a heuristic: %s", reason)

    @property
    def policy_name(self) -> str:
        """The policy answering now (before any per-call fallback)."""
        if self._actors is not None:
            return self._actors.name
        return self.config.heuristic or self.config.fallback

    def describe(self) -> dict[str, Any]:
        """Which policy is loaded, from where, and whether (and why) it fell back."""
        out: dict[str, Any] = {
            "policy": self.policy_name,
            "checkpoint": self.config.checkpoint,
            "fallback": self.fallback_reason is not None,
            "fallback_reason": self.fallback_reason,
            "fallback_policy": self.config.fallback,
        }
        if self._actors is not None:
            out["trained_for"] = {
                "dcs": self._actors.layout.dcs,
                "hosts_per_dc": self._actors.layout.hosts,
                "agents": list(self._actors.agents),
            }
            out["provenance"] = self._actors.meta.get("provenance", {})
        return out

    # -- questions -------------------------------------------------------------------------------

    def place(self, request: dict[str, Any], dcs: list[dict[str, Any]]) -> dict[str, Any]:
        """Where `request` should run: {"dc", "host", "decision", "policy", "fallback_reason", ...}."""
        t0 = time.perf_counter()
        view = _FabricView.parse(dcs)
        vm = _parse_request(request, view)
        policy, layout, reason = self._policy_for(view)
        # Memory stays in MiB: the `memory_gb` fields of Hosts and Request take any one unit,
        # since observations and decisions only ever use ratios of memory to memory.
        hosts = view.hosts(layout.hosts)
        eligible = view.eligible(vm["hosts"], layout.hosts)
        origin = view.index(vm["origin_dc"])
        utilisation = [h.utilisation() for h in hosts]
        queue = QueueSummary(
            waiting=1, vcpus=vm["vcpus"], memory_gb=vm["memory_mib"], oldest_wait_steps=0, handed_off=0
        )
        rules = Rules.from_action(
            self._action(policy, layout, origin, hosts, queue), layout, origin, utilisation
        )
        handoffs_max = self.env_defaults.handoffs_max
        where = decide(
            rules,
            hosts[origin],
            Request(
                vcpus=vm["vcpus"], memory_gb=vm["memory_mib"], handoffs=0 if vm["handoff"] else handoffs_max
            ),
            handoffs_max=handoffs_max,
            eligible=eligible[origin],
        )
        dc, decision = origin, where.kind
        if where.kind == "handoff":
            dc = where.target
            rules = Rules.from_action(self._action(policy, layout, dc, hosts, queue), layout, dc, utilisation)
            where = decide(
                rules,
                hosts[dc],
                Request(vcpus=vm["vcpus"], memory_gb=vm["memory_mib"], handoffs=handoffs_max),
                handoffs_max=handoffs_max,
                eligible=eligible[dc],
            )
        placed = where.kind == "host"
        return {
            "vm": vm["vm"],
            "decision": "host" if placed else "none",
            "handed_off": decision == "handoff",
            "dc": view.names[dc] if placed else None,
            "host": view.host_names[dc][where.target] if placed else None,
            "reason": None if placed else "no host has room for it now; retry later or add capacity",
            "policy": policy.name,
            "fallback_reason": reason,
            "latency_us": (time.perf_counter() - t0) * 1e6,
        }

    def rebalance(self, state: dict[str, Any]) -> list[dict[str, Any]]:
        """Migrations off hot hosts: [{"vm", "from_dc", "from_host", "to_dc", "to_host", "policy", ...}]."""
        view = _FabricView.parse(state.get("dcs", []), with_vms=True)
        policy, layout, reason = self._policy_for(view)
        hosts = view.hosts(layout.hosts)
        utilisation = [h.utilisation() for h in hosts]
        moves: list[dict[str, Any]] = []
        for d in range(len(view.names)):
            vms = view.vms[d]
            if not vms:
                continue
            queue = QueueSummary(waiting=0, vcpus=0.0, memory_gb=0.0, oldest_wait_steps=0, handed_off=0)
            rules = Rules.from_action(self._action(policy, layout, d, hosts, queue), layout, d, utilisation)
            planned = plan_migrations(
                rules,
                hosts,
                vm_host=np.array([v["host"] for v in vms]),
                vm_vcpus=np.array([v["vcpus"] for v in vms], float),
                vm_memory_gb=np.array([v["memory_mib"] for v in vms], float),
                vm_demand=np.array([v["cpu_busy"] for v in vms], float),
                moves_max=self.env_defaults.migrations_per_dc_max,
            )
            for m in planned:
                v = vms[m.vm]
                moves.append(
                    {
                        "vm": v["name"],
                        "from_dc": view.names[d],
                        "from_host": view.host_names[d][m.source_host],
                        "to_dc": view.names[m.target_dc],
                        "to_host": view.host_names[m.target_dc][m.target_host],
                        "memory_mib": v["memory_mib"],
                        "cpu_busy": v["cpu_busy"],
                        "reason": f"CPU load above {rules.hot_threshold:.2f} of its cores",
                        "policy": policy.name,
                        "fallback_reason": reason,
                    }
                )
        return moves

    # -- internals ---------------------------------------------------------------------------------

    def _policy_for(self, view: _FabricView) -> tuple[Any, Layout, str | None]:
        """The trained actors if they fit this fabric, else the heuristic (with the reason)."""
        hosts_max = max(len(h) for h in view.host_names)
        if self._actors is not None:
            layout = self._actors.layout
            if layout.dcs == len(view.names) and hosts_max <= layout.hosts:
                return _Mapped(self._actors, view.names), layout, None
            reason = (
                f"checkpoint trained for {layout.dcs} data centers of at most {layout.hosts} hosts; this "
                f"fabric has {len(view.names)} of up to {hosts_max}: using {self.config.fallback}"
            )
            self._log_once(reason)
            name = self.config.fallback
        else:
            reason, name = self.fallback_reason, self.config.heuristic or self.config.fallback
        layout = Layout(dcs=len(view.names), hosts=hosts_max)
        return HeuristicPolicy(name, layout, tuple(view.names)), layout, reason

    def _action(
        self, policy: Any, layout: Layout, dc: int, hosts: list[Hosts], queue: QueueSummary
    ) -> np.ndarray:
        day = (self._clock() % SECONDS_PER_DAY) / SECONDS_PER_DAY
        obs = layout.observe(
            dc,
            hosts,
            queue,
            queue_vms_max=self.env_defaults.queue_vms_max,
            wait_steps_max=max(self.env_defaults.wait_steps_max, 1),
            day_fraction=day,
        )
        return np.asarray(policy.act_one(dc, obs) if isinstance(policy, _Mapped) else policy.action(obs))


@dataclass(frozen=True)
class _EnvLimits:
    """The env limits that shape observations and decisions (the checkpoint's, else the env's defaults)."""

    queue_vms_max: int
    wait_steps_max: int
    handoffs_max: int
    migrations_per_dc_max: int

    @classmethod
    def of(cls, c: PlacementEnvConfig) -> _EnvLimits:
        """The limits of env config `c`."""
        return cls(
            queue_vms_max=c.queue_vms_max,
            wait_steps_max=c.wait_steps_max,
            handoffs_max=c.handoffs_max,
            migrations_per_dc_max=c.migrations_per_dc_max,
        )


class _Mapped:
    """Trained actors in the fabric's data-center order (matched by name if they match, else by position)."""

    def __init__(self, actors: NumpyActors, dc_names: list[str]) -> None:
        self.actors = actors
        self.name = actors.name
        by_name = set(dc_names) == set(actors.agents)
        self.agent_of = [name if by_name else actors.agents[i] for i, name in enumerate(dc_names)]

    def act_one(self, dc: int, obs: np.ndarray) -> np.ndarray:
        return self.actors.action(self.agent_of[dc], obs)


@dataclass
class _FabricView:
    names: list[str]
    host_names: list[list[str]]
    raw_hosts: list[list[dict[str, Any]]]
    vms: list[list[dict[str, Any]]]

    @classmethod
    def parse(cls, dcs: list[dict[str, Any]], *, with_vms: bool = False) -> _FabricView:
        if not 1 <= len(dcs) <= DCS_MAX:
            raise ConfigError(f"give 1 to {DCS_MAX} data centers, not {len(dcs)}")
        names, host_names, raw_hosts, vms = [], [], [], []
        for dc in dcs:
            hosts = dc.get("hosts") or []
            if not dc.get("name") or not 1 <= len(hosts) <= HOSTS_PER_DC_MAX:
                raise ConfigError(
                    f"each data center needs a name and 1 to {HOSTS_PER_DC_MAX} hosts: {dc.get('name')!r}"
                )
            names.append(str(dc["name"]))
            host_names.append([str(h.get("name", f"{dc['name']}-{i + 1}")) for i, h in enumerate(hosts)])
            raw_hosts.append([_parse_host(h) for h in hosts])
            vms.append(
                [{**_parse_vm(v), "host": i} for i, h in enumerate(hosts) for v in (h.get("vm_list") or [])]
                if with_vms
                else []
            )
        if len(set(names)) != len(names):
            raise ConfigError(f"data center names must be distinct: {names}")
        if sum(len(v) for v in vms) > VMS_PER_REQUEST_MAX:
            raise ConfigError(f"list at most {VMS_PER_REQUEST_MAX} VMs in one request")
        view = cls(names=names, host_names=host_names, raw_hosts=raw_hosts, vms=vms)
        if with_vms:
            view._busy_from_vms()
        return view

    def _busy_from_vms(self) -> None:
        for d, hosts in enumerate(self.raw_hosts):
            for i, h in enumerate(hosts):
                listed = [v["cpu_busy"] for v in self.vms[d] if v["host"] == i]
                if listed and not h["cpu_busy_given"]:
                    h["cpu_busy"] = float(sum(listed))

    def eligible(self, names: list[str] | None, slots: int) -> list[np.ndarray]:
        """Per data center, which of `slots` host slots may take the VM (all present hosts if None)."""
        out = [np.arange(slots) < len(hosts) for hosts in self.host_names]
        if names is None:
            return out
        known = {n: (d, i) for d, hosts in enumerate(self.host_names) for i, n in enumerate(hosts)}
        unknown = sorted(set(names) - set(known))
        if unknown:
            raise ConfigError(f"hosts {unknown} are not in the fabric's view")
        for mask in out:
            mask[:] = False
        for n in names:
            d, i = known[n]
            out[d][i] = True
        return out

    def index(self, name: str) -> int:
        if name not in self.names:
            raise ConfigError(f"no data center {name!r}; data centers are {self.names}")
        return self.names.index(name)

    def hosts(self, slots: int) -> list[Hosts]:
        """One Hosts per data center, padded to `slots` host slots (padding is never chosen)."""
        out = []
        for hosts in self.raw_hosts:
            h = Hosts.empty(slots, cores=1.0, vcpus_max=1.0, memory_gb_max=1.0)
            h.present[:] = False
            for i, raw in enumerate(hosts):
                h.present[i] = True
                h.cores[i], h.vcpus_max[i], h.memory_gb_max[i] = (
                    raw["cores"],
                    raw["vcpus_max"],
                    raw["memory_mib_max"],
                )
                h.vcpus_used[i], h.memory_gb_used[i] = raw["vcpus_used"], raw["memory_mib_used"]
                h.cpu_demand[i], h.vms[i] = raw["cpu_busy"], raw["vms"]
            out.append(h)
        return out


def _number(raw: dict[str, Any], key: str, default: float | None, lo: float = 0.0) -> float:
    value = raw.get(key, default)
    if value is None:
        raise ConfigError(f"{key} is required in {raw}")
    value = float(value)
    if math.isnan(value) or value < lo:
        raise ConfigError(f"{key} must be a number >= {lo}, not {raw.get(key)!r}")
    return value


def _parse_host(raw: dict[str, Any]) -> dict[str, Any]:
    host = {
        "memory_mib_max": _number(raw, "memory_mib_max", None, lo=1e-9),
        "memory_mib_used": _number(raw, "memory_mib_used", 0.0),
        "vcpus_max": _number(raw, "vcpus_max", math.inf, lo=1e-9),
        "vcpus_used": _number(raw, "vcpus_used", 0.0),
        "cores": _number(raw, "cores", math.inf, lo=1e-9),
        "cpu_busy": _number(raw, "cpu_busy", 0.0),
        "cpu_busy_given": "cpu_busy" in raw,
        "vms": int(_number(raw, "vms", len(raw.get("vm_list") or []))),
    }
    return host


def _parse_vm(raw: dict[str, Any]) -> dict[str, Any]:
    if not raw.get("name"):
        raise ConfigError(f"every listed VM needs a name: {raw}")
    return {
        "name": str(raw["name"]),
        "memory_mib": _number(raw, "memory_mib", None, lo=1e-9),
        "vcpus": _number(raw, "vcpus", 1.0, lo=1e-9),
        "cpu_busy": _number(raw, "cpu_busy", 0.0),
    }


def _parse_request(raw: dict[str, Any], view: _FabricView) -> dict[str, Any]:
    if not raw.get("vm"):
        raise ConfigError(f"a placement request needs the VM's name: {raw}")
    hosts = raw.get("hosts")
    if hosts is not None and (
        not isinstance(hosts, list) or not 1 <= len(hosts) <= DCS_MAX * HOSTS_PER_DC_MAX
    ):
        raise ConfigError(f"hosts must be a list of 1 to {DCS_MAX * HOSTS_PER_DC_MAX} host names: {hosts!r}")
    handoff = raw.get("handoff", True)
    if not isinstance(handoff, bool):
        raise ConfigError(f"handoff must be true or false, not {handoff!r}")
    return {
        "vm": str(raw["vm"]),
        "memory_mib": _number(raw, "memory_mib", None, lo=1e-9),
        "vcpus": _number(raw, "vcpus", 1.0, lo=1e-9),
        "origin_dc": str(raw.get("origin_dc") or view.names[0]),
        "hosts": None if hosts is None else [str(h) for h in hosts],
        "handoff": handoff,
    }
