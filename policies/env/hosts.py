"""The hosts of one data center as parallel numpy arrays: what placement reads and changes.

The env keeps one `Hosts` for all data centers and hands out per-data-center views
(numpy slices share memory, so a placement through a view updates the whole).
The placement service builds them from the fabric's node list.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(kw_only=True)
class Hosts:
    """Capacity and usage of a set of hosts (one row per host slot; absent slots are padding)."""

    cores: np.ndarray  # float64: physical vCPUs; CPU demand above this is an overload
    vcpus_max: np.ndarray  # float64: vCPUs that may be allocated (cores x overcommit)
    memory_gb_max: np.ndarray  # float64
    vcpus_used: np.ndarray  # float64: vCPUs allocated to VMs
    memory_gb_used: np.ndarray  # float64
    cpu_demand: np.ndarray  # float64: busy vCPUs over the last interval
    vms: np.ndarray  # int64: VMs running
    present: np.ndarray  # bool: False for padding slots (never chosen, never counted)

    @classmethod
    def empty(cls, count: int, *, cores: float, vcpus_max: float, memory_gb_max: float) -> Hosts:
        """`count` identical, empty, present hosts."""
        return cls(
            cores=np.full(count, cores),
            vcpus_max=np.full(count, vcpus_max),
            memory_gb_max=np.full(count, memory_gb_max),
            vcpus_used=np.zeros(count),
            memory_gb_used=np.zeros(count),
            cpu_demand=np.zeros(count),
            vms=np.zeros(count, np.int64),
            present=np.ones(count, bool),
        )

    def __len__(self) -> int:
        return int(self.cores.size)

    def view(self, start: int, stop: int) -> Hosts:
        """Rows `start:stop`, sharing memory with this object."""
        return Hosts(**{name: getattr(self, name)[start:stop] for name in self.__dataclass_fields__})

    def fits(self, vcpus: float, memory_gb: float) -> np.ndarray:
        """Which hosts can take a VM of this size without exceeding memory or allocatable vCPUs."""
        return (
            self.present
            & (self.vcpus_used + vcpus <= self.vcpus_max + 1e-9)
            & (self.memory_gb_used + memory_gb <= self.memory_gb_max + 1e-9)
        )

    def add(self, host: int, vcpus: float, memory_gb: float, cpu_demand: float = 0.0) -> None:
        """Account a VM on `host`."""
        self.vcpus_used[host] += vcpus
        self.memory_gb_used[host] += memory_gb
        self.cpu_demand[host] += cpu_demand
        self.vms[host] += 1

    def remove(self, host: int, vcpus: float, memory_gb: float, cpu_demand: float = 0.0) -> None:
        """Release a VM from `host`."""
        self.vcpus_used[host] -= vcpus
        self.memory_gb_used[host] -= memory_gb
        self.cpu_demand[host] = max(0.0, self.cpu_demand[host] - cpu_demand)
        self.vms[host] -= 1

    def utilisation(self) -> float:
        """The binding resource's allocated fraction over present hosts (1 when none are: nothing fits)."""
        if not self.present.any():
            return 1.0
        memory = self.memory_gb_used[self.present].sum() / self.memory_gb_max[self.present].sum()
        vcpus = self.vcpus_used[self.present].sum() / self.vcpus_max[self.present].sum()
        return float(max(memory, vcpus))

    def cpu_load(self) -> np.ndarray:
        """Busy vCPUs over cores, per host (0 for padding)."""
        return np.where(self.present, self.cpu_demand / np.maximum(self.cores, 1e-9), 0.0)
