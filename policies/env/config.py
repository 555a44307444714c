"""The placement env's configuration: the data centers, the workload cut, the limits and the reward.

Every limit is named, bounded and checked when the config is built; the message of
a `ConfigError` says which value to change and to what.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from fabric.errors import ConfigError
from fabric.topology import DEFAULT_DCS
from policies.traces.splits import SPLITS, TraceSources

DCS_MAX = 16
HOSTS_PER_DC_MAX = 64  # as fabric.topology.NODES_PER_DC_MAX
WINDOW_STEPS_MAX = 2016  # a week of 5-minute steps
WARMUP_STEPS_MAX = 2016
SHARDS_MAX = 1024
QUEUE_VMS_MAX = 100_000


@dataclass(frozen=True, kw_only=True)
class RewardWeights:
    """Weights of the reward components: preferences of the operator, not measurements.

    The reward of a step is minus the weighted sum of that step's components, and
    every agent receives it (a shared, cooperative reward). One rejected VM is the
    unit; the other weights say how many rejections a unit of each is worth.
    """

    rejected: float = 1.0  # per VM turned away (queue full, or waited wait_steps_max)
    delayed: float = 0.1  # per VM still waiting after a step's decisions (5 minutes late)
    overload_vcpu: float = 0.5  # per busy vCPU above a host's cores during a step (SLA violation)
    active_hosts: float = 0.05  # per host running at least one VM during a step (energy)
    wan_gb: float = 0.01  # per GB crossing the WAN: a handed-off VM's memory, a cross-DC migration
    lan_gb: float = 0.002  # per GB migrated between hosts of one data center

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not 0.0 <= value <= 1e3:
                raise ConfigError(f"reward weight {f.name} must be in [0, 1000], not {value}")


COMPONENTS = tuple(f.name for f in fields(RewardWeights))


@dataclass(frozen=True, kw_only=True)
class PlacementEnvConfig:
    """Everything that defines a placement env; JSON-ready through `to_dict`."""

    dcs: tuple[str, ...] = DEFAULT_DCS
    hosts_per_dc: int = 4
    host_cores: int = 16  # physical cores of a host
    host_memory_gb: float = 512.0  # 4 GB per allocatable vCPU: the running Azure mix asks ~4.5 GB per vCPU
    # PlanetLab VMs keep ~11% of their vCPUs busy on average, so clouds overcommit CPU
    # (OpenStack Nova's cpu_allocation_ratio defaulted to 16 until 2019, 4 since);
    # memory is never overcommitted. The overload component prices the risk.
    vcpu_overcommit: float = 8.0
    split: str = "train"
    sources: TraceSources | None = None  # None: the shared data (fabric.traces.default_data_root)
    window_steps: int = 96  # 8 hours of 5-minute steps per episode
    # The 12 hours before a window seed the VMs already running; windows start no earlier
    # than that into their trace, so every episode, in every split, has the same history.
    warmup_steps: int = 144
    shards: int = 32  # each episode sees 1/32 of the trace's batches (see policies.env.workload)
    batch_vms_max: int = 64  # larger batches are left out (counted): one would fill a data center
    dc_weights: tuple[float, ...] = (0.45, 0.35, 0.20)  # where batches arrive: an uneven load to balance
    queue_vms_max: int = 512  # per data center; arrivals beyond it are rejected
    wait_steps_max: int = 3  # a request waiting longer than 15 minutes is rejected
    handoffs_max: int = 1  # a request is handed to another data center at most once (no ping-pong)
    migrations_per_dc_max: int = 2  # migrations one controller may start per step
    reward: RewardWeights = field(default_factory=RewardWeights)
    seed: int = 0  # the env's RNG until reset(seed=...) gives another one

    def __post_init__(self) -> None:
        _check_range("dcs", len(self.dcs), 2, DCS_MAX, "list between 2 and 16 data center names")
        if len(set(self.dcs)) != len(self.dcs):
            raise ConfigError(f"data center names must be distinct: {self.dcs}")
        _check_range("hosts_per_dc", self.hosts_per_dc, 1, HOSTS_PER_DC_MAX)
        _check_range("host_cores", self.host_cores, 1, 1024)
        _check_range("host_memory_gb", self.host_memory_gb, 1.0, 65536.0)
        _check_range("vcpu_overcommit", self.vcpu_overcommit, 1.0, 16.0)
        if self.split not in SPLITS:
            raise ConfigError(f"split must be one of {SPLITS}, not {self.split!r}")
        _check_range("window_steps", self.window_steps, 1, WINDOW_STEPS_MAX)
        _check_range("warmup_steps", self.warmup_steps, 0, WARMUP_STEPS_MAX)
        _check_range("shards", self.shards, 1, SHARDS_MAX)
        _check_range("batch_vms_max", self.batch_vms_max, 1, 100_000)
        if len(self.dc_weights) != len(self.dcs) or min(self.dc_weights) < 0 or sum(self.dc_weights) <= 0:
            raise ConfigError(
                f"dc_weights needs one non-negative weight per data center ({len(self.dcs)}), "
                f"not {self.dc_weights}"
            )
        _check_range("queue_vms_max", self.queue_vms_max, 1, QUEUE_VMS_MAX)
        _check_range("wait_steps_max", self.wait_steps_max, 0, 288)
        _check_range("handoffs_max", self.handoffs_max, 0, 4)
        _check_range("migrations_per_dc_max", self.migrations_per_dc_max, 0, 64)

    @property
    def vcpus_max_per_host(self) -> float:
        """Allocatable vCPUs of a host."""
        return self.host_cores * self.vcpu_overcommit

    @property
    def vms_max(self) -> int:
        """Bound of the running-VM table: every VM has at least one vCPU, so no more fit."""
        return int(len(self.dcs) * self.hosts_per_dc * self.vcpus_max_per_host)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what RLlib passes to env runners as env_config)."""
        raw = asdict(self)
        raw["dcs"], raw["dc_weights"] = list(self.dcs), list(self.dc_weights)
        raw["sources"] = self.sources.to_dict() if self.sources is not None else None
        return raw

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> PlacementEnvConfig:
        """Parse `to_dict()` output (missing keys take their defaults; unknown keys are an error)."""
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ConfigError(f"unknown placement env settings {sorted(unknown)}; known: {sorted(known)}")
        values = dict(raw)
        if "dcs" in values:
            values["dcs"] = tuple(values["dcs"])
        if "dc_weights" in values:
            values["dc_weights"] = tuple(float(w) for w in values["dc_weights"])
        if isinstance(values.get("sources"), dict):
            values["sources"] = TraceSources.from_dict(values["sources"])
        if isinstance(values.get("reward"), dict):
            values["reward"] = RewardWeights(**values["reward"])
        return cls(**values)


def _check_range(name: str, value: float, lo: float, hi: float, what: str = "") -> None:
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be in [{lo}, {hi}]{' (' + what + ')' if what else ''}, not {value}")
