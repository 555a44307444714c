"""Deterministic simulation of consensus replicas: virtual clock, seeded faults, history checks.

    from fabric.sim import RunConfig, Faults, run
    result = run(RunConfig(protocol="raft"), seed=7, faults=Faults(drop_rate=0.1, heal_ms=1000))

`run` drives any registered protocol through the sans-IO interface; `Faults`
is the typed fault options object; `run_campaign` runs many seeds; the
checkers (linearizability per VM, one owner per epoch, equal committed
prefixes) judge every run. A failing seed replays exactly.
"""

from fabric.sim.byzantine import Behaviour, ByzantineContext, behaviour_names, register_behaviour
from fabric.sim.campaign import (
    CampaignConfig,
    CampaignResult,
    fault_kinds_for,
    run_campaign,
    run_config_for,
    run_seed,
)
from fabric.sim.checker import (
    HistoryOp,
    check_fencing,
    check_linearizable,
    check_prefixes,
    check_single_owner,
    check_vm,
)
from fabric.sim.faults import FAULT_KINDS, Byzantine, Crash, Delay, Faults, Partition
from fabric.sim.runner import RunConfig, RunResult, Simulation, random_faults, run

__all__ = [
    "FAULT_KINDS", "Behaviour", "Byzantine", "ByzantineContext", "CampaignConfig", "CampaignResult", "Crash",
    "Delay", "Faults", "HistoryOp", "Partition", "RunConfig", "RunResult", "Simulation", "behaviour_names",
    "check_fencing", "check_linearizable", "check_prefixes", "check_single_owner", "check_vm",
    "fault_kinds_for", "random_faults", "register_behaviour", "run", "run_campaign", "run_config_for",
    "run_seed",
]
