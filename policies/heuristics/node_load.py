"""Heuristic placement of a VM onto one of several candidate nodes."""

from __future__ import annotations

from dataclasses import dataclass

from fabric.errors import CapacityError


@dataclass(frozen=True, kw_only=True)
class NodeLoad:
    """What a placer needs to know about a node."""

    name: str
    memory_mib_max: int
    memory_mib_used: float
    vms: int

    @property
    def memory_mib_free(self) -> float:
        """Guest memory still available."""
        return self.memory_mib_max - self.memory_mib_used


def least_loaded_node(candidates: list[NodeLoad], memory_mib: float) -> str:
    """The candidate with the most free memory that fits the VM (ties: fewer VMs, then name)."""
    fits = [c for c in candidates if c.memory_mib_free >= memory_mib]
    if not fits:
        free = {c.name: round(c.memory_mib_free) for c in candidates}
        raise CapacityError(f"no candidate node has {memory_mib:g} MiB free: {free}")
    return min(fits, key=lambda c: (-c.memory_mib_free, c.vms, c.name)).name
