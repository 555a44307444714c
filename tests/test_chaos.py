"""Chaos plans are reproducible, and the checks catch every kind of violation."""

from __future__ import annotations

from fabric.chaos import FAULTS, VmObservation, check_trial, expected_digest, plan_trial
from fabric.memory import SyntheticSpec, Vm, spec_to_dict
from fabric.topology import embedded_default


def test_a_seed_always_plans_the_same_trial_and_seeds_cover_every_fault() -> None:
    topo = embedded_default()
    assert plan_trial(7, topo) == plan_trial(7, topo)
    assert plan_trial(7, topo) != plan_trial(8, topo)
    assert {plan_trial(s, topo).fault for s in range(300)} == set(FAULTS)
    for s in range(100):
        plan = plan_trial(s, topo)
        homes = {name: node for name, node, _ in plan.vms}
        assert all(to != homes[vm] for vm, to in plan.migrations)  # every migration moves


def obs(**kw) -> VmObservation:
    base = {"vm": "v", "ledger_owner": "a", "ledger_open_migration": False, "running_on": ("a",),
            "present_on": ("a",), "digest": "d", "expected_digest": "d"}
    return VmObservation(**{**base, **kw})


def test_check_trial_catches_each_violation_and_counts_lost_vms() -> None:
    assert check_trial([obs()], dead_nodes=set(), hung=[]) == ([], [])
    cases = {
        "runs on 2 nodes": obs(running_on=("a", "b"), present_on=("a", "b")),
        "but the ledger names": obs(running_on=("b",), present_on=("b",)),
        "left open": obs(ledger_open_migration=True),
        "vanished from the ledger": obs(ledger_owner=None, running_on=(), present_on=()),
        "does not run on a": obs(running_on=(), present_on=("a",)),
        "memory differs": obs(digest="x"),
    }
    for words, o in cases.items():
        violations, _ = check_trial([o], dead_nodes=set(), hung=[])
        assert any(words in v for v in violations), (words, violations)
    violations, lost = check_trial([obs(running_on=(), present_on=())], dead_nodes={"a"}, hung=["v@2"])
    assert lost == ["v"] and violations == ["migration v@2 did not finish by its deadline"]


def test_expected_digest_replays_the_workload_to_its_guest_time() -> None:
    spec = SyntheticSpec(memory_mib=4, dirty_rate_mbps=3, hot_set_mib=1, seed=5)
    vm = Vm.boot("v", spec)
    vm.resume(0.0)
    vm.advance(0.6)
    vm.pause(0.9)
    assert expected_digest(spec_to_dict(spec), vm.guest_time_s) == vm.memory.full_digest()
    assert expected_digest(spec_to_dict(spec), vm.guest_time_s + 0.1) != vm.memory.full_digest()
