"""Heuristic placement: the controller's node picker, and the classic placers on the env's interface."""

from policies.heuristics.node_load import NodeLoad, least_loaded_node
from policies.heuristics.placers import HEURISTICS, PLACERS, HeuristicPolicy, RandomPolicy

__all__ = ["HEURISTICS", "PLACERS", "HeuristicPolicy", "NodeLoad", "RandomPolicy", "least_loaded_node"]
