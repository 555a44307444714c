"""The simulator and what it relies on: checkers, faults, replay, client core, ledger state machine."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from fabric.consensus import (
    ClientBusyError,
    ClientConfig,
    ClientPolicy,
    ClientReply,
    ConsensusClient,
    MalformedMessageError,
    Request,
    UnknownProtocolError,
    get_protocol,
    make_signers,
    protocol_names,
)
from fabric.consensus.canonical import digest, encode
from fabric.errors import ConfigError
from fabric.ledger.client import LedgerClient
from fabric.ledger.replicated import LedgerStateMachine, ReadVm
from fabric.ledger.state import (
    AbortMigration,
    BeginMigration,
    CommitMigration,
    OpenMigration,
    Outcome,
    OwnershipLedger,
    RegisterVm,
    RemoveVm,
    VmRecord,
)
from fabric.sim import (
    Byzantine,
    CampaignConfig,
    Crash,
    Delay,
    Faults,
    HistoryOp,
    Partition,
    RunConfig,
    check_linearizable,
    check_prefixes,
    check_single_owner,
    check_vm,
    run,
    run_seed,
)
from fabric.sim.checker import model_step

ROOT = Path(__file__).resolve().parents[1]


def rec(owner: str, epoch: int, mig: tuple[int, str, str] | None = None) -> VmRecord:
    m = OpenMigration(epoch=mig[0], source=mig[1], destination=mig[2]) if mig else None
    return VmRecord(vm="v", owner=owner, epoch=epoch, migration=m)


def ok(r: VmRecord | None) -> Outcome:
    return Outcome(accepted=True, record=r)


BEGIN_N2 = BeginMigration(vm="v", source="n1", destination="n2")


def op(client: str, o: object, call: int, ret: int | None, result: Outcome | None) -> HistoryOp:
    return HistoryOp(client=client, op=o, call=call, ret=ret, result=result)


# -- the linearizability checker ----------------------------------------------------


def test_a_sequential_history_is_linearizable() -> None:
    h = [op("a", RegisterVm(vm="v", node="n1"), 1, 2, ok(rec("n1", 1))),
         op("a", BEGIN_N2, 3, 4, ok(rec("n1", 1, (2, "n1", "n2")))),
         op("b", ReadVm(vm="v"), 5, 6, ok(rec("n1", 1, (2, "n1", "n2")))),
         op("a", CommitMigration(vm="v", epoch=2), 7, 8, ok(rec("n2", 2)))]
    assert check_vm(h) == "ok"


def test_a_stale_read_after_a_completed_write_is_a_violation() -> None:
    h = [op("a", RegisterVm(vm="v", node="n1"), 1, 2, ok(rec("n1", 1))),
         op("a", BEGIN_N2, 3, 4, ok(rec("n1", 1, (2, "n1", "n2")))),
         op("b", ReadVm(vm="v"), 5, 6, ok(rec("n1", 1)))]  # misses the Begin that returned before
    assert check_vm(h) == "violation"
    violations, inconclusive = check_linearizable(h)
    assert len(violations) == 1 and "not linearizable" in violations[0] and inconclusive == 0


def test_concurrent_operations_may_take_effect_in_either_order() -> None:
    h = [op("a", RegisterVm(vm="v", node="n1"), 1, 10, ok(rec("n1", 1))),
         op("b", ReadVm(vm="v"), 2, 3, ok(None))]  # the read ran before the register took effect
    assert check_vm(h) == "ok"


def test_a_command_applied_twice_is_a_violation() -> None:
    """Both Begins succeed: only possible if the first was forgotten or the Abort applied twice."""
    h = [op("a", RegisterVm(vm="v", node="n1"), 1, 2, ok(rec("n1", 1))),
         op("a", BEGIN_N2, 3, 4, ok(rec("n1", 1, (2, "n1", "n2")))),
         op("b", BeginMigration(vm="v", source="n1", destination="n3"), 5, 6,
            ok(rec("n1", 1, (3, "n1", "n3"))))]
    assert check_vm(h) == "violation"


def test_an_unanswered_operation_may_or_may_not_have_happened() -> None:
    pending = op("a", RegisterVm(vm="v", node="n1"), 1, None, None)
    assert check_vm([pending, op("b", ReadVm(vm="v"), 2, 3, ok(rec("n1", 1)))]) == "ok"
    assert check_vm([pending, op("b", ReadVm(vm="v"), 2, 3, ok(None))]) == "ok"
    assert check_vm([pending, op("b", ReadVm(vm="v"), 2, 3, ok(rec("n2", 1)))]) == "violation"


def test_the_search_budget_makes_it_inconclusive_not_passing() -> None:
    h = [op(f"c{i}", ReadVm(vm="v"), i, 100 + i, ok(None)) for i in range(12)]
    h.append(op("x", ReadVm(vm="v"), 50, 60, ok(rec("n9", 9))))  # impossible: forces a full search
    assert check_vm(h, steps_max=50) == "inconclusive"
    assert check_vm(h) == "violation"


def test_the_model_agrees_with_the_ledger_on_random_command_sequences() -> None:
    """The checker's model is a second, independent reading of the ledger's rules."""
    rng = random.Random(5)
    nodes = ("n1", "n2", "n3")
    for _ in range(200):
        ledger, state = OwnershipLedger(), (None, 0)
        for _ in range(12):
            r = rng.random()
            e = rng.randint(0, 5)
            cmd = (RegisterVm(vm="v", node=rng.choice(nodes)) if r < 0.25 else
                   BeginMigration(vm="v", source=rng.choice(nodes), destination=rng.choice(nodes)) if r < 0.5
                   else CommitMigration(vm="v", epoch=e) if r < 0.7 else AbortMigration(vm="v", epoch=e)
                   if r < 0.85 else RemoveVm(vm="v", epoch=e))
            out = ledger.apply(cmd)
            state, got = model_step(state, cmd)
            assert got == (out.accepted, out.record), cmd


def test_single_owner_and_prefix_checks() -> None:
    assert check_single_owner([ok(rec("n1", 1)), ok(rec("n1", 1)), ok(rec("n2", 2))]) == []
    assert check_single_owner([ok(rec("n1", 1)), ok(rec("n2", 1))])
    same = {1: {(1, 0): (("c", 1), "x")}, 2: {(1, 0): (("c", 1), "x"), (2, 0): (("c", 2), "y")}}
    assert check_prefixes(same) == []
    assert check_prefixes({1: {(1, 0): (("c", 1), "x")}, 2: {(1, 0): (("c", 2), "x")}})


# -- faults, network, replay ----------------------------------------------------------


def test_faults_are_checked_against_the_protocol_fault_model() -> None:
    raft_ids = (1, 2, 3)
    with pytest.raises(ConfigError, match="outside a crash-fault"):
        Faults(byzantine=(Byzantine(replica=1, behaviour="silent"),), heal_ms=10).validate(
            replica_ids=raft_ids, fault_model="crash", faults_tolerated=1)
    with pytest.raises(ConfigError, match="only 1 are tolerated"):
        Faults(byzantine=(Byzantine(replica=0, behaviour="silent"), Byzantine(replica=1, behaviour="forge")),
               heal_ms=10).validate(replica_ids=(0, 1, 2, 3), fault_model="byzantine", faults_tolerated=1)
    with pytest.raises(ConfigError, match="unknown Byzantine behaviour"):
        Faults(byzantine=(Byzantine(replica=0, behaviour="nice"),)).validate(
            replica_ids=(0, 1, 2, 3), fault_model="byzantine", faults_tolerated=1)
    with pytest.raises(ConfigError, match="drop_rate"):
        Faults(drop_rate=0.9).validate(replica_ids=raft_ids, fault_model="crash", faults_tolerated=1)
    with pytest.raises(ConfigError, match="crash"):
        Faults(crashes=(Crash(replica=1, at_ms=50),), heal_ms=10).validate(
            replica_ids=raft_ids, fault_model="crash", faults_tolerated=1)


def test_partitions_cut_symmetric_one_way_and_flapping() -> None:
    split = Partition(kind="split", start_ms=10, end_ms=20, groups=((1, "c1"), (2, 3))).validate()
    assert split.active(10) and not split.active(20) and not split.active(9)
    assert split.cuts(1, 2) and split.cuts(2, "c1") and not split.cuts(2, 3) and not split.cuts(1, "c1")
    one_way = Partition(kind="one-way", start_ms=0, end_ms=100, groups=((1,), (2,)))
    assert one_way.cuts(1, 2) and not one_way.cuts(2, 1)
    flap = Partition(kind="split", start_ms=0, end_ms=100, groups=((1,), (2,)), flap_ms=10)
    assert [flap.active(t) for t in (0, 9, 10, 19, 20)] == [True, True, False, False, True]
    with pytest.raises(ConfigError):
        Partition(kind="split", start_ms=0, end_ms=10, groups=((1,), (1, 2))).validate()


def test_delays_stay_within_their_bounds() -> None:
    rng = random.Random(1)
    for kind in ("uniform", "exponential", "pareto"):
        d = Delay(kind=kind, base_ms=2, spread_ms=20, cap_ms=50).validate()
        samples = [d.sample(rng) for _ in range(2000)]
        assert min(samples) >= 2 and max(samples) <= 50


def test_the_same_seed_replays_the_same_run() -> None:
    cfg = CampaignConfig(run=RunConfig(protocol="pbft"), seeds=1)
    a, b = run_seed(cfg, 11), run_seed(cfg, 11)
    assert a == b and a.events > 100
    assert run_seed(cfg, 12).trace_digest != a.trace_digest


def test_a_seed_replays_identically_in_another_process_with_another_hash_seed() -> None:
    """No hash() order, global random or clock leaks in: a fresh interpreter gets the same trace."""
    code = ("from fabric.sim import CampaignConfig, RunConfig, run_seed\n"
            "for p in ('raft', 'pbft'):\n"
            "    print(run_seed(CampaignConfig(run=RunConfig(protocol=p), seeds=1), 3).trace_digest)\n")
    digests = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env)
        assert out.returncode == 0, out.stderr
        digests.append(out.stdout.split())
    cfg = lambda p: CampaignConfig(run=RunConfig(protocol=p), seeds=1)  # noqa: E731
    assert digests[0] == digests[1] == [run_seed(cfg(p), 3).trace_digest for p in ("raft", "pbft")]


def test_a_fault_free_run_completes_every_operation() -> None:
    for protocol in protocol_names():
        r = run(RunConfig(protocol=protocol, ops_per_client=4), seed=1)
        assert r.ok and r.ops_completed == r.ops_invoked == 8 and r.messages > 0, r


def test_a_core_that_raises_is_reported_as_a_safety_violation(monkeypatch: pytest.MonkeyPatch) -> None:
    from fabric.consensus.raft import core

    def broken(self: object, m: object) -> None:
        raise AssertionError("invariant broken")

    monkeypatch.setattr(core.RaftReplica, "_handle_append", broken)
    r = run(RunConfig(protocol="raft"), seed=1)
    assert not r.ok and any("AssertionError: invariant broken" in v for v in r.safety_violations)


# -- the client core ---------------------------------------------------------------------


def reply(replica: int, status: str = "ok", result: object = "r", hint: int | None = None, rid: int = 1,
          view: int = 0) -> ClientReply:
    return ClientReply(client_id="c", request_id=rid, replica=replica, status=status, result=result,
                       leader_hint=hint, view=view)


def test_the_client_follows_redirects_and_takes_the_leaders_answer() -> None:
    c = ConsensusClient("c", ClientPolicy(replicas=(1, 2, 3), replies_needed=1, broadcast_on_retry=False,
                                          sign_requests=False))
    out = c.submit(ReadVm(vm="v"), 0, read_only=True)
    assert [to for to, _ in out.sends] == [1]
    with pytest.raises(ClientBusyError):
        c.submit(ReadVm(vm="v"), 0)
    out = c.on_reply(1, reply(1, "redirect", hint=3), 5)
    assert [to for to, _ in out.sends] == [3] and out.sends[0][1].request_id == 1
    assert c.on_reply(2, reply(3), 6).done is None  # "from 3" but the channel says 2: forged
    assert c.counters["reply_forged"] == 1
    done = c.on_reply(3, reply(3), 7).done
    assert done is not None and done.result == "r" and (done.invoked_ms, done.completed_ms) == (0, 7)
    assert c.submit(ReadVm(vm="v"), 8).sends[0] == (3, c.outstanding)  # sticks with the leader


def test_a_bft_client_needs_f_plus_1_matching_answers_and_broadcasts_on_retry() -> None:
    signers, _ = make_signers(["c"], "hmac", random.Random(1))
    c = ConsensusClient("c", ClientPolicy(replicas=(0, 1, 2, 3), replies_needed=2, broadcast_on_retry=True,
                                          sign_requests=True), signer=signers["c"],
                        config=ClientConfig(retry_ms=100, attempts_max=3))
    assert c.submit(ReadVm(vm="v"), 0).sends[0][1].signature  # signed
    assert c.on_reply(0, reply(0, result="lie"), 1).done is None
    assert c.on_reply(1, reply(1, result="truth"), 1).done is None
    assert c.on_reply(1, reply(1, result="truth"), 1).done is None  # the same replica twice counts once
    assert c.tick(99).sends == ()
    assert [to for to, _ in c.tick(100).sends] == [0, 1, 2, 3]
    done = c.on_reply(2, reply(2, result="truth"), 120).done
    assert done is not None and done.result == "truth"


def test_a_client_gives_up_after_its_attempts_with_the_outcome_unknown() -> None:
    policy = ClientPolicy(replicas=(1,), replies_needed=1, broadcast_on_retry=False, sign_requests=False)
    c = ConsensusClient("c", policy, config=ClientConfig(retry_ms=10, attempts_max=2))
    c.submit(ReadVm(vm="v"), 0)
    assert c.tick(10).sends and c.deadline_ms() == 30  # backoff doubles
    done = c.tick(30).done
    assert done is not None and done.status == "gave-up" and c.outstanding is None


def test_the_ledger_client_builds_each_operation() -> None:
    c = LedgerClient("c", ClientPolicy(replicas=(1,), replies_needed=1, broadcast_on_retry=False,
                                       sign_requests=False))
    sent = c.begin("vm", "a", "b", 0).sends[0][1]
    assert sent.op == BeginMigration(vm="vm", source="a", destination="b") and not sent.read_only
    c.on_reply(1, ClientReply(client_id="c", request_id=1, replica=1, status="ok", result="x"), 1)
    assert c.read("vm", 2).sends[0][1].read_only


# -- the replicated state machine ------------------------------------------------------------


def test_the_state_machine_applies_each_request_once() -> None:
    sm = LedgerStateMachine()
    r1 = Request(client_id="c", request_id=1, op=RegisterVm(vm="v", node="n1"))
    first = sm.apply(r1)
    assert first.accepted and sm.apply(r1) == first  # a retry: same result, not "already exists"
    sm.apply(Request(client_id="c", request_id=2, op=BeginMigration(vm="v", source="n1", destination="n2")))
    stale = sm.apply(r1)
    assert not stale.accepted and "older" in stale.reason
    assert sm.cached_result(r1)[0] and not sm.cached_result(Request(client_id="c", request_id=3, op=None))[0]
    copy = LedgerStateMachine()
    copy.restore(json.loads(json.dumps(sm.snapshot())))
    assert copy.digest() == sm.digest() and copy.apply(r1) == stale


def test_the_state_machine_rejects_junk_operations_without_raising() -> None:
    sm = LedgerStateMachine()
    for junk in (None, "register", RegisterVm(vm=["not", "hashable"], node="n1"),  # type: ignore[arg-type]
                 CommitMigration(vm="v", epoch="2")):  # type: ignore[arg-type]
        out = sm.apply(Request(client_id="c", request_id=1 + len(sm.snapshot()["sessions"]), op=junk))
        assert not out.accepted
    assert sm.query(Request(client_id="c", request_id=9, op=RegisterVm(vm="v", node="n"))).accepted is False


def test_sessions_are_bounded_least_recently_active_first() -> None:
    sm = LedgerStateMachine(sessions_max=2)
    for client in ("a", "b", "c"):
        sm.apply(Request(client_id=client, request_id=1, op=ReadVm(vm="v")))
    assert [s[0] for s in sm.snapshot()["sessions"]] == ["b", "c"]


# -- canonical bytes, signatures, registry ------------------------------------------------------


def test_canonical_encoding_is_exact_and_refuses_the_unknown() -> None:
    assert encode((1, "1", b"1", True, None)) != encode((1, 1, b"1", True, None))
    assert encode({"b": 1, "a": 2}) == encode({"a": 2, "b": 1})
    assert digest(RegisterVm(vm="v", node="n")) != digest(RemoveVm(vm="v", epoch=0))
    with pytest.raises(MalformedMessageError):
        encode(object())
    with pytest.raises(MalformedMessageError):
        encode(1.5)


@pytest.mark.parametrize("scheme", ["ed25519", "hmac"])
def test_signatures_verify_only_for_their_signer_and_payload(scheme: str) -> None:
    signers, ring = make_signers([0, 1], scheme, random.Random(3))
    sig = signers[0].sign(b"payload")
    assert ring.verify(0, b"payload", sig)
    assert not ring.verify(1, b"payload", sig) and not ring.verify(0, b"payload!", sig)
    assert not ring.verify(7, b"payload", sig)  # unknown identity
    again, _ = make_signers([0, 1], scheme, random.Random(3))
    assert again[0].sign(b"payload") == sig  # keys come from the seed


def test_the_registry_names_its_protocols() -> None:
    assert {"raft", "pbft"} <= set(protocol_names())
    assert get_protocol("pbft").faults_tolerated(7) == 2 and get_protocol("raft").faults_tolerated(5) == 2
    with pytest.raises(UnknownProtocolError, match="known: "):
        get_protocol("paxos")


# -- the job ---------------------------------------------------------------------------------------


def test_the_simulate_job_reports_and_exits_by_result(capsys: pytest.CaptureFixture[str]) -> None:
    from jobs.simulate import main

    assert main(["--protocol", "raft", "--seeds", "5", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["runs"] == 5 and summary["safety_violations"] == 0 and summary["messages_per_decision"] > 0
    assert main(["--protocol", "raft", "--faults", "byzantine", "--seeds", "1", "--json"]) == 2
    capsys.readouterr()
    assert main(["--protocol", "pbft", "--replay", "4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["seed"] == 4
