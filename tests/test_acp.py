"""ACP: the protocol follows the mode, and a switch in the middle of a stream of migrations loses nothing.

Each run: clients migrate their own VMs step by step (register, begin, commit, ...)
while the mode goes datacenter -> internet -> hybrid -> datacenter, so the ledger
runs Raft, then PBFT, then ProBFT or T-PBFT, then Raft again, with crashes,
partitions and a lossy network around the switches. The history must be
linearizable across every switch, all replicas must end with the same ledger,
and each VM's final record must be what its client last heard: nothing lost,
nothing applied twice.
"""

from __future__ import annotations

import dataclasses
import random

import pytest

from fabric.consensus import ClusterParams, Request, get_protocol
from fabric.consensus.acp import (
    AcpConfig,
    AcpReplica,
    AcpStateMachine,
    EraClosed,
    EraRecord,
    SwitchEra,
    switch_client,
)
from fabric.errors import ConfigError
from fabric.ledger.replicated import LedgerStateMachine
from fabric.ledger.state import Outcome, RegisterVm
from fabric.sim import CampaignConfig, Crash, Faults, RunConfig, run_campaign
from fabric.sim.campaign import run_config_for
from fabric.sim.runner import Simulation

SWITCHES = ((250, "internet"), (600, "hybrid"), (950, "datacenter"))
# The CI campaign, as for the other protocols: 2,000 seeds, run by WORKERS processes (the CI
# machine has 2 cores; an ACP run costs ~30 ms of CPU). jobs/simulate.py runs longer ones.
CI_SEEDS = 2_000
WORKERS = 2


def stream(hybrid: str, seed: int, faults: Faults) -> Simulation:
    # ~20 steps of ~90 ms per client: the stream outlasts the three switches.
    cfg = RunConfig(protocol="acp", workload="migrations", clients=2, vms=2, ops_per_client=20,
                    think_ms_max=120, mode_changes=SWITCHES, options={"internet": "pbft", "hybrid": hybrid})
    sim = Simulation(cfg, seed, faults)
    sim.result = sim.run()  # type: ignore[attr-defined]
    return sim


def _app(rep: AcpReplica) -> LedgerStateMachine:
    return rep._sm.inner  # the era's AcpStateMachine wraps the ledger


def check_nothing_lost_or_doubled(sim: Simulation) -> None:
    result = sim.result  # type: ignore[attr-defined]
    assert result.ok, (result.safety_violations[:2], result.liveness_failures[:2])
    assert not result.fencing_violations
    eras = {rep.era for rep in sim.replicas.values() if rep is not None}
    assert eras == {3}, eras  # every replica went through the three switches
    # Replicas agree on every position they applied (the run's prefix checks); the most advanced one
    # holds the latest state (Raft's followers may apply the last entries after the run ends).
    ahead = max(sim.replicas.values(), key=lambda rep: rep.status().applied)
    first = {r.vm: r for r in _app(ahead).ledger.records()}
    last: dict[str, object] = {}
    for op in sorted(sim.history, key=lambda o: o.call):
        if op.status == "ok" and isinstance(op.result, Outcome):
            last[op.op.vm] = op.result.record
        elif op.status != "ok":
            last.pop(op.op.vm, None)  # unknown outcome: the next read tells
    for vm, rec in last.items():
        assert first.get(vm) == rec, (vm, first.get(vm), rec)  # what the client last heard is the truth
    commits = sum(1 for op in sim.history if op.status == "ok" and type(op.op).__name__ == "CommitMigration"
                  and op.result.accepted)
    assert commits > 0


@pytest.mark.parametrize("hybrid", ["probft", "tpbft"])
def test_switching_raft_pbft_bft_raft_under_a_stream_of_migrations_loses_nothing(hybrid: str) -> None:
    faults = Faults(drop_rate=0.05, dup_rate=0.05, reorder_rate=0.1,
                    crashes=(Crash(replica=1, at_ms=230, restart_ms=400),
                             Crash(replica=None, at_ms=650, restart_ms=900)),
                    heal_ms=1_200)
    for seed in range(4):
        sim = stream(hybrid, seed, faults)
        check_nothing_lost_or_doubled(sim)
        counters = sim.result.replica_counters  # type: ignore[attr-defined]
        assert counters["eras_started"] + counters.get("eras_adopted", 0) >= 3 * 4


def test_the_state_machine_refuses_what_is_ordered_after_the_switch() -> None:
    sm = AcpStateMachine(LedgerStateMachine(), 0)
    reg = Request(client_id="c", request_id=1, op=RegisterVm(vm="a", node="dc1"))
    assert sm.apply(reg).accepted
    bad = Request(client_id="c", request_id=2, op=SwitchEra(era=1, protocol="pbft"))
    assert sm.apply(bad).startswith("rejected")  # only a replica's switch client may switch
    assert sm.apply(Request(client_id=switch_client(2), request_id=2, op=SwitchEra(era=2, protocol="pbft"))
                    ).startswith("rejected")  # not the next era
    assert sm.apply(Request(client_id=switch_client(2), request_id=2,
                            op=SwitchEra(era=1, protocol="pbft"))) == "switching"
    late = Request(client_id="c", request_id=3, op=RegisterVm(vm="b", node="dc1"))
    assert sm.apply(late) == EraClosed(era=0)
    assert sm.inner.ledger.record("b") is None and sm.inner.cached_result(late) == (False, None)
    assert sm.cached_result(reg)[0]  # a retry of the first request finds its session in the next era


def test_config_is_validated_and_the_policy_suits_every_era() -> None:
    with pytest.raises(ConfigError):
        AcpConfig(id=0, n=4, internet="paxos").validate()
    with pytest.raises(ConfigError):
        AcpConfig(id=0, n=3, internet="pbft").validate()
    cl = get_protocol("acp").cluster(ClusterParams(n=4, seed=1, state_machine=LedgerStateMachine,
                                                   client_ids=("c",), signatures="hmac",
                                                   options={"hybrid": "probft"}))
    assert cl.client_policy.replies_needed == 3 and cl.client_policy.sign_requests  # ProBFT's 2f+1
    assert cl.faults_tolerated == 1


def test_a_replica_that_missed_the_switch_adopts_the_new_era() -> None:
    """Replica 3 is down across two switches; back, f+1 replicas vouch for the era it missed."""
    sim = stream("tpbft", 5, Faults(crashes=(Crash(replica=3, at_ms=200, restart_ms=1_100),), heal_ms=1_100))
    check_nothing_lost_or_doubled(sim)
    assert sim.result.replica_counters.get("eras_adopted", 0) > 0  # type: ignore[attr-defined]


def test_a_switch_that_forgets_the_sessions_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the exactly-once sessions in the era's start, retries across a switch apply twice."""
    def amnesiac_switch(self: AcpReplica) -> None:
        if self._sm.switch_to is None:
            return
        app = self._sm.inner.snapshot()
        self._count("eras_started")
        self._start_era(EraRecord(era=self.era + 1, protocol=self._sm.switch_to,
                                  snapshot={**app, "sessions": []}))

    monkeypatch.setattr(AcpReplica, "_check_switch", amnesiac_switch)
    run = RunConfig(protocol="acp", ops_per_client=8, think_ms_max=60)
    r = run_campaign(CampaignConfig(run=run, seeds=40))
    assert r.safety_violations > 0


def test_acp_survives_seeded_runs_with_random_switches_and_crash_faults() -> None:
    """Each seed draws 2-3 mode changes and which BFT protocols internet and hybrid use."""
    cfg = CampaignConfig(run=RunConfig(protocol="acp", ops_per_client=4), seeds=CI_SEEDS, workers=WORKERS)
    r = run_campaign(cfg)
    assert r.failing_seeds == [], r.failures[:3]
    assert r.fencing_violations == 0 and r.inconclusive == 0
    c = r.replica_counters
    assert c["eras_started"] > r.runs and c.get("eras_adopted", 0) > 0 and c["requests_held_for_switch"] > 0
    protocols = {run_config_for(cfg.run, s).options["internet"] for s in range(CI_SEEDS)}
    assert protocols == {"pbft", "probft", "tpbft", "bullshark"}
    print(f"acp campaign: {r.runs} runs, {r.messages_per_decision:.1f} messages/decision, {r.wall_s:.1f} s")


def test_a_dataclass_snapshot_round_trips_through_the_era_start() -> None:
    cl = get_protocol("acp").cluster(ClusterParams(n=4, seed=1, state_machine=LedgerStateMachine,
                                                   client_ids=("c",), signatures="hmac"))
    storages = {r: cl.new_storage(r) for r in cl.replica_ids}
    reps = {r: cl.new_replica(r, storages[r], now_ms=0, rng=random.Random(r)) for r in cl.replica_ids}
    assert all(rep.protocol == "raft" and rep.era == 0 for rep in reps.values())
    ready = reps[0].tick(0)
    assert ready.persist is not None and dataclasses.is_dataclass(ready.persist.ops[0])


def test_a_switch_out_of_a_byzantine_era_needs_f_plus_1_replicas_to_ask() -> None:
    """One replica (a liar, or one whose view of the links is wrong) cannot end a PBFT era:
    a switch takes f+1 replicas' requests for the same protocol, one ACP's config names."""
    sm = AcpStateMachine(LedgerStateMachine(), 0, votes_needed=2, protocols=("raft", "pbft"))
    vote = [Request(client_id=switch_client(r), request_id=1, op=SwitchEra(era=1, protocol=p))
            for r, p in ((0, "raft"), (0, "raft"), (1, "pbft"), (2, "bullshark"), (3, "raft"))]
    assert sm.apply(vote[0]) == "vote recorded" and sm.apply(vote[1]) == "vote recorded"  # the same voter
    assert sm.apply(vote[2]) == "vote recorded"  # another protocol: its own count
    assert sm.apply(vote[3]).startswith("rejected")  # not one of ACP's protocols
    assert sm.switch_to is None and not sm.cached_result(vote[0])[0]
    restored = AcpStateMachine(LedgerStateMachine(), 0, votes_needed=2, protocols=("raft", "pbft"))
    restored.restore(sm.snapshot())  # the votes travel with checkpoints and state transfer
    assert restored.apply(vote[4]) == "switching" and restored.switch_to == "raft"


def _acp_cluster(n: int = 4) -> tuple[list[AcpReplica], list]:
    cl = get_protocol("acp").cluster(ClusterParams(n=n, seed=3, state_machine=LedgerStateMachine,
                                                   client_ids=("c",), signatures="hmac",
                                                   options={"initial_mode": "internet"}))
    storages = [cl.new_storage(r) for r in range(n)]
    reps = [cl.new_replica(r, storages[r], now_ms=0, rng=random.Random(r)) for r in range(n)]
    return reps, storages


def _run(reps: list[AcpReplica], storages: list, readies: list, start_ms: int, until_ms: int) -> int:
    """Deliver every message at once and tick every 10 ms until `until_ms`."""
    now, queue = start_ms, [(i, r) for i, r in readies]
    while now <= until_ms:
        while queue:
            rid, ready = queue.pop(0)
            if ready.persist is not None:
                storages[rid].save(ready.persist)
            for to, msg in ready.messages:
                queue.append((to, reps[to].step(msg)))
        now += 10
        queue = [(i, rep.tick(now)) for i, rep in enumerate(reps)]
    return now


def test_one_replica_told_a_new_mode_cannot_switch_a_pbft_ledger_but_f_plus_1_do() -> None:
    reps, storages = _acp_cluster()
    assert {rep.protocol for rep in reps} == {"pbft"}
    now = _run(reps, storages, [], 0, 200)
    now = _run(reps, storages, [(0, reps[0].change_mode("datacenter"))], now, now + 2_000)
    assert {(rep.era, rep.protocol) for rep in reps} == {(0, "pbft")}  # one voice is not enough
    assert all(rep._sm.votes == {"raft": {switch_client(0)}} for rep in reps)  # its vote is in the log
    now = _run(reps, storages, [(1, reps[1].change_mode("datacenter"))], now, now + 2_000)
    assert {(rep.era, rep.protocol) for rep in reps} == {(1, "raft")}
