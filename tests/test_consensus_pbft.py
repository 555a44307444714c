"""PBFT's core: signatures on everything, batching, view change checks, restart without equivocation."""

from __future__ import annotations

import dataclasses
import random

import pytest

from fabric.consensus import ClusterParams, ConsensusClient, Request, get_protocol
from fabric.consensus.canonical import encode
from fabric.consensus.pbft import (
    NewView,
    PbftConfig,
    Prepare,
    PrePrepare,
    batch_digest,
)
from fabric.errors import ConfigError
from fabric.ledger.replicated import LedgerStateMachine, ReadVm
from fabric.ledger.state import RegisterVm
from fabric.sim.script import ScriptEnv


def cluster(**options: object) -> ScriptEnv:
    env = ScriptEnv()
    opts = " ".join(f"{k}={v}" for k, v in {"request_timeout_ms": 100, "view_change_timeout_ms": 100,
                                             **options}.items())
    env.run(f"add-nodes 4 protocol=pbft {opts}")
    return env


def signed_request(env: ScriptEnv, client: str, rid: int, op: object) -> Request:
    r = Request(client_id=client, request_id=rid, op=op)
    return dataclasses.replace(r, signature=env.cluster.client_signer(client).sign(encode(r.signed_part())))


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="n="):
        PbftConfig(id=0, n=3).validate()
    with pytest.raises(ConfigError, match="watermark_window"):
        PbftConfig(id=0, n=4, checkpoint_interval=4, watermark_window=6).validate()
    with pytest.raises(ConfigError, match="id"):
        PbftConfig(id=4, n=4).validate()
    assert (PbftConfig(id=0, n=4).f, PbftConfig(id=0, n=4).quorum) == (1, 3)
    assert (PbftConfig(id=0, n=7).f, PbftConfig(id=0, n=7).quorum) == (2, 5)
    assert (PbftConfig(id=0, n=5).f, PbftConfig(id=0, n=5).quorum) == (1, 4)


def test_normal_case_with_real_ed25519_signatures_and_f_plus_1_replies() -> None:
    spec = get_protocol("pbft")
    cl = spec.cluster(ClusterParams(n=4, seed=7, state_machine=LedgerStateMachine, client_ids=("c1",),
                                    signatures="ed25519"))
    storages = {r: cl.new_storage(r) for r in cl.replica_ids}
    replicas = {r: cl.new_replica(r, storages[r], now_ms=0, rng=random.Random(r)) for r in cl.replica_ids}
    client = ConsensusClient("c1", cl.client_policy, signer=cl.client_signer("c1"))
    queue: list[tuple[int, object]] = []
    done = []

    def handle(rid: int, ready: object) -> None:
        if ready.persist is not None:
            storages[rid].save(ready.persist)
        queue.extend(ready.messages)
        for reply in ready.replies:
            out = client.on_reply(rid, reply, 0)
            if out.done:
                done.append(out.done)

    for op, read_only in ((RegisterVm(vm="a", node="dc1"), False), (ReadVm(vm="a"), True)):
        out = client.submit(op, 0, read_only=read_only)
        for to, request in out.sends:
            handle(to, replicas[to].propose(request))
        while queue:
            to, msg = queue.pop(0)
            handle(to, replicas[to].step(msg))
    assert [d.result.record.owner for d in done] == ["dc1", "dc1"]
    assert all(r.last_exec == 2 for r in replicas.values())
    assert not any("bad_signature" in k for r in replicas.values() for k in r.counters)


def test_tampered_and_forged_messages_fail_their_signature_check() -> None:
    env = cluster()
    backup = env.replicas[1]
    good = Prepare(src=2, view=0, seq=1, digest=b"d" * 32).signed(env.cluster.replica_signer(2))
    tampered = dataclasses.replace(good, digest=b"e" * 32)  # the signature no longer covers the content
    claimed = Prepare(src=2, view=0, seq=1, digest=b"e" * 32)  # "from 2", signed with 3's key
    forged = dataclasses.replace(claimed, signature=env.cluster.replica_signer(3).sign(claimed.payload))
    for msg in (tampered, forged):
        assert backup.step(msg).empty
    assert backup.counters["dropped_bad_signature"] == 2
    assert backup.step(good).empty  # valid: kept until the PrePrepare comes
    assert backup.counters["dropped_bad_signature"] == 2 and 2 in backup._slots[1].prepares


def test_signing_as_someone_else_is_a_local_bug() -> None:
    env = cluster()
    with pytest.raises(AssertionError):
        Prepare(src=2, view=0, seq=1, digest=b"d" * 32).signed(env.cluster.replica_signer(3))


def test_a_primary_cannot_invent_client_requests() -> None:
    env = cluster()
    invented = Request(client_id="c", request_id=1, op=RegisterVm(vm="x", node="evil"))  # no client signature
    pp = PrePrepare(src=0, view=0, seq=1, digest=batch_digest((invented,)), batch=(invented,))
    pp = pp.signed(env.cluster.replica_signer(0))
    ready = env.replicas[1].step(pp)
    assert not ready.messages and env.replicas[1].counters["dropped_forged_request"] == 1


def test_a_batch_that_does_not_hash_to_its_digest_is_refused() -> None:
    env = cluster()
    r = signed_request(env, "c", 1, RegisterVm(vm="x", node="dc1"))
    pp = PrePrepare(src=0, view=0, seq=1, digest=b"z" * 32, batch=(r,)).signed(env.cluster.replica_signer(0))
    assert env.replicas[2].step(pp).empty and env.replicas[2].counters["dropped_bad_batch"] == 1


def test_a_restarted_backup_never_prepares_a_second_digest_for_the_same_slot() -> None:
    """It persisted its Prepare before sending it, so after a crash it still refuses the other digest."""
    env = cluster()
    r1 = signed_request(env, "c", 1, RegisterVm(vm="x", node="dc1"))
    r2 = signed_request(env, "c2", 1, RegisterVm(vm="y", node="dc1"))
    primary_signer = env.cluster.replica_signer(0)
    pp1 = PrePrepare(src=0, view=0, seq=1, digest=batch_digest((r1,)), batch=(r1,)).signed(primary_signer)
    pp2 = PrePrepare(src=0, view=0, seq=1, digest=batch_digest((r2,)), batch=(r2,)).signed(primary_signer)
    env._handle(1, env.replicas[1].step(pp1), "")
    env.command(["crash", "1"])
    env.command(["restart", "1"])
    ready = env.replicas[1].step(pp2)  # a Byzantine primary's second version
    assert not ready.messages and env.replicas[1].counters["equivocation_detected"] == 1
    ready = env.replicas[1].step(pp1)  # the original is still acceptable (it was lost in the crash)
    assert [type(m).__name__ for _, m in ready.messages] == ["Prepare"] * 3


def test_a_new_view_that_does_not_follow_from_its_view_changes_is_refused() -> None:
    env = cluster()
    env.run("propose 0 register vm-1 dc1\nstabilize\npartition 0 | 1 2 3\n"
            "propose 1,2,3 client=c2 read vm-1\nstabilize\ntimeout 1\ntimeout 2\ntimeout 3\n")
    env.command(["deliver-msgs", "1"])  # 1 gathers the view changes and sends its NewView
    new_view = next(m for _, to, m in env.queue if isinstance(m, NewView) and to == 2)
    assert new_view.pre_prepares  # sequence 1 prepared in view 0 and must be carried over
    # Drop the PrePrepares the view changes imply and re-sign: a valid signature on a lie.
    forged = dataclasses.replace(new_view, pre_prepares=()).signed(env.cluster.replica_signer(1))
    backup = env.replicas[2]
    assert backup.mode == "view-change"
    assert backup.step(forged).empty
    assert backup.counters["dropped_bad_new_view"] == 1 and backup.mode == "view-change"
    backup.step(new_view)
    assert backup.mode == "normal" and backup.view == 1


def test_stable_checkpoints_bound_the_log() -> None:
    env = cluster(checkpoint_interval=2, watermark_window=4, batch_max=1)
    for i in range(1, 10):
        env.run(f"propose 0 client=c{1 + i % 3} register vm-{i} dc1\nstabilize\n")
    for r in env.replicas.values():
        assert r.low == 8 and r.last_exec == 9
        assert all(seq > r.low for seq in r._slots) and len(r._slots) <= 4
        assert all(seq >= r.low for seq in r._own_checkpoints)
    beyond = Prepare(src=2, view=0, seq=8 + 5, digest=b"d" * 32).signed(env.cluster.replica_signer(2))
    assert env.replicas[1].step(beyond).empty  # above the high watermark: ignored
    assert 13 not in env.replicas[1]._slots


def test_a_full_request_backlog_answers_retry() -> None:
    env = cluster(requests_pending_max=2)
    env.command(["partition", "0", "|", "1", "2", "3"])
    replies = []
    for i, client in enumerate(("c", "c1", "c2")):
        req = signed_request(env, client, 1, RegisterVm(vm=f"v{i}", node="dc1"))
        replies += env.replicas[1].propose(req).replies
    assert [r.status for r in replies] == ["retry"]
    assert env.replicas[1].counters["request_refused_backlog"] == 1


@pytest.mark.parametrize("behaviour", ["equivocate", "forge", "silent", "wrong-digest", "collude"])
def test_up_to_f_byzantine_replicas_never_split_the_honest_ones(behaviour: str) -> None:
    """n = 7, f = 2 lying the same way (the primary of view 0 among them): honest replicas agree."""
    from fabric.sim import Byzantine, Faults, RunConfig, run

    cfg = RunConfig(protocol="pbft", n=7, ops_per_client=3)
    faults = Faults(byzantine=(Byzantine(replica=0, behaviour=behaviour),
                               Byzantine(replica=3, behaviour=behaviour)))
    for seed in range(3):
        r = run(cfg, seed, faults)
        assert r.ok, (behaviour, seed, r.safety_violations[:1], r.liveness_failures[:1])
        assert r.decisions == 2 * 3 and not r.fencing_violations
