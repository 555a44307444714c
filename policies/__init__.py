"""Placement: who decides where VMs go."""

from policies.heuristics import NodeLoad, least_loaded_node

__all__ = ["NodeLoad", "least_loaded_node"]
