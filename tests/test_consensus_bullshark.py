"""Bullshark over a Narwhal DAG: certificates, the commit rule, ordering, GC, restarts, Byzantine authors.

The CI campaign runs 400 seeded runs of 4 validators with random faults inside
the Byzantine model (equivocating, forging, silent, lying and colluding
validators, crashes, partitions, lossy networks) and requires zero violations.
"""

from __future__ import annotations

import random

import pytest

from fabric.consensus import ClusterParams, ConsensusClient, get_protocol
from fabric.consensus.bullshark import BullsharkConfig, Certificate, Header, Vote
from fabric.consensus.bullshark import core as bullshark_core
from fabric.errors import ConfigError
from fabric.ledger.replicated import LedgerStateMachine
from fabric.ledger.state import RegisterVm
from fabric.sim import Byzantine, CampaignConfig, Faults, RunConfig, run, run_campaign

# CI's share of the campaign, as for the other protocols: 2,000 seeds, run by WORKERS processes
# (the CI machine has 2 cores; a Bullshark run costs ~45 ms of CPU, twice a PBFT one).
# jobs/simulate.py runs the long campaigns (10,000 seeds and more; README, "Consensus").
CI_SEEDS = 2_000
WORKERS = 2


def cluster(n: int = 4, **options: object) -> tuple:
    cl = get_protocol("bullshark").cluster(ClusterParams(n=n, seed=2, state_machine=LedgerStateMachine,
                                                         client_ids=("c",), signatures="hmac",
                                                         options=options))
    storages = {r: cl.new_storage(r) for r in cl.replica_ids}
    vals = {r: cl.new_replica(r, storages[r], now_ms=0, rng=random.Random(r)) for r in cl.replica_ids}
    return cl, storages, vals


def pump(vals: dict, storages: dict, queue: list, *, drop: set[int] = frozenset(),
         replies: list | None = None, steps_max: int = 100_000) -> None:
    """Deliver until quiet, persisting before sending (Ready's order)."""
    for _ in range(steps_max):
        if not queue:
            return
        to, msg = queue.pop(0)
        if to in drop or to not in vals:
            continue
        ready = vals[to].step(msg)
        if ready.persist is not None:
            storages[to].save(ready.persist)
        queue.extend(ready.messages)
        if replies is not None:
            replies.extend(ready.replies)
    raise AssertionError("did not quiesce")


def test_config_is_validated() -> None:
    assert (BullsharkConfig(id=0, n=4).f, BullsharkConfig(id=0, n=4).quorum) == (1, 3)
    assert (BullsharkConfig(id=0, n=7).f, BullsharkConfig(id=0, n=7).quorum) == (2, 5)
    for bad in ({"n": 3}, {"id": 4}, {"gc_depth": 1}, {"batch_max": 0}):
        with pytest.raises(ConfigError):
            BullsharkConfig(**{"id": 0, "n": 4, **bad}).validate()


def test_a_request_is_ordered_once_at_every_validator_and_the_dag_goes_quiet() -> None:
    cl, storages, vals = cluster()
    client = ConsensusClient("c", cl.client_policy, signer=cl.client_signer("c"))
    out = client.submit(RegisterVm(vm="a", node="dc1"), 0)
    queue, replies = [], []
    for to, req in out.sends:
        ready = vals[to].propose(req)
        queue.extend(ready.messages)
    pump(vals, storages, queue, replies=replies)
    assert all(v.position >= 1 for v in vals.values())
    ok = {r.replica for r in replies if r.status == "ok"}
    assert ok == {0, 1, 2, 3}
    assert all(v.deadline_ms() is None or not v._active() for v in vals.values())  # quiescent
    # Every validator ordered the same vertices in the same order.
    orders = {tuple(sorted(v._ordered)) for v in vals.values()}
    assert len(orders) == 1


def test_an_equivocating_author_gets_at_most_one_certificate() -> None:
    cl, _, vals = cluster()
    signer = cl.replica_signer(0)
    a = Header(src=0, round=1, batch=(), parents=()).signed(signer)
    req = cl.client_signer("c")
    from fabric.consensus import Request
    r = Request(client_id="c", request_id=1, op=RegisterVm(vm="x", node="dc1"))
    r = Request(client_id="c", request_id=1, op=r.op, signature=req.sign(r.signed_bytes))
    b = Header(src=0, round=1, batch=(r,), parents=()).signed(signer)
    votes_a = [m for v in (1, 2) for to, m in vals[v].step(a).messages if isinstance(m, Vote)]
    votes_b = [m for v in (1, 2, 3) for to, m in vals[v].step(b).messages if isinstance(m, Vote)]
    assert len(votes_a) == 2 and len(votes_b) == 1  # validators 1 and 2 vote once per (author, round)
    assert vals[1].counters["equivocation_detected"] == 1
    # A certificate for b would need a quorum (3) of votes; only validator 3 and the author gave one.
    own_b = Vote(src=0, author=0, round=1, digest=b.digest).signed(signer)
    cert = Certificate(header=b, votes=(own_b, *votes_b))
    vals[2].step(cert)
    assert vals[2].counters.get("dropped_bad_certificate") == 1


def test_a_silent_leader_costs_timeouts_not_agreement() -> None:
    """Validator 1 leads round 2's anchor and says nothing: rounds wait for it, then move on."""
    r = run(RunConfig(protocol="bullshark", ops_per_client=4), 7, Faults(byzantine=(
        Byzantine(replica=1, behaviour="silent"),)))
    assert r.ok, r.safety_violations or r.liveness_failures
    assert r.replica_counters["round_timeouts"] > 0  # anchors of the silent leader were waited for


def register_eight(cl, storages, vals) -> None:
    """Eight registrations, each carried to its end before the next (enough rounds for GC)."""
    client = ConsensusClient("c", cl.client_policy, signer=cl.client_signer("c"))
    queue: list = []
    for k in range(8):
        out = client.submit(RegisterVm(vm=f"v{k}", node="dc1"), 0)
        for to, req in out.sends:
            queue.extend(vals[to].propose(req).messages)
        pump(vals, storages, queue)
        client.abandon(0)


def test_garbage_collection_drops_old_rounds_and_a_restart_rebuilds_the_dag() -> None:
    cl, storages, vals = cluster(gc_depth=4, checkpoint_anchors=1)
    register_eight(cl, storages, vals)
    v0 = vals[0]
    assert v0.gc_round > 0 and min(v0._dag) > v0.gc_round
    assert all(c.round > v0.gc_round for c in storages[0].load().certs)
    again = cl.new_replica(0, storages[0], now_ms=0, rng=random.Random(0))
    assert again.position == v0.position and sorted(again._dag) == sorted(v0._dag)
    assert again._sm.digest() == v0._sm.digest()


def test_a_restart_after_gc_without_a_stable_checkpoint_replays_to_the_same_positions() -> None:
    """Storage keeps every round above the stable checkpoint's GC floor, whatever memory dropped:
    with no checkpoint stable yet, a restarted validator replays the DAG from round 1 and reaches
    the same positions and state (it once re-ordered what storage kept from position 0)."""
    cl, storages, vals = cluster(gc_depth=4, checkpoint_anchors=10_000)
    register_eight(cl, storages, vals)
    v0 = vals[0]
    assert v0.gc_round > 0 and v0._stable is None
    assert min(c.round for c in storages[0].load().certs) == 1  # nothing dropped from storage
    again = cl.new_replica(0, storages[0], now_ms=0, rng=random.Random(0))
    assert again.position == v0.position > 0 and again._sm.digest() == v0._sm.digest()


@pytest.mark.parametrize("behaviour", ["equivocate", "forge", "silent", "wrong-digest", "collude"])
def test_up_to_f_byzantine_validators_never_split_the_honest_ones(behaviour: str) -> None:
    cfg = RunConfig(protocol="bullshark", n=7, ops_per_client=3)
    faults = Faults(byzantine=(Byzantine(replica=0, behaviour=behaviour),
                               Byzantine(replica=3, behaviour=behaviour)))
    for seed in range(3):
        r = run(cfg, seed, faults)
        assert r.ok, (behaviour, seed, r.safety_violations[:1], r.liveness_failures[:1])


def test_ordering_histories_by_arrival_instead_of_round_and_author_is_caught(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The flattening of causal histories must be deterministic; the local arrival order is not."""
    def by_arrival(self: bullshark_core.BullsharkReplica, anchor: Certificate) -> None:
        floor = anchor.round - self.config.gc_depth
        history, stack = set(), [anchor]
        while stack:
            c = stack.pop()
            if (c.round, c.author) in self._ordered or c.digest in history:
                continue
            history.add(c.digest)
            stack.extend(p for d in c.header.parents
                         if (p := self._by_digest.get(d)) is not None and p.round > floor)
        for d in [d for d in self._by_digest if d in history]:  # dict order: when it arrived here
            self._deliver(self._by_digest[d])

    monkeypatch.setattr(bullshark_core.BullsharkReplica, "_order_history", by_arrival)
    r = run_campaign(CampaignConfig(run=RunConfig(protocol="bullshark", ops_per_client=3), seeds=30))
    assert r.safety_violations > 0


def test_bullshark_survives_seeded_runs_with_byzantine_validators() -> None:
    r = run_campaign(CampaignConfig(run=RunConfig(protocol="bullshark", ops_per_client=3), seeds=CI_SEEDS,
                                   workers=WORKERS))
    assert r.runs == CI_SEEDS
    assert r.failing_seeds == [], r.failures[:3]
    assert r.fencing_violations == 0 and r.inconclusive == 0
    f, c = r.faults, r.replica_counters
    for kind in ("dropped", "duplicated", "reordered", "partitions", "crashes_done", "byzantine"):
        assert f[kind] > 0, kind
    for path in ("anchors_committed", "round_timeouts", "parents_requested", "checkpoints_stable",
                 "states_installed", "restarts", "vertices_garbage_collected_unordered"):
        assert c.get(path, 0) > 0, path
    print(f"bullshark campaign: {r.runs} runs, {r.real_crypto_runs} with Ed25519, "
          f"{r.messages_per_decision:.1f} messages/decision, {r.wall_s:.1f} s")
