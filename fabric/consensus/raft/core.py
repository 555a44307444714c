"""The Raft replica: a deterministic, sans-IO state machine (etcd-io/raft's shape).

Roles are explicit: becoming follower, pre-candidate, candidate or leader swaps
the `_step_role` and `_tick_role` functions, and `_TRANSITIONS` lists the only
legal moves (anything else asserts). Features: pre-vote and check-quorum (a
partitioned replica cannot disrupt a healthy leader), log replication with
per-follower flow control, commit by quorum of the current term, linearizable
reads by read-index, compaction by snapshot and InstallSnapshot for laggards,
and one-at-a-time membership change (Raft dissertation 4.1: a configuration
takes effect when its entry is appended; the next waits for its commit).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fabric.consensus.api import (
    ClientReply,
    Committed,
    NodeId,
    Outbox,
    Ready,
    ReplicaStatus,
    Request,
    StateMachine,
)
from fabric.consensus.errors import MalformedMessageError, MembershipChangeError, NotLeaderError
from fabric.consensus.raft.log import RaftLog
from fabric.consensus.raft.messages import (
    ENTRIES_PER_MSG_LIMIT,
    MESSAGE_TYPES,
    VOTERS_LIMIT,
    Append,
    AppendResp,
    Entry,
    Heartbeat,
    HeartbeatResp,
    InstallSnapshot,
    PreVote,
    PreVoteResp,
    Snapshot,
    Vote,
    VoteResp,
)
from fabric.consensus.raft.storage import HardState, RaftDurable, RaftPersist
from fabric.errors import ConfigError

FOLLOWER, PRE_CANDIDATE, CANDIDATE, LEADER = "follower", "pre-candidate", "candidate", "leader"
# The only role changes Raft makes; etcd panics on anything else, we assert.
_TRANSITIONS: dict[str, frozenset[str]] = {
    FOLLOWER: frozenset({FOLLOWER, PRE_CANDIDATE, CANDIDATE}),
    PRE_CANDIDATE: frozenset({FOLLOWER, PRE_CANDIDATE, CANDIDATE}),
    CANDIDATE: frozenset({FOLLOWER, PRE_CANDIDATE, CANDIDATE, LEADER}),
    LEADER: frozenset({FOLLOWER}),
}

# Per-follower replication states (etcd's Progress): probe one message at a
# time until the follower's log matches, then stream within a window, or wait
# for a snapshot to land.
PROBE, REPLICATE, SNAPSHOT = "probe", "replicate", "snapshot"


@dataclass(frozen=True, kw_only=True)
class RaftConfig:
    """One replica's settings; `validate()` says how to fix a bad value."""

    id: NodeId
    # The bootstrap membership; () for a replica that joins an existing group
    # (it learns the voters from the leader's log or snapshot).
    voters: tuple[NodeId, ...]
    # Election timeouts are drawn from [election_ms, 2*election_ms) (Raft 5.2);
    # 10 heartbeats per election timeout, as etcd's defaults (10 and 1 ticks).
    election_ms: int = 300
    heartbeat_ms: int = 30
    pre_vote: bool = True
    check_quorum: bool = True
    # Entries in one Append: keeps a catch-up message small.
    entries_per_msg_max: int = 64
    # Appends in flight to one follower before waiting for acks (etcd MaxInflightMsgs=256;
    # the ledger's rate is far lower).
    inflight_msgs_max: int = 16
    # Proposals a leader accepts beyond its commit index; more get "retry"
    # (bounds the log a partitioned leader can grow).
    uncommitted_entries_max: int = 256
    # Read-index requests waiting for a quorum or for their index to apply.
    reads_pending_max: int = 256
    # Applied entries between snapshots (log compaction).
    snapshot_entries: int = 1024

    def validate(self) -> RaftConfig:
        """Return self, or raise ConfigError naming the bad value and its allowed range."""
        def bad(name: str, why: str) -> ConfigError:
            """The error naming the bad value."""
            return ConfigError(f"raft config {name}={getattr(self, name)!r}: {why}")
        if type(self.id) is not int or self.id < 0:
            raise bad("id", "use an int >= 0")
        if len(self.voters) > VOTERS_LIMIT or list(self.voters) != sorted(set(self.voters)):
            raise bad("voters", f"use sorted distinct ids, at most {VOTERS_LIMIT}")
        if not 2 <= self.heartbeat_ms <= 60_000:
            raise bad("heartbeat_ms", "use 2..60000 ms")
        if not 2 * self.heartbeat_ms <= self.election_ms <= 600_000:
            raise bad("election_ms", "use 2*heartbeat_ms..600000 ms")
        if not 1 <= self.entries_per_msg_max <= ENTRIES_PER_MSG_LIMIT:
            raise bad("entries_per_msg_max", f"use 1..{ENTRIES_PER_MSG_LIMIT}")
        if not 1 <= self.inflight_msgs_max <= 4096:
            raise bad("inflight_msgs_max", "use 1..4096")
        if not 1 <= self.uncommitted_entries_max <= 1_000_000:
            raise bad("uncommitted_entries_max", "use 1..1000000")
        if not 1 <= self.reads_pending_max <= 1_000_000:
            raise bad("reads_pending_max", "use 1..1000000")
        if not 2 <= self.snapshot_entries <= 10_000_000:
            raise bad("snapshot_entries", "use 2..10000000")
        return self


class _Progress:
    """The leader's view of one follower."""

    __slots__ = ("acked_ms", "active", "inflight", "match", "next", "probe_sent", "snapshot_index",
                 "snapshot_sent_ms", "state")

    def __init__(self, next_index: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = PROBE
        self.probe_sent = False
        self.inflight: deque[int] = deque()  # last index of each Append in flight (REPLICATE)
        self.snapshot_index = 0
        self.snapshot_sent_ms = 0
        self.active = False  # heard from since the last check-quorum round
        self.acked_ms = 0  # when it last acknowledged new entries

    def free_up_to(self, index: int) -> None:
        """Forget in-flight Appends acknowledged by an ack of `index`."""
        while self.inflight and self.inflight[0] <= index:
            self.inflight.popleft()


class _PendingRead:
    __slots__ = ("acks", "index", "request", "seq")

    def __init__(self, seq: int, index: int, request: Request, me: NodeId) -> None:
        self.seq = seq
        self.index = index
        self.request = request
        self.acks = {me}


class RaftReplica:
    """One Raft replica (see the module doc and fabric.consensus.api for how to drive it)."""

    def __init__(self, config: RaftConfig, *, state_machine: StateMachine, rng: random.Random,
                 durable: RaftDurable | None = None, now_ms: int = 0) -> None:
        self.config = config.validate()
        self._id = config.id
        self._sm = state_machine
        self._rng = rng
        self._now = now_ms
        self._out = Outbox()
        self.counters: dict[str, int] = {}

        durable = durable or RaftDurable(hard_state=HardState(), snapshot=None, entries=())
        self.term = durable.hard_state.term
        self.vote: NodeId | None = durable.hard_state.vote
        snap = durable.snapshot
        self._snapshot: Snapshot | None = snap
        if snap is not None:
            self._sm.restore(snap.data)
            self.log = RaftLog(snap.index, snap.term)
            self._base_voters: tuple[NodeId, ...] = snap.voters
        else:
            self.log = RaftLog()
            self._base_voters = config.voters
        # (index, voters) of each membership entry after the snapshot, oldest first.
        self._conf_entries: list[tuple[int, tuple[NodeId, ...]]] = []
        for e in durable.entries:
            self.log.append(e)
            if e.voters is not None:
                self._conf_entries.append((e.index, e.voters))
        # Not persisted: a restarted replica learns the commit index from the leader.
        self.commit = self.log.snapshot_index
        self.applied = self.log.snapshot_index

        self.role = FOLLOWER
        self.leader: NodeId | None = None
        self._step_role: Callable[[Any], None] = self._step_follower
        self._tick_role: Callable[[], None] = self._tick_election
        self._leader_contact_ms = -(1 << 62)
        self._election_deadline = 0
        self._heartbeat_deadline = 0
        self._check_quorum_deadline = 0
        self._votes: dict[NodeId, bool] = {}
        self._progress: dict[NodeId, _Progress] = {}
        self._inflight_requests: dict[tuple[str, int], int] = {}  # leader: request -> log index
        self._read_seq = 0
        self._reads: deque[_PendingRead] = deque()
        self._reads_waiting: list[Request] = []  # until the leader commits in its term
        # What this event changed that must be persisted.
        self._hs_dirty = False
        self._unstable_from: int | None = None
        self._truncate_from: int | None = None
        self._new_snapshot: Snapshot | None = None
        self._reset_election_deadline()

    # -- the sans-IO interface -------------------------------------------------

    @property
    def id(self) -> NodeId:
        """This replica's id."""
        return self._id

    @property
    def voters(self) -> tuple[NodeId, ...]:
        """The membership in effect: the latest in the log, else the snapshot's or the bootstrap one."""
        return self._conf_entries[-1][1] if self._conf_entries else self._base_voters

    def step(self, msg: Any) -> Ready:
        """Take a peer's message; malformed ones are dropped and counted."""
        if type(msg) not in MESSAGE_TYPES:
            self._count("dropped_unknown_type")
            return self._ready()
        try:
            msg.check()
        except MalformedMessageError:
            self._count("dropped_malformed")
            return self._ready()
        if msg.src == self._id:
            self._count("dropped_from_self")
            return self._ready()
        self._step(msg)
        return self._ready()

    def tick(self, now_ms: int) -> Ready:
        """Let time pass to `now_ms` and fire what is due."""
        assert now_ms >= self._now, f"time went backwards: {now_ms} < {self._now}"
        self._now = now_ms
        self._tick_role()
        return self._ready()

    def propose(self, request: Request) -> Ready:
        """A client's command: appended by the leader, redirected by others."""
        if self.role != LEADER:
            self._reply(request, "redirect")
            return self._ready()
        found, result = self._sm.cached_result(request)
        if found:  # a retry of a request already applied: answer it again
            self._reply(request, "ok", result)
        elif request.key in self._inflight_requests:
            self._count("proposal_already_in_log")  # answered when it applies
        elif self.log.last_index - self.commit >= self.config.uncommitted_entries_max:
            self._count("proposal_refused_backlog")
            self._reply(request, "retry")
        else:
            self._append_as_leader(Entry(term=self.term, index=self.log.last_index + 1, request=request))
            self._inflight_requests[request.key] = self.log.last_index
        return self._ready()

    def read(self, request: Request) -> Ready:
        """A client's query, answered once the leader knows it still leads (read-index)."""
        if self.role != LEADER:
            self._reply(request, "redirect")
        elif len(self._reads) + len(self._reads_waiting) >= self.config.reads_pending_max:
            self._count("read_refused_backlog")
            self._reply(request, "retry")
        elif self.log.term_at(self.commit) != self.term:
            # Until an entry of this term commits, our commit index may lag the
            # true one (Raft 6.4): wait for the no-op.
            self._reads_waiting.append(request)
        else:
            self._start_read(request)
        return self._ready()

    def campaign(self) -> Ready:
        """Start an election now, as if the election timeout fired (etcd's MsgHup)."""
        if self.role == LEADER:
            self._count("campaign_ignored_leader")
        else:
            self._campaign(pre_vote=self.config.pre_vote)
        return self._ready()

    def change_membership(self, voters: tuple[NodeId, ...]) -> Ready:
        """Leader only: propose `voters`, which must add or remove exactly one replica."""
        if self.role != LEADER:
            raise NotLeaderError(f"replica {self._id} is a {self.role}", self.leader)
        voters = tuple(sorted(set(voters)))
        if len(set(voters) ^ set(self.voters)) != 1:
            raise MembershipChangeError(f"{voters} must differ from {self.voters} by exactly one replica")
        if any(index > self.commit for index, _ in self._conf_entries):
            raise MembershipChangeError("the previous membership change is not committed yet")
        if self.log.term_at(self.commit) != self.term:
            # Raft dissertation errata: a new leader must commit in its term first.
            raise MembershipChangeError("this leader has not committed an entry in its term yet")
        self._append_as_leader(Entry(term=self.term, index=self.log.last_index + 1, voters=voters))
        return self._ready()

    def deadline_ms(self) -> int | None:
        """When `tick` next has work."""
        if self.role == LEADER:
            return min(self._heartbeat_deadline, self._check_quorum_deadline)
        return self._election_deadline if self._may_campaign() else None

    def _may_campaign(self) -> bool:
        """A voter may campaign; so may a replica its own uncommitted membership entry removes.

        Raft dissertation 4.2.2: until that entry commits it may still be needed. A
        leader that removed itself and was then deposed before the entry committed
        would otherwise never campaign again, and the others, missing the entry,
        could not win its vote: the group would be stuck.
        """
        return self._id in self.voters or any(index > self.commit for index, _ in self._conf_entries)

    def status(self) -> ReplicaStatus:
        """Role, term, leader, indexes, members, counters."""
        return ReplicaStatus(id=self._id, role=self.role, term=self.term, leader=self.leader,
                             commit=self.commit, applied=self.applied, members=self.voters,
                             counters=dict(self.counters))

    # -- roles -----------------------------------------------------------------

    def _transition(self, role: str) -> None:
        assert role in _TRANSITIONS[self.role], f"invalid transition {self.role} -> {role}"
        if self.role == LEADER and role != LEADER:
            self._leave_leadership()
        self.role = role

    def _become_follower(self, term: int, leader: NodeId | None) -> None:
        self._transition(FOLLOWER)
        self._set_term(term)
        self.leader = leader
        self._step_role, self._tick_role = self._step_follower, self._tick_election
        self._reset_election_deadline()

    def _become_pre_candidate(self) -> None:
        # Pre-vote does not touch term or vote (Raft dissertation 9.6).
        self._transition(PRE_CANDIDATE)
        self.leader = None
        self._votes = {self._id: True}
        self._step_role, self._tick_role = self._step_candidate, self._tick_election
        self._reset_election_deadline()

    def _become_candidate(self) -> None:
        self._transition(CANDIDATE)
        self._set_term(self.term + 1)
        self.vote = self._id
        self._hs_dirty = True
        self.leader = None
        self._votes = {self._id: True}
        self._step_role, self._tick_role = self._step_candidate, self._tick_election
        self._reset_election_deadline()

    def _become_leader(self) -> None:
        self._transition(LEADER)
        self.leader = self._id
        self._step_role, self._tick_role = self._step_leader, self._tick_leader
        self._progress = {}
        for peer in self.voters:
            if peer != self._id:
                self._progress[peer] = _Progress(self.log.last_index + 1)
        self._heartbeat_deadline = self._now + self.config.heartbeat_ms
        self._check_quorum_deadline = self._now + self.config.election_ms
        self._inflight_requests = {}
        self._count("became_leader")
        # A no-op of this term: committing it commits everything before (Raft 5.4.2)
        # and lets reads and membership changes start.
        self._append_as_leader(Entry(term=self.term, index=self.log.last_index + 1))

    def _leave_leadership(self) -> None:
        for req in self._reads_waiting:
            self._reply(req, "retry")
        for pending in self._reads:
            self._reply(pending.request, "retry")
        self._reads_waiting = []
        self._reads.clear()
        self._progress = {}
        self._inflight_requests = {}

    def _set_term(self, term: int) -> None:
        assert term >= self.term, (term, self.term)
        if term > self.term:
            self.term = term
            self.vote = None
            self._hs_dirty = True

    def _reset_election_deadline(self) -> None:
        e = self.config.election_ms
        self._election_deadline = self._now + e + self._rng.randrange(e)

    def _in_lease(self) -> bool:
        """Heard from a live leader within the minimum election timeout (then votes are ignored)."""
        if self.role == LEADER:
            return True
        return self.leader is not None and self._now - self._leader_contact_ms < self.config.election_ms

    # -- step: common part -------------------------------------------------------

    def _step(self, m: Any) -> None:
        if m.term > self.term:
            if isinstance(m, PreVote | Vote) and self.config.check_quorum and self._in_lease():
                self._count("vote_ignored_in_lease")
                return
            if isinstance(m, PreVote) or (isinstance(m, PreVoteResp) and m.granted):
                pass  # pre-votes are for a future term; they change nothing now
            else:
                lead = m.src if isinstance(m, Append | Heartbeat | InstallSnapshot) else None
                self._become_follower(m.term, lead)
        elif m.term < self.term:
            if isinstance(m, Append | Heartbeat):
                # A deposed leader: tell it our term so it steps down (it would
                # otherwise never learn, with pre-vote and check-quorum on).
                self._out.send(m.src, AppendResp(src=self._id, term=self.term, success=False, index=0))
            elif isinstance(m, PreVote):
                self._out.send(m.src, PreVoteResp(src=self._id, term=self.term, granted=False))
            else:
                self._count("dropped_stale_term")
            return
        if isinstance(m, PreVote | Vote):
            self._handle_vote_request(m)
        else:
            self._step_role(m)

    def _handle_vote_request(self, m: PreVote | Vote) -> None:
        pre = isinstance(m, PreVote)
        can = m.term > self.term if pre else \
            self.vote == m.src or (self.vote is None and self.leader is None)
        if can and self.log.is_up_to_date(m.last_index, m.last_term):
            if pre:
                self._out.send(m.src, PreVoteResp(src=self._id, term=m.term, granted=True))
            else:
                self.vote = m.src
                self._hs_dirty = True
                self._reset_election_deadline()
                self._out.send(m.src, VoteResp(src=self._id, term=self.term, granted=True))
        elif pre:
            self._out.send(m.src, PreVoteResp(src=self._id, term=self.term, granted=False))
        else:
            self._out.send(m.src, VoteResp(src=self._id, term=self.term, granted=False))

    # -- follower ----------------------------------------------------------------

    def _step_follower(self, m: Any) -> None:
        if isinstance(m, Append | Heartbeat | InstallSnapshot):
            self.leader = m.src
            self._leader_contact_ms = self._now
            self._reset_election_deadline()
            if isinstance(m, Append):
                self._handle_append(m)
            elif isinstance(m, Heartbeat):
                self._handle_heartbeat(m)
            else:
                self._handle_snapshot(m)
        else:
            self._count("dropped_not_for_follower")

    def _handle_append(self, m: Append) -> None:
        prev_index, prev_term, entries = m.prev_index, m.prev_term, m.entries
        if prev_index < self.commit:
            # Entries up to our commit index are committed, so equal to the
            # leader's (Log Matching): skip them and match at our commit.
            entries = tuple(e for e in entries if e.index > self.commit)
            prev_index, prev_term = self.commit, self.log.term_at(self.commit)
        if self.log.term_at(prev_index) != prev_term:
            last = self.log.last_index
            hint = last + 1 if prev_index > last else \
                self.log.first_index_of_term_from(prev_index, self.commit)
            self._out.send(m.src, AppendResp(src=self._id, term=self.term, success=False, index=m.prev_index,
                                             hint_index=max(min(hint, m.prev_index), 0)))
            return
        first = self.log.merge(entries, self.commit)
        if first is not None:
            self._log_changed_from(first)
        last_new = prev_index + len(entries)
        if min(m.commit, last_new) > self.commit:
            self.commit = min(m.commit, last_new)
        self._out.send(m.src, AppendResp(src=self._id, term=self.term, success=True, index=last_new))

    def _handle_heartbeat(self, m: Heartbeat) -> None:
        # The leader sends min(our match, its commit), so this index is in our log
        # and matches; the min with last_index guards a confused peer anyway.
        commit = min(m.commit, self.log.last_index)
        if commit > self.commit:
            self.commit = commit
        self._out.send(m.src, HeartbeatResp(src=self._id, term=self.term, ctx=m.ctx))

    def _handle_snapshot(self, m: InstallSnapshot) -> None:
        s = m.snapshot
        if s.index <= self.commit:
            self._out.send(m.src, AppendResp(src=self._id, term=self.term, success=True, index=self.commit))
            return
        if self.log.term_at(s.index) == s.term:
            self.commit = s.index  # we hold that entry already: just commit up to it
        else:
            self._sm.restore(s.data)
            self.log.reset(s.index, s.term)
            self._snapshot = s
            self._base_voters = s.voters
            self._conf_entries = []
            self.commit = self.applied = s.index
            self._new_snapshot = s
            self._truncate_from = 0
            self._unstable_from = None
            self._count("snapshots_installed")
        self._out.send(m.src, AppendResp(src=self._id, term=self.term, success=True, index=s.index))

    def _tick_election(self) -> None:
        if self._now >= self._election_deadline:
            if self._may_campaign():
                self._campaign(pre_vote=self.config.pre_vote)
            else:
                self._reset_election_deadline()

    # -- candidate ---------------------------------------------------------------

    def _campaign(self, *, pre_vote: bool) -> None:
        if not self._may_campaign():
            self._count("campaign_not_a_voter")
            return
        if pre_vote:
            self._become_pre_candidate()
            term, cls = self.term + 1, PreVote
        else:
            self._become_candidate()
            term, cls = self.term, Vote
        if self._tally() == "won":
            self._won(pre_vote)
            return
        for peer in self.voters:
            if peer != self._id:
                self._out.send(peer, cls(src=self._id, term=term, last_index=self.log.last_index,
                                         last_term=self.log.last_term))

    def _tally(self) -> str:
        voters = self.voters
        quorum = len(voters) // 2 + 1
        yes = sum(1 for v in voters if self._votes.get(v) is True)
        no = sum(1 for v in voters if self._votes.get(v) is False)
        return "won" if yes >= quorum else "lost" if no >= quorum else "pending"

    def _won(self, pre_vote: bool) -> None:
        if pre_vote:
            self._campaign(pre_vote=False)
        else:
            self._become_leader()

    def _step_candidate(self, m: Any) -> None:
        if isinstance(m, Append | Heartbeat | InstallSnapshot):
            self._become_follower(self.term, m.src)  # a leader of our term exists
            self._step_follower(m)
            return
        expect = PreVoteResp if self.role == PRE_CANDIDATE else VoteResp
        if type(m) is not expect:
            self._count("dropped_not_for_candidate")
            return
        want_term = self.term + 1 if self.role == PRE_CANDIDATE else self.term
        if m.granted and m.term != want_term:
            self._count("dropped_stale_vote")
            return
        self._votes.setdefault(m.src, m.granted)
        result = self._tally()
        if result == "won":
            self._won(self.role == PRE_CANDIDATE)
        elif result == "lost":
            self._become_follower(self.term, None)

    # -- leader ------------------------------------------------------------------

    def _append_as_leader(self, entry: Entry) -> None:
        self.log.append(entry)
        self._log_changed_from(entry.index)
        if entry.voters is not None:
            self._conf_entries.append((entry.index, entry.voters))
            self._sync_progress()
        for peer in self._progress:
            self._send_append(peer)
        self._maybe_commit()

    def _sync_progress(self) -> None:
        """Match the follower set to the voters in effect (after a membership entry)."""
        voters = self.voters
        for peer in voters:
            if peer != self._id and peer not in self._progress:
                self._progress[peer] = _Progress(self.log.last_index + 1)
        for peer in [p for p in self._progress if p not in voters]:
            del self._progress[peer]

    def _send_append(self, to: NodeId, *, allow_empty: bool = False) -> bool:
        pr = self._progress[to]
        if pr.state == SNAPSHOT or (pr.state == PROBE and pr.probe_sent):
            return False
        if pr.state == REPLICATE and len(pr.inflight) >= self.config.inflight_msgs_max:
            return False
        prev = pr.next - 1
        prev_term = self.log.term_at(prev)
        if prev_term is None and prev < self.log.snapshot_index:
            snap = self._snapshot
            assert snap is not None and snap.index == self.log.snapshot_index
            self._out.send(to, InstallSnapshot(src=self._id, term=self.term, snapshot=snap))
            pr.state, pr.snapshot_index, pr.snapshot_sent_ms = SNAPSHOT, snap.index, self._now
            self._count("snapshots_sent")
            return True
        if prev_term is None:  # next ran past our log (a stale optimistic next): back up
            pr.next = self.log.last_index + 1
            prev, prev_term = self.log.last_index, self.log.last_term
        entries = self.log.entries_from(pr.next, self.config.entries_per_msg_max) \
            if pr.next <= self.log.last_index else ()
        if not entries and not allow_empty:
            return False
        self._out.send(to, Append(src=self._id, term=self.term, prev_index=prev, prev_term=prev_term,
                                  entries=entries, commit=self.commit))
        if pr.state == REPLICATE and entries:
            pr.next = entries[-1].index + 1
            pr.inflight.append(entries[-1].index)
        elif pr.state == PROBE:
            pr.probe_sent = True
        return True

    def _maybe_commit(self) -> None:
        voters = self.voters
        matches = sorted((self.log.last_index if v == self._id else
                          (self._progress[v].match if v in self._progress else 0)) for v in voters)
        quorum_index = matches[len(voters) - (len(voters) // 2 + 1)]
        # Only entries of the current term commit by counting (Raft 5.4.2).
        if quorum_index > self.commit and self.log.term_at(quorum_index) == self.term:
            self.commit = quorum_index

    def _step_leader(self, m: Any) -> None:
        pr = self._progress.get(m.src)
        if pr is None:
            self._count("dropped_not_a_follower")
            return
        if isinstance(m, AppendResp):
            pr.active = True
            self._handle_append_resp(m, pr)
        elif isinstance(m, HeartbeatResp):
            pr.active = True
            pr.probe_sent = False
            # Behind, and no ack for a heartbeat interval: an Append or its ack was
            # probably lost, so send again (a mismatch turns into a probe). Sooner,
            # the ack is most likely still on its way.
            stalled = self._now - pr.acked_ms >= self.config.heartbeat_ms
            if pr.match < self.log.last_index and (pr.state != REPLICATE or stalled):
                if pr.state == REPLICATE and len(pr.inflight) >= self.config.inflight_msgs_max:
                    pr.inflight.popleft()  # let one more go
                self._send_append(m.src, allow_empty=True)
            self._ack_reads(m.src, m.ctx)
        else:
            self._count("dropped_not_for_leader")

    def _handle_append_resp(self, m: AppendResp, pr: _Progress) -> None:
        if not m.success:
            stale = m.index <= pr.match if pr.state != PROBE else m.index != pr.next - 1
            if stale:
                self._count("dropped_stale_reject")
                return
            pr.next = max(pr.match + 1, min(m.hint_index, m.index))
            pr.state, pr.probe_sent = PROBE, False
            pr.inflight.clear()
            self._send_append(m.src)
            return
        if m.index > self.log.last_index:
            self._count("dropped_ack_beyond_log")  # cannot be true of an honest follower
            return
        if m.index > pr.match:
            pr.match = m.index
            pr.acked_ms = self._now
            pr.free_up_to(m.index)
            if pr.state == PROBE or (pr.state == SNAPSHOT and m.index >= pr.snapshot_index):
                pr.state, pr.probe_sent = REPLICATE, False
                pr.inflight.clear()
                pr.next = pr.match + 1
            pr.next = max(pr.next, pr.match + 1)
            self._maybe_commit()
        else:
            pr.free_up_to(m.index)
            if pr.state == PROBE:
                pr.probe_sent = False
        while self._send_append(m.src):
            pass

    def _tick_leader(self) -> None:
        if self._now >= self._heartbeat_deadline:
            self._heartbeat_deadline = self._now + self.config.heartbeat_ms
            self._broadcast_heartbeat()
            for peer, pr in self._progress.items():
                if pr.state == SNAPSHOT and self._now - pr.snapshot_sent_ms >= self.config.election_ms:
                    pr.state, pr.probe_sent = PROBE, False  # the snapshot was probably lost
                    self._send_append(peer)
        if self._now >= self._check_quorum_deadline:
            self._check_quorum_deadline = self._now + self.config.election_ms
            if self.config.check_quorum:
                active = sum(1 for v in self.voters if v == self._id or
                             (v in self._progress and self._progress[v].active))
                for pr in self._progress.values():
                    pr.active = False
                if active < len(self.voters) // 2 + 1:
                    self._count("stepped_down_no_quorum")
                    self._become_follower(self.term, None)

    def _broadcast_heartbeat(self) -> None:
        for peer, pr in self._progress.items():
            self._out.send(peer, Heartbeat(src=self._id, term=self.term, commit=min(pr.match, self.commit),
                                           ctx=self._read_seq))

    # -- reads (read-index, Raft 6.4) ----------------------------------------------

    def _start_read(self, request: Request) -> None:
        self._read_seq += 1
        self._reads.append(_PendingRead(self._read_seq, self.commit, request, self._id))
        if len(self.voters) == 1:
            self._serve_reads()
        else:
            self._broadcast_heartbeat()

    def _ack_reads(self, src: NodeId, ctx: int) -> None:
        for pending in self._reads:
            if pending.seq > ctx:
                break
            pending.acks.add(src)
        self._serve_reads()

    def _serve_reads(self) -> None:
        voters = self.voters
        quorum = len(voters) // 2 + 1
        while self._reads:
            head = self._reads[0]
            if sum(1 for v in voters if v in head.acks) < quorum or head.index > self.applied:
                return
            self._reads.popleft()
            self._reply(head.request, "ok", self._sm.query(head.request))

    # -- applying and readiness --------------------------------------------------

    def _log_changed_from(self, index: int) -> None:
        if self._unstable_from is None or index < self._unstable_from:
            self._unstable_from = index
        # A follower's conflicting tail may have held membership entries.
        while self._conf_entries and self._conf_entries[-1][0] >= index:
            self._conf_entries.pop()
        if self.role != LEADER:
            for e in self.log.entries_from(index, self.log.last_index - index + 1):
                if e.voters is not None:
                    self._conf_entries.append((e.index, e.voters))

    def _apply(self) -> None:
        if self.applied == self.commit and not self._reads and not self._reads_waiting:
            return
        while self.applied < self.commit:
            self.applied += 1
            e = self.log.entry(self.applied)
            if e.request is not None:
                result = self._sm.apply(e.request)
                self._out.committed.append(Committed(index=e.index, request=e.request, result=result))
                if self.role == LEADER:
                    self._inflight_requests.pop(e.request.key, None)
                    self._reply(e.request, "ok", result)
        stepped_out = self.role == LEADER and self._id not in self.voters and \
            all(index <= self.commit for index, _ in self._conf_entries)
        if self.role == LEADER:
            if self._reads_waiting and self.log.term_at(self.commit) == self.term:
                waiting, self._reads_waiting = self._reads_waiting, []
                for req in waiting:
                    self._start_read(req)
            self._serve_reads()
        if stepped_out:
            # Removed from the membership and that is committed: hand over (Raft 4.2.2).
            self._count("stepped_down_removed")
            self._become_follower(self.term, None)

    def _maybe_compact(self) -> None:
        if self.applied - self.log.snapshot_index < self.config.snapshot_entries:
            return
        index = self.applied
        voters = self._base_voters
        for conf_index, conf_voters in self._conf_entries:
            if conf_index <= index:
                voters = conf_voters
        snap = Snapshot(index=index, term=self.log.term_at(index), voters=voters, data=self._sm.snapshot())
        self.log.compact(index, snap.term)
        self._conf_entries = [(i, v) for i, v in self._conf_entries if i > index]
        self._base_voters = voters
        self._snapshot = snap
        self._new_snapshot = snap
        self._count("snapshots_taken")

    def _ready(self) -> Ready:
        self._apply()
        entries: tuple[Entry, ...] = ()
        if self._unstable_from is not None and self._unstable_from <= self.log.last_index:
            first = max(self._unstable_from, self.log.snapshot_index + 1)
            entries = self.log.entries_from(first, self.log.last_index - first + 1)
        truncate_from = self._truncate_from if self._truncate_from is not None else \
            (entries[0].index if entries else None)
        self._maybe_compact()  # after gathering entries, so none is compacted before it is saved
        if self._hs_dirty or entries or self._new_snapshot is not None or truncate_from is not None:
            self._out.persist = RaftPersist(
                hard_state=HardState(term=self.term, vote=self.vote) if self._hs_dirty else None,
                truncate_from=truncate_from, entries=entries, snapshot=self._new_snapshot)
        self._hs_dirty = False
        self._unstable_from = self._truncate_from = None
        self._new_snapshot = None
        return self._out.take()

    def _reply(self, request: Request, status: str, result: Any = None) -> None:
        self._out.replies.append(ClientReply(
            client_id=request.client_id, request_id=request.request_id, replica=self._id, status=status,
            result=result, leader_hint=self.leader if status != "ok" else None, view=self.term))

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1
