"""Raft's core: roles, elections, replication, reads, membership, bounds, bad input; its storage."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from fabric.consensus import MembershipChangeError, NotLeaderError, Request
from fabric.consensus.errors import ConsensusStorageError
from fabric.consensus.raft import (
    Append,
    AppendResp,
    Entry,
    FileRaftStorage,
    HardState,
    MemoryRaftStorage,
    RaftConfig,
    RaftPersist,
    RaftReplica,
    Snapshot,
    Vote,
    VoteResp,
)
from fabric.errors import ConfigError
from fabric.ledger.replicated import LedgerStateMachine, op_from_dict, op_to_dict
from fabric.ledger.state import RegisterVm
from fabric.sim.script import ScriptEnv


def cluster(n: int = 3, **options: object) -> ScriptEnv:
    env = ScriptEnv()
    opts = " ".join(f"{k}={str(v).lower()}" for k, v in {"election_ms": 100, "heartbeat_ms": 10,
                                                          **options}.items())
    env.run(f"add-nodes {n} {opts}")
    return env


def elect(env: ScriptEnv, rid: int = 1) -> None:
    env.command(["campaign", str(rid)])
    env.command(["stabilize"])
    assert env.replicas[rid].role == "leader"


def req(n: int, vm: str = "vm-1", client: str = "c") -> Request:
    return Request(client_id=client, request_id=n, op=RegisterVm(vm=vm, node="dc1"))


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="election_ms"):
        RaftConfig(id=1, voters=(1, 2, 3), election_ms=10, heartbeat_ms=30).validate()
    with pytest.raises(ConfigError, match="voters"):
        RaftConfig(id=1, voters=(3, 1)).validate()
    with pytest.raises(ConfigError, match="entries_per_msg_max"):
        RaftConfig(id=1, voters=(1,), entries_per_msg_max=0).validate()


def test_a_single_replica_elects_itself_and_commits_alone() -> None:
    r = RaftReplica(RaftConfig(id=1, voters=(1,)), state_machine=LedgerStateMachine(), rng=random.Random(1))
    ready = r.tick(10_000)
    assert r.role == "leader" and ready.persist is not None
    ready = r.propose(req(1))
    assert [c.index for c in ready.committed] == [2]
    assert ready.replies[0].status == "ok" and ready.replies[0].result.accepted


def test_votes_are_persisted_in_the_same_ready_that_sends_them() -> None:
    """Persist before send: a granted vote leaves only with the vote it records."""
    env = cluster()
    env.command(["campaign", "1"])
    env.command(["stabilize", "2", "3"])  # pre-votes answered
    env.command(["deliver-msgs", "1"])  # 1 becomes candidate, sends Vote
    votes = [m for _, to, m in env.queue if isinstance(m, Vote)]
    assert votes and env.storages[1].load().hard_state == HardState(term=1, vote=1)
    ready = env.replicas[2].step(votes[0])
    granted = [m for _, m in ready.messages if isinstance(m, VoteResp) and m.granted]
    assert granted and ready.persist is not None and ready.persist.hard_state == HardState(term=1, vote=1)


def test_followers_redirect_clients_to_the_leader() -> None:
    env = cluster()
    elect(env)
    env.command(["tick-heartbeat", "1"])
    env.command(["stabilize"])
    ready = env.replicas[2].propose(req(1))
    assert ready.replies[0].status == "redirect" and ready.replies[0].leader_hint == 1
    assert not ready.messages


def test_a_retried_request_is_applied_once_and_answered_again() -> None:
    env = cluster()
    elect(env)
    first = env.replicas[1].propose(req(1))
    env._handle(1, first, "")
    env.command(["stabilize"])
    again = env.replicas[1].propose(req(1))
    assert not again.messages and again.replies[0].status == "ok"
    assert again.replies[0].result.accepted  # the first result, not "already exists"
    assert len(env.replicas[1].log.entries()) == 2  # no-op and the one request


def test_a_cut_off_leader_refuses_proposals_beyond_its_backlog_bound() -> None:
    env = cluster(uncommitted_entries_max=3)
    elect(env)
    env.command(["partition", "1", "|", "2", "3"])
    statuses = [env.replicas[1].propose(req(i, vm=f"vm-{i}")).replies for i in range(1, 6)]
    assert [s[0].status for s in statuses if s] == ["retry", "retry"]
    assert env.replicas[1].log.last_index == 1 + 3  # the committed no-op, then 3 uncommitted at most
    assert env.replicas[1].counters["proposal_refused_backlog"] == 2


def test_peer_junk_is_counted_and_dropped_never_raised() -> None:
    env = cluster()
    elect(env)
    leader = env.replicas[1]
    assert leader.step("not a message").empty
    bad = object.__new__(Append)  # as a decoder might build it, skipping the constructor's checks
    for name, value in dict(src=2, term=1, prev_index=-5, prev_term=0, entries=(), commit=0).items():
        object.__setattr__(bad, name, value)
    assert leader.step(bad).empty
    assert leader.step(AppendResp(src=1, term=1, success=True, index=1)).empty  # from itself
    assert leader.step(AppendResp(src=9, term=1, success=True, index=1)).empty  # not a member
    assert leader.step(AppendResp(src=2, term=1, success=True, index=99)).empty  # beyond the log
    c = leader.counters
    assert c["dropped_unknown_type"] == 1 and c["dropped_malformed"] == 1 and c["dropped_from_self"] == 1
    assert c["dropped_not_a_follower"] == 1 and c["dropped_ack_beyond_log"] == 1
    assert leader.role == "leader"


def test_messages_check_their_fields_when_built() -> None:
    from fabric.consensus import MalformedMessageError

    with pytest.raises(MalformedMessageError):
        Append(src=1, term=1, prev_index=0, prev_term=0, commit=0,
               entries=(Entry(term=1, index=2),))  # does not follow prev_index
    with pytest.raises(MalformedMessageError):
        Entry(term=0, index=1)
    with pytest.raises(MalformedMessageError):
        Snapshot(index=1, term=1, voters=(2, 1), data={})


def test_impossible_role_transitions_fail_loudly() -> None:
    env = cluster()
    with pytest.raises(AssertionError, match="invalid transition follower -> leader"):
        env.replicas[2]._become_leader()
    elect(env)
    with pytest.raises(AssertionError, match="invalid transition leader -> candidate"):
        env.replicas[1]._become_candidate()


def test_time_never_goes_backwards() -> None:
    env = cluster()
    env.replicas[1].tick(50)
    with pytest.raises(AssertionError, match="backwards"):
        env.replicas[1].tick(40)


def test_membership_changes_need_the_leader_and_one_replica_at_a_time() -> None:
    env = cluster()
    elect(env)
    with pytest.raises(NotLeaderError) as e:
        env.replicas[2].change_membership((1, 2, 3, 4))
    assert e.value.leader_hint == 1
    with pytest.raises(MembershipChangeError, match="exactly one"):
        env.replicas[1].change_membership((1, 2, 3, 4, 5))
    env.command(["tick-heartbeat", "1"])
    env.command(["stabilize"])
    env.replicas[1].change_membership((1, 2, 3, 4))
    with pytest.raises(MembershipChangeError, match="not committed"):
        env.replicas[1].change_membership((1, 2, 3))


def test_a_restarted_replica_keeps_term_vote_and_log_but_not_its_commit_index() -> None:
    env = cluster()
    elect(env)
    env._handle(1, env.replicas[1].propose(req(1)), "")
    env.command(["stabilize"])
    env.command(["tick-heartbeat", "1"])
    env.command(["stabilize"])
    env.command(["crash", "2"])
    env.command(["restart", "2"])
    r2 = env.replicas[2]
    assert (r2.term, r2.vote, r2.log.last_index, r2.commit) == (1, 1, 2, 0)
    env.command(["tick-heartbeat", "1"])
    env.command(["stabilize"])
    assert r2.commit == 2 and r2._sm.ledger.record("vm-1") is not None  # re-applied from its own log


def test_deadline_tells_the_shell_when_to_tick() -> None:
    env = cluster()
    follower = env.replicas[2]
    d = follower.deadline_ms()
    assert d is not None and 100 <= d < 200
    assert follower.tick(d - 1).empty and follower.role == "follower"
    follower.tick(d)
    assert follower.role == "pre-candidate"


# -- storage ------------------------------------------------------------------


def _entries(first: int, last: int, term: int = 1) -> tuple[Entry, ...]:
    return tuple(Entry(term=term, index=i, request=req(i, vm=f"vm-{i}")) for i in range(first, last + 1))


def _file(tmp_path: Path) -> FileRaftStorage:
    return FileRaftStorage(tmp_path, op_to_dict=op_to_dict, op_from_dict=op_from_dict)


@pytest.mark.parametrize("kind", ["memory", "file"])
def test_storage_applies_truncation_entries_snapshot_and_hard_state(kind: str, tmp_path: Path) -> None:
    s = MemoryRaftStorage() if kind == "memory" else _file(tmp_path)
    s.save(RaftPersist(hard_state=HardState(term=1, vote=2), entries=_entries(1, 5)))
    s.save(RaftPersist(hard_state=HardState(term=2, vote=None), truncate_from=4,
                       entries=_entries(4, 6, term=2)))
    snap = Snapshot(index=3, term=1, voters=(1, 2, 3), data={"x": 1})
    s.save(RaftPersist(snapshot=snap))
    if kind == "file":
        s = _file(tmp_path)  # what a restart reads back from disk
    d = s.load()
    assert d.hard_state == HardState(term=2, vote=None)
    assert d.snapshot == snap
    assert [(e.index, e.term) for e in d.entries] == [(4, 2), (5, 2), (6, 2)]
    assert d.entries[0].request == req(4, vm="vm-4")


def test_file_storage_drops_a_torn_last_record_and_continues(tmp_path: Path) -> None:
    s = _file(tmp_path)
    s.save(RaftPersist(hard_state=HardState(term=3, vote=1), entries=_entries(1, 3)))
    with open(tmp_path / "log.jsonl", "ab") as f:
        f.write(b'{"crc": 123, "e": "{\\"i\\": 4, \\"t\\"')  # a crash mid-append
    again = _file(tmp_path)
    assert [e.index for e in again.load().entries] == [1, 2, 3]
    again.save(RaftPersist(entries=_entries(4, 4)))
    assert [e.index for e in _file(tmp_path).load().entries] == [1, 2, 3, 4]


def test_file_storage_refuses_corruption_before_the_tail(tmp_path: Path) -> None:
    s = _file(tmp_path)
    s.save(RaftPersist(entries=_entries(1, 3)))
    lines = (tmp_path / "log.jsonl").read_bytes().split(b"\n")
    lines[1] = lines[1].replace(b"vm-2", b"vm-X")  # a flipped byte: the CRC no longer matches
    (tmp_path / "log.jsonl").write_bytes(b"\n".join(lines))
    with pytest.raises(ConsensusStorageError, match="line 2"):
        _file(tmp_path)


def test_a_replica_restarts_from_file_storage_after_a_crash(tmp_path: Path) -> None:
    """Drive a 3-replica group whose replica 3 persists to disk; kill it; rebuild it from disk."""
    env = cluster(snapshot_entries=3)
    env.storages[3] = _file(tmp_path)
    elect(env)
    for i in range(1, 6):
        env._handle(1, env.replicas[1].propose(req(i, vm=f"vm-{i}")), "")
        env.command(["stabilize"])
    env.command(["tick-heartbeat", "1"])
    env.command(["stabilize"])
    before = env.replicas[3]._sm.snapshot()
    env.command(["crash", "3"])
    env.storages[3] = _file(tmp_path)  # a new process: only the files remain
    env.command(["restart", "3"])
    r3 = env.replicas[3]
    assert r3.log.snapshot_index >= 3 and r3.term == 1
    env.command(["tick-heartbeat", "1"])
    env.command(["stabilize"])
    assert r3._sm.snapshot() == before and r3.applied == env.replicas[1].applied
