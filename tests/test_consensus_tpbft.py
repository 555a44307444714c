"""T-PBFT: EigenTrust from the committed log, a trusted consensus group, epochs, and PBFT's safety kept.

The CI campaign runs 700 seeded runs of 4 replicas (the group is all of them, so
f = 1 anywhere) with short epochs, so group and primaries change within runs,
Byzantine replicas (colluding ones included), crashes and partitions; zero
violations are required.
"""

from __future__ import annotations

import random

import pytest

from fabric.consensus import ClusterParams, ConsensusClient, get_protocol
from fabric.consensus.pbft.messages import Prepare
from fabric.consensus.tpbft import (
    SCALE,
    Equivocation,
    Stamp,
    Suspect,
    TpbftConfig,
    TrustParams,
    TrustStateMachine,
    epoch_binding,
    evidence_request,
    global_trust,
    ranking,
)
from fabric.consensus.tpbft import core as tpbft_core
from fabric.errors import ConfigError
from fabric.ledger.replicated import LedgerStateMachine
from fabric.ledger.state import RegisterVm
from fabric.sim import Byzantine, CampaignConfig, Crash, Faults, RunConfig, run, run_campaign

# CI's share of the campaign: 2,000 seeds, as for Raft and PBFT (tests/test_sim_campaign.py), run
# by WORKERS processes (the CI machine has 2 cores) to fit the test suite's time budget;
# jobs/simulate.py runs the long campaigns (10,000 seeds and more; README, "Consensus").
CI_SEEDS = 2_000
WORKERS = 2


def float_eigentrust(local: list[list[int]], pre: list[int], a: float, iterations: int) -> list[float]:
    """The paper's Algorithm 2 in floats: an independent reading to check the fixed-point one against."""
    n = len(local)
    peers = pre or list(range(n))
    p = [1 / len(peers) if j in peers else 0.0 for j in range(n)]
    c = []
    for i, row in enumerate(local):
        pos = [max(s, 0) if j != i else 0 for j, s in enumerate(row)]
        tot = sum(pos)
        c.append([x / tot for x in pos] if tot else list(p))
    t = list(p)
    for _ in range(iterations):
        t = [(1 - a) * sum(c[i][j] * t[i] for i in range(n)) + a * p[j] for j in range(n)]
    return t


def test_eigentrust_is_deterministic_and_matches_the_float_algorithm() -> None:
    rng = random.Random(4)
    for _ in range(20):
        n = rng.randint(4, 9)
        local = [[rng.randint(-5, 20) for _ in range(n)] for _ in range(n)]
        pre = sorted(rng.sample(range(n), rng.randint(0, 3)))
        fixed = global_trust(local, pre_trusted=pre, alpha=SCALE // 7, iterations=20)
        floats = float_eigentrust(local, pre, 1 / 7, 20)
        assert all(abs(x / SCALE - y) < 1e-6 for x, y in zip(fixed, floats, strict=True))
        assert fixed == global_trust(local, pre_trusted=pre, alpha=SCALE // 7, iterations=20)
    # A replica everyone is unhappy with ends up last; with no opinions, trust is the pre-trusted vector.
    local = [[0, 3, 3, -9], [3, 0, 3, -9], [3, 3, 0, -9], [3, 3, 3, 0]]
    assert ranking(global_trust(local, pre_trusted=(), alpha=SCALE // 10, iterations=20))[-1] == 3
    zero = global_trust([[0] * 4 for _ in range(4)], pre_trusted=(2,), alpha=SCALE // 10, iterations=5)
    assert ranking(zero)[0] == 2 and zero[2] == SCALE
    with pytest.raises(ConfigError):
        global_trust([[0, 1]], pre_trusted=(), alpha=0, iterations=1)


def trust_sm(n: int = 4) -> tuple[TrustStateMachine, dict, object]:
    cl = get_protocol("tpbft").cluster(ClusterParams(n=n, seed=1, state_machine=LedgerStateMachine,
                                                     client_ids=("c",), signatures="hmac"))
    sm = TrustStateMachine(LedgerStateMachine(), n=n, params=TrustParams(), verifier=cl._verifier)
    return sm, cl._client_signers, cl


def test_evidence_moves_local_trust_only_when_it_checks_out() -> None:
    sm, signers, cl = trust_sm()
    sm.order = (2, 0, 1, 3)
    sm.position = 5
    ev = lambda rid, op: evidence_request(signers[f"replica-{rid}"], rid, op)  # noqa: E731
    assert sm.apply(ev(2, Stamp(epoch=0, view=0, seq=5))) == "accepted"
    assert [sm.sat[i][2] for i in range(4)] == [1, 1, 0, 1]
    assert sm.apply(ev(0, Stamp(epoch=0, view=0, seq=5))).startswith("rejected")  # 0 did not propose it
    assert sm.apply(ev(2, Stamp(epoch=0, view=0, seq=6))).startswith("rejected")  # another position
    assert sm.apply(ev(1, Suspect(epoch=0, view=0, accused=2))) == "accepted"
    assert sm.unsat[1][2] == 4 and sm.unsat[0][2] == 0  # the reporter's own opinion
    assert sm.apply(ev(1, Suspect(epoch=0, view=0, accused=2))) == "duplicate"
    assert sm.apply(ev(1, Suspect(epoch=0, view=0, accused=0))).startswith("rejected")  # not its primary
    assert sm.apply(ev(1, Suspect(epoch=1, view=0, accused=2))).startswith("rejected")  # another epoch
    # A proven equivocation: two Prepares signed by 3 for one (view, seq), bound to epoch 0.
    signer = cl.replica_signer(3)

    def signed(d: bytes) -> Prepare:
        p = Prepare(src=3, view=0, seq=5, digest=d)
        return Prepare(src=3, view=0, seq=5, digest=d, signature=signer.sign(epoch_binding(0) + p.payload))
    proof = Equivocation(epoch=0, first=signed(b"a" * 32), second=signed(b"b" * 32))
    assert sm.apply(ev(0, proof)) == "accepted"
    assert [sm.unsat[i][3] for i in range(4)] == [1000, 1000, 1000, 0]
    unsigned = Prepare(src=3, view=0, seq=5, digest=b"c" * 32)
    forged = Equivocation(epoch=0, first=signed(b"a" * 32), second=unsigned)
    assert sm.apply(ev(1, forged)).startswith("rejected")
    assert sm.cached_result(ev(0, proof)) == (True, "duplicate")
    before = sm.digest()
    sm.begin_epoch(1, (0, 1, 2, 3))
    assert sm.sat[0][2] == 0 and sm.unsat[0][3] == 500 and sm.digest() != before  # halved


def test_a_primary_that_times_out_loses_its_turn_next_epoch() -> None:
    """Replica 0 leads first (equal trust, lowest id) and stays silent: it is suspected and demoted."""
    r = run(RunConfig(protocol="tpbft", ops_per_client=6, options={"epoch_length": 4}), 2,
            Faults(byzantine=(Byzantine(replica=0, behaviour="silent"),)))
    assert r.ok, r.safety_violations or r.liveness_failures
    assert r.replica_counters["evidence_suspects"] > 0 and r.replica_counters["epochs_entered"] > 0
    cl = get_protocol("tpbft").cluster(ClusterParams(n=4, seed=2, state_machine=LedgerStateMachine,
                                                     client_ids=("c1", "c2"), signatures="hmac",
                                                     options={"epoch_length": 4, "checkpoint_interval": 4,
                                                              "watermark_window": 8}))
    assert cl.faults_tolerated == 1


def test_a_smaller_group_runs_agreement_and_the_others_observe() -> None:
    cl = get_protocol("tpbft").cluster(ClusterParams(n=7, seed=3, state_machine=LedgerStateMachine,
                                                     client_ids=("c",), signatures="hmac",
                                                     options={"group_size": 4, "epoch_length": 8,
                                                              "checkpoint_interval": 4,
                                                              "watermark_window": 8}))
    assert cl.faults_tolerated == 1
    storages = {r: cl.new_storage(r) for r in cl.replica_ids}
    reps = {r: cl.new_replica(r, storages[r], now_ms=0, rng=random.Random(r)) for r in cl.replica_ids}
    assert reps[0].group == (0, 1, 2, 3) and reps[6].status().role == "observer"
    client = ConsensusClient("c", cl.client_policy, signer=cl.client_signer("c"))
    queue, done = [], []
    for to, req in client.submit(RegisterVm(vm="a", node="dc1"), 0).sends:
        queue.append((to, req))
    kinds = set()
    while queue:
        to, msg = queue.pop(0)
        ready = reps[to].step(msg)
        if ready.persist is not None:
            storages[to].save(ready.persist)
        queue.extend(ready.messages)
        kinds.update((to, type(m.msg).__name__) for _, m in ready.messages if hasattr(m, "msg"))
        for rep in ready.replies:
            out = client.on_reply(to, rep, 0)
            done += [out.done] if out.done else []
    assert done and done[0].result.accepted
    assert all(r.last_exec == 1 for r in (x._instance for x in reps.values()))  # observers executed too
    assert not any(who >= 4 and kind in ("Prepare", "Commit") for who, kind in kinds)  # observers never vote


def test_a_laggard_is_carried_across_epochs() -> None:
    """Replica 3 is down while the others go through epochs; back, it asks and is sent their starts."""
    r = run(RunConfig(protocol="tpbft", ops_per_client=10, think_ms_max=100, options={"epoch_length": 4}), 0,
            Faults(crashes=(Crash(replica=3, at_ms=20, restart_ms=500),), heal_ms=500))
    assert r.ok, r.safety_violations or r.liveness_failures
    assert r.replica_counters.get("epoch_jumps", 0) > 0


def test_config_is_validated() -> None:
    for bad in ({"group_size": 3}, {"epoch_length": 6}, {"batch_max": 1}, {"voters": (0, 1, 2, 3)},
                {"pre_trusted": (9,)}):
        with pytest.raises(ConfigError):
            TpbftConfig(id=0, n=4, checkpoint_interval=4, watermark_window=8, **bad).validate()


@pytest.mark.parametrize("behaviour", ["equivocate", "forge", "silent", "wrong-digest", "collude"])
def test_up_to_f_byzantine_replicas_never_split_the_honest_ones(behaviour: str) -> None:
    cfg = RunConfig(protocol="tpbft", n=7, ops_per_client=4, options={"epoch_length": 4})
    faults = Faults(byzantine=(Byzantine(replica=0, behaviour=behaviour),
                               Byzantine(replica=1, behaviour=behaviour)))
    for seed in range(3):
        r = run(cfg, seed, faults)
        assert r.ok, (behaviour, seed, r.safety_violations[:1], r.liveness_failures[:1])


def test_an_epoch_plan_from_local_state_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Trust must come from the committed state only: a replica that mixes in its own view diverges."""
    plan = tpbft_core.TpbftReplica._plan_epoch

    def biased(self: tpbft_core.TpbftReplica, epoch: int) -> tuple:
        voters, order = plan(self, epoch)
        if epoch and self._id % 2:  # odd replicas put themselves first
            order = (self._id, *[r for r in order if r != self._id])
            self._trust.order = order
        return voters, order

    monkeypatch.setattr(tpbft_core.TpbftReplica, "_plan_epoch", biased)
    r = run_campaign(CampaignConfig(run=RunConfig(protocol="tpbft", ops_per_client=4,
                                                  options={"epoch_length": 4}), seeds=30))
    assert r.safety_violations > 0 or r.liveness_failures > 0
    assert r.safety_violations > 0


def test_tpbft_survives_seeded_runs_with_byzantine_replicas() -> None:
    r = run_campaign(CampaignConfig(run=RunConfig(protocol="tpbft", ops_per_client=3), seeds=CI_SEEDS,
                                   workers=WORKERS))
    assert r.runs == CI_SEEDS
    assert r.failing_seeds == [], r.failures[:3]
    assert r.fencing_violations == 0 and r.inconclusive == 0
    f, c = r.faults, r.replica_counters
    for kind in ("dropped", "duplicated", "reordered", "partitions", "crashes_done", "byzantine"):
        assert f[kind] > 0, kind
    for path in ("epochs_entered", "epoch_jumps", "evidence_stamps", "evidence_suspects", "views_entered",
                 "checkpoints_stable", "states_installed", "restarts"):
        assert c.get(path, 0) > 0, path
    print(f"tpbft campaign: {r.runs} runs, {r.real_crypto_runs} with Ed25519, "
          f"{r.messages_per_decision:.1f} messages/decision, {r.wall_s:.1f} s")
