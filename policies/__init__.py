"""Placement: who decides where VMs go.

The controller's node picker (`least_loaded_node`), the classic placers on the
placement env's interface, and the advisor behind the placement service. The env
(`policies.env.PlacementEnv`), MADDPG (`policies.maddpg`) and the evaluation
(`policies.evaluation`) load Ray's RL stack and torch, so they are imported from
their packages.
"""

from policies.advisor import AdvisorConfig, PlacementAdvisor
from policies.errors import CheckpointError, TraceFormatError, UnknownPolicyError
from policies.heuristics import HEURISTICS, HeuristicPolicy, NodeLoad, RandomPolicy, least_loaded_node

__all__ = [
    "HEURISTICS",
    "AdvisorConfig",
    "CheckpointError",
    "HeuristicPolicy",
    "NodeLoad",
    "PlacementAdvisor",
    "RandomPolicy",
    "TraceFormatError",
    "UnknownPolicyError",
    "least_loaded_node",
]
