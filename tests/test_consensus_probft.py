"""ProBFT: VRF-chosen samples, probabilistic quorums, halting on contradiction, and fencing that always holds.

The CI campaign runs 2,000 seeded runs at n = 4 with random faults inside the
Byzantine model (colluding replicas included); 2% of them sign with Ed25519 and
prove the VRF with RSA-FDH-VRF (RFC 9381), the rest use the simulator's HMAC
stand-ins. At n = 4 ProBFT's samples are everyone and q = 3 = 2f+1, so it must
not err there; where it can (larger n, f colluding), agreement violations are
counted and fencing must still hold.
"""

from __future__ import annotations

import dataclasses
import math
import random

import pytest

from fabric.consensus import ClusterParams, get_protocol
from fabric.consensus.pbft.messages import PrePrepare, batch_digest
from fabric.consensus.probft import ProbftConfig, ProPrepare
from fabric.consensus.probft.analysis import binomial_tail, split_attack_bound
from fabric.consensus.sortition import (
    HmacVrfProver,
    make_vrfs,
    sample_alpha,
    sample_of,
    sample_size,
)
from fabric.errors import ConfigError
from fabric.ledger.replicated import LedgerStateMachine
from fabric.sim import Byzantine, CampaignConfig, Faults, RunConfig, run, run_campaign
from fabric.sim.measure import probft_agreement

# CI's share of the campaign: 2,000 seeds, as for Raft and PBFT (tests/test_sim_campaign.py), run
# by WORKERS processes (the CI machine has 2 cores) to fit the test suite's time budget;
# jobs/simulate.py runs the long campaigns (10,000 seeds and more; README, "Consensus").
CI_SEEDS = 2_000
WORKERS = 2


def test_config_exposes_l_and_o_and_derives_sample_and_quorum() -> None:
    assert (ProbftConfig(id=0, n=4).sample, ProbftConfig(id=0, n=4).q) == (3, 3)  # PBFT's 2f+1 at n=4
    cfg = ProbftConfig(id=0, n=100, o=2.0, l=1.5)
    assert (cfg.sample, cfg.q) == (20, 15)
    assert ProbftConfig(id=0, n=100, o=3.0, l=2.0).sample == 30
    for bad in ({"o": 0.0}, {"l": 0.0}, {"l": 0.3}, {"voters": (0, 1, 2, 3)}, {"history_max": 4}):
        with pytest.raises(ConfigError):
            ProbftConfig(id=0, n=9, **bad).validate()


def test_samples_are_deterministic_verifiable_and_of_the_right_size() -> None:
    rng = random.Random(1)
    provers, ring = make_vrfs(range(16), "hmac", rng)
    alpha = sample_alpha("probft", 3, 7, "prepare")
    beta, pi = provers[5].prove(alpha)
    assert ring.verify(5, alpha, pi) == beta
    assert ring.verify(6, alpha, pi) is None  # another replica's key
    assert ring.verify(5, sample_alpha("probft", 3, 8, "prepare"), pi) is None  # another instance
    s = sample_size(16, 2.0)
    sample = sample_of(beta, 5, 16, s)
    assert len(sample) == s == 8 and 5 not in sample and sample == sample_of(beta, 5, 16, s)
    # Different instances give different samples (the VRF input binds view, seq and phase).
    other = sample_of(provers[5].prove(sample_alpha("probft", 3, 7, "commit"))[0], 5, 16, s)
    assert other != sample


def test_votes_count_only_from_senders_whose_sample_holds_us() -> None:
    """A Prepare with a valid proof whose sample does not hold the receiver, or a bad proof, is dropped."""
    cl = get_protocol("probft").cluster(ClusterParams(n=16, seed=3, state_machine=LedgerStateMachine,
                                                      client_ids=("c",), signatures="hmac"))
    replicas = {r: cl.new_replica(r, cl.new_storage(r), now_ms=0, rng=random.Random(r)) for r in range(16)}
    pp = PrePrepare(src=0, view=0, seq=1, digest=batch_digest(()), batch=()).signed(cl.replica_signer(0))
    for r in range(1, 16):
        replicas[r].step(pp)
    sender = 3
    _, sample = replicas[sender]._own_sample(0, 1, "prepare")
    outside = next(r for r in range(16) if r not in sample and r != sender)
    inside = next(iter(sample))
    prep = replicas[sender]._make_prepare(pp).signed(cl.replica_signer(sender))
    before = dict(replicas[outside].counters)
    replicas[outside].step(prep)
    dropped = replicas[outside].counters.get("dropped_not_in_sample", 0)
    assert dropped == before.get("dropped_not_in_sample", 0) + 1
    replicas[inside].step(prep)
    assert sender in replicas[inside]._slots[1].prepares
    forged = dataclasses.replace(prep, proof=HmacVrfProver(sender, b"k" * 32).prove(b"x")[1])
    forged = forged.signed(cl.replica_signer(sender))  # signed by the sender, but a proof of nothing
    replicas[inside].step(forged)
    assert replicas[inside].counters.get("dropped_bad_vrf_proof", 0) >= 1
    assert isinstance(prep, ProPrepare) and prep.proof


def test_real_rsa_vrf_and_ed25519_run_and_the_messages_scale_as_n_sqrt_n() -> None:
    r = run(RunConfig(protocol="probft", n=4, signatures="ed25519", ops_per_client=2), 3)
    assert r.ok, r.safety_violations or r.liveness_failures
    pbft = run(RunConfig(protocol="pbft", n=25, clients=1, ops_per_client=1, sim_options=False,
                         options={"batch_max": 1}), 1)
    probft = run(RunConfig(protocol="probft", n=25, clients=1, ops_per_client=1, sim_options=False,
                           options={"batch_max": 1}), 1)
    assert pbft.ok and probft.ok
    # n=25, o=2: samples of 10 of 24; PBFT's Prepares and Commits go to all.
    assert probft.messages < 0.6 * pbft.messages, (probft.messages, pbft.messages)


def test_fencing_holds_where_probft_errs() -> None:
    """n=10 with 3 colluding replicas splits agreement in some runs; no run lets a VM run twice."""
    res = probft_agreement(10, 3, 12)
    assert res.violations > 0  # the attack works against probabilistic quorums at a = 1/3...
    assert res.fencing_violations == 0  # ...and clients still never act on two owners


def test_with_f_plus_1_replies_fencing_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """With PBFT's f+1 matching replies, clients act on both sides of a split: the check catches it."""
    from fabric.consensus import protocols

    real = protocols.ProbftCluster.__init__

    def weak(self: protocols.ProbftCluster, params: ClusterParams) -> None:
        real(self, params)
        self.client_policy = dataclasses.replace(self.client_policy,
                                                 replies_needed=self.faults_tolerated + 1)

    # Four clients race on one VM and the leader batches them (pipeline 1), so the two halves
    # apply conflicting requests in opposite orders; q = 4 < 2f+1 = 5 at n = 7 with l = 1.2.
    cfg = RunConfig(protocol="probft", n=7, clients=4, vms=1, ops_per_client=2, think_ms_max=0,
                    liveness_ms=2_000, options={"pipeline_max": 1, "l": 1.2})
    faults = Faults(byzantine=tuple(Byzantine(replica=r, behaviour="collude") for r in range(2)))
    assert not any(run(cfg, seed, faults).fencing_violations for seed in range(4, 12))
    monkeypatch.setattr(protocols.ProbftCluster, "__init__", weak)
    assert any(run(cfg, seed, faults).fencing_violations for seed in range(4, 12))  # 6 and 10 when written


def test_a_replica_halts_when_a_certified_state_contradicts_what_it_executed() -> None:
    cl = get_protocol("probft").cluster(ClusterParams(n=4, seed=1, state_machine=LedgerStateMachine,
                                                      client_ids=("c",), signatures="hmac"))
    storage = cl.new_storage(1)
    rep = cl.new_replica(1, storage, now_ms=0, rng=random.Random(1))
    rep._journal[3] = b"\x01" * 32
    snap = {"app": LedgerStateMachine().snapshot(), "history": [[3, (b"\x02" * 32).hex()]]}
    assert rep._before_install(4, snap) is False and rep.halted
    ready = rep._ready()
    storage.save(ready.persist)
    again = cl.new_replica(1, storage, now_ms=0, rng=random.Random(1))
    assert again.halted  # the halt survives a restart
    assert again.step(PrePrepare(src=0, view=0, seq=1, digest=batch_digest(()), batch=())).empty


def test_the_bound_shrinks_with_margin_and_matches_exact_tails() -> None:
    assert math.isclose(binomial_tail(10, 0.5, 6), sum(math.comb(10, k) for k in range(6, 11)) / 1024)
    assert split_attack_bound(4, 1).bound == 0.0  # everyone in every sample, q = 2f+1
    # At a = 1/3 the bound is useless at small n; with 10% Byzantine it falls as n grows.
    assert split_attack_bound(50, 16).bound == 1.0
    small = [split_attack_bound(n, n // 10).per_replica for n in (100, 400, 1600)]
    assert small[0] > small[1] > small[2]


def test_the_pooled_vrf_keys_are_the_ones_from_seed_finds() -> None:
    # The pool's table of primes saves each campaign worker ~6 s of prime search: it must hold the
    # keys from_seed derives (index 0 re-derived here, ~1.4 s; the others must be primes).
    from fabric.consensus import sortition
    from fabric.secure.vrf import VrfPrivateKey

    seeded = VrfPrivateKey.from_seed(b"sim-vrf-pool:0", 2048)
    alpha = sample_alpha("probft", 1, 2, "prepare")
    assert sortition.pooled_rsa_prover(0, 2048).prove(alpha) == seeded.prove_hash(alpha)
    assert sorted(sortition._POOL_PRIMES_2048) == [0, 1, 2, 3]
    for p_hex, q_hex in sortition._POOL_PRIMES_2048.values():
        for x in (int(p_hex, 16), int(q_hex, 16)):
            assert x.bit_length() == 1024 and all(pow(a, x - 1, x) == 1 for a in (2, 3, 5, 7, 11, 13))


def test_probft_survives_seeded_runs_and_fencing_always_holds() -> None:
    r = run_campaign(CampaignConfig(run=RunConfig(protocol="probft", ops_per_client=3), seeds=CI_SEEDS,
                                   workers=WORKERS))
    assert r.runs == CI_SEEDS
    assert r.fencing_violations == 0
    assert r.safety_violations == 0, r.failures[:3]  # n = 4: the quorums are PBFT's
    assert r.liveness_failures == 0, r.failures[:3]
    assert r.inconclusive == 0
    assert r.faults["byzantine"] > 0 and r.faults["crashes_done"] > 0 and r.faults["dropped"] > 0
    assert r.real_crypto_runs > 0.01 * CI_SEEDS
    c = r.replica_counters
    for path in ("views_entered", "checkpoints_stable", "states_installed", "decisions_adopted"):
        assert c.get(path, 0) > 0, path
    print(f"probft campaign: {r.runs} runs, {r.real_crypto_runs} with Ed25519 + RSA-FDH-VRF, "
          f"{r.messages_per_decision:.1f} messages/decision, {r.wall_s:.1f} s")


def test_a_replica_the_samples_missed_fetches_decisions_instead_of_changing_the_view() -> None:
    """n = 49, no faults: some replicas miss q votes by chance; they ask s peers for the Decision (once
    a later instance decided here, or at the request timeout), so no view change happens and a
    decision costs about a third of PBFT's messages (n + 2ns)."""
    cfg = RunConfig(protocol="probft", n=49, clients=1, ops_per_client=4, sim_options=False,
                    options={"batch_max": 1})
    r = run(cfg, 2)
    pbft = run(RunConfig(protocol="pbft", n=49, clients=1, ops_per_client=4, sim_options=False,
                         options={"batch_max": 1}), 2)
    assert r.ok and pbft.ok and r.decisions == pbft.decisions == 4
    c = r.replica_counters
    fetched = c.get("decisions_fetched", 0) + c.get("decisions_fetched_early", 0)  # at the timeout or
    assert fetched > 0 and c.get("decisions_adopted", 0) > 0  # as soon as a later instance decided
    assert c.get("view_changes_started", 0) == 0 and "ProViewChange" not in r.messages_by_type
    assert r.messages < 0.4 * pbft.messages, (r.messages, pbft.messages)


def test_a_restarted_replica_takes_back_its_own_decisions_and_checkpoints_from_peers() -> None:
    """Proofs name their author, not their sender: relayed back to their author, they count."""
    from fabric.sim import Simulation

    sim = Simulation(RunConfig(protocol="probft", clients=1, ops_per_client=6, think_ms_max=0), 1, Faults())
    assert sim.run().ok
    r3 = sim.replicas[3]
    assert r3.last_exec > r3.low >= 4 and r3._proofs and r3._stable_proof
    fresh = sim.cluster.new_replica(3, sim.cluster.new_storage(3), now_ms=sim.now, rng=random.Random(3))
    for cp in r3._stable_proof:  # the stable proof holds our own Checkpoint: 2f+1 only with it
        fresh.step(cp)
    assert fresh.low == r3.low and fresh.counters.get("own_proofs_relayed", 0) >= 1
    for seq in sorted(r3._proofs):
        fresh.step(r3._proofs[seq])
    assert fresh.counters.get("decisions_adopted", 0) > 0
