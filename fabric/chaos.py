"""Chaos trials: what to break (a seeded plan), and what must still hold afterwards (the checks).

A trial's plan is a pure function of its seed: a few small guests, the
migrations to run, one fault and when it strikes. The shell (jobs/chaos.py)
carries it out on the real runtime. Whatever the fault, afterwards:

- no VM runs on two nodes, and none runs on a node the ledger does not name;
- every VM runs on the node the ledger names, unless that node died in the
  trial (the VM died with its host: counted, not hidden);
- no migration is left open in the ledger, and none outlived its deadline;
- every running VM's memory is exactly its workload's, replayed to its guest
  time (workloads are deterministic in guest time).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any

from fabric.memory import PageStore, SyntheticSpec, make_workload, spec_from_dict, spec_to_dict
from fabric.topology import Topology

FAULTS = ("none", "kill_destination", "kill_source", "kill_replica", "kill_controller", "restart_node",
          "partition_link", "slow_link", "tamper_frame", "replay_frame", "drop_frame")
# Guests and migrations per trial, inclusive: small, so 50 trials fit in CI (~3 s each).
VMS_PER_TRIAL = (1, 2)
MIGRATIONS_PER_TRIAL = (1, 2)
GUEST_MIB = 8  # small guests: a trial's checks replay every one of them
FAULT_DELAY_S = (0.0, 1.0)  # when the fault strikes after the migrations start
PARTITION_S = (1.0, 4.0)
SLOW_LINK_BPS = 50e6


@dataclass(frozen=True, kw_only=True)
class TrialPlan:
    """One trial, from its seed."""

    seed: int
    vms: tuple[tuple[str, str, dict[str, Any]], ...]  # (name, node, workload spec)
    migrations: tuple[tuple[str, str], ...]  # (vm, target node), run at once
    fault: str
    fault_delay_s: float
    fault_params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def plan_trial(seed: int, topology: Topology) -> TrialPlan:
    """The plan of trial `seed` on `topology` (deterministic)."""
    rng = random.Random(f"chaos:{seed}")
    nodes = [n.name for n in topology.nodes]
    vms = []
    for i in range(rng.randint(*VMS_PER_TRIAL)):
        spec = SyntheticSpec(memory_mib=GUEST_MIB, dirty_rate_mbps=rng.choice([0.5, 2.0, 8.0]),
                             hot_set_mib=2, seed=rng.randrange(1 << 30))
        vms.append((f"chaos-{seed}-{i}", rng.choice(nodes), spec_to_dict(spec)))
    migrations = []
    for vm, home, _ in rng.sample(vms, k=min(len(vms), rng.randint(*MIGRATIONS_PER_TRIAL))):
        migrations.append((vm, rng.choice([n for n in nodes if n != home])))
    fault = rng.choice(FAULTS)
    params: dict[str, Any] = {}
    vm0, target0 = migrations[0]
    home0 = next(node for name, node, _ in vms if name == vm0)
    if fault in ("kill_destination", "kill_source"):
        params["node"] = target0 if fault == "kill_destination" else home0
    elif fault in ("kill_replica", "restart_node"):
        bystanders = [n for n in nodes if n not in {home0, target0}] or nodes
        params["node"] = rng.choice(bystanders)
    elif fault in ("partition_link", "slow_link"):
        params["dcs"] = (topology.node(home0).dc, topology.node(target0).dc)
        params["down_s"] = round(rng.uniform(*PARTITION_S), 2) if fault == "partition_link" else 0.0
    elif fault in ("tamper_frame", "replay_frame", "drop_frame"):
        params["vm"] = vm0
        params["seq"] = rng.randint(0, 1)
    return TrialPlan(seed=seed, vms=tuple(vms), migrations=tuple(migrations), fault=fault,
                     fault_delay_s=round(rng.uniform(*FAULT_DELAY_S), 3), fault_params=params)


def expected_digest(workload: dict[str, Any], guest_time_s: float) -> str:
    """The digest a guest's memory must have at `guest_time_s`, replayed from its spec here."""
    w = make_workload(spec_from_dict(workload))
    memory = PageStore(w.pages)
    w.boot(memory)
    w.run(memory, 0.0, guest_time_s)
    return memory.full_digest()


@dataclass(frozen=True, kw_only=True)
class VmObservation:
    """What the trial saw of one VM after it settled."""

    vm: str
    ledger_owner: str | None
    ledger_open_migration: bool
    running_on: tuple[str, ...]  # live nodes where it runs
    present_on: tuple[str, ...]  # live nodes that hold it in any state
    digest: str | None = None  # its memory's digest where the ledger says it runs
    expected_digest: str | None = None


def check_trial(observations: list[VmObservation], *, dead_nodes: set[str],
                hung: list[str]) -> tuple[list[str], list[str]]:
    """(violations, VMs lost with a host that died in the trial)."""
    violations: list[str] = []
    lost: list[str] = []
    for o in observations:
        if len(o.running_on) > 1:
            violations.append(f"{o.vm} runs on {len(o.running_on)} nodes: {list(o.running_on)}")
        strays = [n for n in o.running_on if n != o.ledger_owner]
        if strays:
            violations.append(f"{o.vm} runs on {strays} but the ledger names {o.ledger_owner}")
        if o.ledger_open_migration:
            violations.append(f"{o.vm} has a migration left open in the ledger")
        if o.ledger_owner is None:
            violations.append(f"{o.vm} vanished from the ledger")
        elif o.ledger_owner not in o.running_on:
            if o.ledger_owner in dead_nodes:
                lost.append(o.vm)  # it died with its host
            else:
                violations.append(f"{o.vm} does not run on {o.ledger_owner}, its owner "
                                  f"(held by {list(o.present_on)})")
        if o.digest is not None and o.digest != o.expected_digest:
            violations.append(f"{o.vm}'s memory differs from its workload's ({o.digest[:12]} != "
                              f"{str(o.expected_digest)[:12]})")
    violations += [f"migration {m} did not finish by its deadline" for m in hung]
    return violations, lost
