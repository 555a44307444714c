"""The PBFT replica: Castro and Liskov's protocol as a deterministic, sans-IO state machine.

n replicas (ids 0..n-1) tolerate f = (n-1)//3 Byzantine ones; quorums have
(n+f)//2+1 members (2f+1 when n = 3f+1). Normal case: the primary of view v
(v mod n) batches requests into a signed PrePrepare; backups that accept it
multicast Prepare; a replica with the PrePrepare and 2f matching Prepares has
a prepared certificate and multicasts Commit; 2f+1 matching Commits commit it;
batches execute in sequence order and every replica replies to the client,
which waits for f+1 equal replies. Every K sequence numbers replicas multicast
Checkpoint; 2f+1 equal ones make it stable, which moves the watermarks and
garbage-collects the log (a replica that fell behind it fetches the state).

View change (TOCS '02, 4.4-4.5): a backup whose request timer expires moves to
view v+1 and multicasts ViewChange (stable checkpoint with proof, prepared
certificates after it). The new primary, with 2f+1 of them, multicasts NewView
with PrePrepares for every sequence number between the newest stable
checkpoint and the highest prepared one: the highest-view certificate's batch,
else the null request. Backups recompute that set before accepting it. Timers
back off exponentially, the timer for view v+1 starts only once 2f+1 replicas
want it, and f+1 replicas wanting a higher view pull a replica along.

Roles are explicit: `mode` is "normal" or "view-change"; the primary of the
current view batches; everything else is a backup. A message from a peer that
fails its signature or makes no sense is dropped and counted, never raised.

The same core serves the PBFT family. A config may name the `voters` (the
consensus group; the other replicas are observers that receive PrePrepares,
Commits, Checkpoints and NewViews and execute on a quorum of the group's
Commits, but never vote), the `primary_order` (the primary of view v is
primary_order[v mod m], not v mod n) and a sequence range (`seq_base`,
`seq_max`) for an instance that starts from a given checkpoint and ends at
another: T-PBFT runs one instance per trust epoch. Subclasses change how votes
travel and count through the hooks in the "family hooks" section (ProBFT sends
its votes to VRF-chosen samples and counts probabilistic quorums).
"""

from __future__ import annotations

import random
from collections import OrderedDict
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
from fabric.consensus.canonical import digest as canonical_digest
from fabric.consensus.errors import MalformedMessageError
from fabric.consensus.pbft.messages import (
    BATCH_LIMIT,
    MESSAGE_TYPES,
    NULL_DIGEST,
    REPLICAS_LIMIT,
    Checkpoint,
    Commit,
    FetchState,
    NewView,
    Prepare,
    PreparedCert,
    PrePrepare,
    StateReply,
    ViewChange,
    batch_digest,
)
from fabric.consensus.pbft.storage import PbftDurable, PbftPersist, StableCheckpoint
from fabric.consensus.signing import Signer, Verifier
from fabric.errors import ConfigError

NORMAL, VIEW_CHANGE = "normal", "view-change"


@dataclass(frozen=True, kw_only=True)
class PbftConfig:
    """One replica's settings; `validate()` says how to fix a bad value."""

    id: NodeId
    n: int
    # K: a checkpoint every K executed sequence numbers (the paper's experiments use 128;
    # the ledger's small state makes frequent checkpoints cheap).
    checkpoint_interval: int = 16
    # L: sequence numbers accepted above the stable checkpoint (the high watermark);
    # 2K lets the primary continue while the next checkpoint becomes stable.
    watermark_window: int = 32
    # Requests per PrePrepare; the primary batches whatever waits while its pipeline is full.
    batch_max: int = 16
    # Batches the primary has pre-prepared but not yet executed.
    pipeline_max: int = 4
    # A backup waiting this long for a request to execute starts a view change.
    request_timeout_ms: int = 600
    # Wait for a NewView once 2f+1 replicas want the view; doubles per failed view...
    view_change_timeout_ms: int = 600
    # ...up to 2**this times.
    view_change_backoff_max: int = 5
    # Retransmission period of a pending ViewChange and of a state fetch.
    resend_ms: int = 200
    # Client requests known but not executed.
    requests_pending_max: int = 1024
    # Messages for a view we have not entered yet, kept until we do.
    future_msgs_max: int = 512
    # View changes kept for views this far above ours.
    views_ahead_max: int = 16
    # The consensus group (empty: every replica 0..n-1); the others only observe.
    voters: tuple[int, ...] = ()
    # Primaries in turn (empty: the voters in id order): the primary of view v is
    # primary_order[v mod len(primary_order)].
    primary_order: tuple[int, ...] = ()
    # This instance starts after seq_base (the checkpoint it starts from needs no
    # proof) and ends at seq_max (0: never); both multiples of checkpoint_interval.
    seq_base: int = 0
    seq_max: int = 0

    @property
    def voter_ids(self) -> tuple[int, ...]:
        """The consensus group, defaulted."""
        return tuple(sorted(self.voters)) if self.voters else tuple(range(self.n))

    @property
    def order(self) -> tuple[int, ...]:
        """Primaries in turn, defaulted."""
        return self.primary_order or self.voter_ids

    @property
    def f(self) -> int:
        """Byzantine voters tolerated."""
        return (len(self.voter_ids) - 1) // 3

    @property
    def quorum(self) -> int:
        """Voters in a quorum: any two share f+1, so at least one honest one."""
        return (len(self.voter_ids) + self.f) // 2 + 1

    def validate(self) -> PbftConfig:
        """Return self, or raise ConfigError naming the bad value and its allowed range."""
        def bad(name: str, why: str) -> ConfigError:
            """The error naming the bad value."""
            return ConfigError(f"pbft config {name}={getattr(self, name)!r}: {why}")
        if not 4 <= self.n <= REPLICAS_LIMIT:
            raise bad("n", f"use 4..{REPLICAS_LIMIT} (n = 3f+1 tolerates f faulty)")
        if type(self.id) is not int or not 0 <= self.id < self.n:
            raise bad("id", "use 0..n-1")
        if not 1 <= self.checkpoint_interval <= 1_000_000:
            raise bad("checkpoint_interval", "use 1..1000000")
        if self.watermark_window < 2 * self.checkpoint_interval or \
                self.watermark_window % self.checkpoint_interval:
            raise bad("watermark_window", "use a multiple of checkpoint_interval, at least twice it")
        if not 1 <= self.batch_max <= BATCH_LIMIT:
            raise bad("batch_max", f"use 1..{BATCH_LIMIT}")
        if not 1 <= self.pipeline_max <= self.watermark_window:
            raise bad("pipeline_max", "use 1..watermark_window")
        for name in ("request_timeout_ms", "view_change_timeout_ms", "resend_ms"):
            if not 1 <= getattr(self, name) <= 3_600_000:
                raise bad(name, "use 1..3600000 ms")
        if not 0 <= self.view_change_backoff_max <= 20:
            raise bad("view_change_backoff_max", "use 0..20")
        for name in ("requests_pending_max", "future_msgs_max"):
            if not 1 <= getattr(self, name) <= 1_000_000:
                raise bad(name, "use 1..1000000")
        if not 1 <= self.views_ahead_max <= 1_000:
            raise bad("views_ahead_max", "use 1..1000")
        if self.voters and (len(set(self.voters)) != len(self.voters) or len(self.voters) < 4
                            or any(type(v) is not int or not 0 <= v < self.n for v in self.voters)):
            raise bad("voters", "use at least 4 distinct ids in 0..n-1")
        if self.primary_order and sorted(self.primary_order) != list(self.voter_ids):
            raise bad("primary_order", "use an ordering of the voters")
        if self.seq_base < 0 or self.seq_base % self.checkpoint_interval:
            raise bad("seq_base", "use a multiple of checkpoint_interval, >= 0")
        if self.seq_max and (self.seq_max <= self.seq_base or self.seq_max % self.checkpoint_interval):
            raise bad("seq_max", "use 0 (no end) or a multiple of checkpoint_interval above seq_base")
        return self


class _Slot:
    """Agreement state of one sequence number in one view (the certificate outlives views)."""

    __slots__ = ("cert", "commits", "committed", "own_digest", "pre_prepare", "prepared", "prepares", "view")

    def __init__(self, view: int) -> None:
        self.cert: PreparedCert | None = None
        self.reset(view)

    def reset(self, view: int) -> None:
        """Start over in `view`: votes of older views do not count in it."""
        self.view = view
        self.pre_prepare: PrePrepare | None = None
        self.prepares: dict[NodeId, Prepare] = {}
        self.commits: dict[NodeId, bytes] = {}
        self.prepared = False
        self.committed = False
        # The digest we pre-prepared or prepared in this view: never another one.
        self.own_digest: bytes | None = None


class PbftReplica:
    """One PBFT replica (see the module doc and fabric.consensus.api for how to drive it)."""

    def __init__(self, config: PbftConfig, *, state_machine: StateMachine, rng: random.Random,
                 signer: Signer, verifier: Verifier, client_verifier: Verifier,
                 durable: PbftDurable | None = None, now_ms: int = 0) -> None:
        self.config = config.validate()
        assert signer.identity == config.id, "a replica signs as itself"
        self._id = config.id
        self._n = config.n
        self._quorum = config.quorum
        self._voters = frozenset(config.voter_ids)
        self._order = config.order
        self._is_voter = config.id in self._voters
        self._sm = state_machine
        self._rng = rng
        self._signer = signer
        self._verifier = verifier
        self._client_verifier = client_verifier
        self._now = now_ms
        self._out = Outbox()
        self.counters: dict[str, int] = {}

        self.view = 0
        self.mode = NORMAL
        self.low = config.seq_base  # h: the stable checkpoint
        self._stable_digest = b""
        self._stable_proof: tuple[Checkpoint, ...] = ()
        self._stable_snapshot: Any = None
        self.last_exec = config.seq_base
        self._slots: dict[int, _Slot] = {}
        self._checkpoints: dict[int, dict[NodeId, Checkpoint]] = {}
        self._own_checkpoints: dict[int, tuple[bytes, Any]] = {}
        self._view_changes: dict[int, dict[NodeId, ViewChange]] = {}
        self._own_vc: ViewChange | None = None
        self._new_view: NewView | None = None  # the last one we sent or accepted
        self._future: list[Any] = []
        self._pending: OrderedDict[tuple[str, int], Request] = OrderedDict()
        self._unassigned: OrderedDict[tuple[str, int], Request] = OrderedDict()  # primary only
        self._assigned: set[tuple[str, int]] = set()
        self._next_seq = config.seq_base + 1
        self._request_deadline: int | None = None
        self._vc_deadline: int | None = None
        self._vc_attempt = 0
        self._resend_deadline: int | None = None
        self._need_state: tuple[int, bytes] | None = None
        self._fetch_deadline: int | None = None
        self._fetch_round = 0
        # Durable changes made by this event.
        self._rec: list[Any] = []
        self._view_dirty = False
        self._stable_dirty: StableCheckpoint | None = None
        if durable is not None:
            self._restore(durable)

    # -- the sans-IO interface -------------------------------------------------

    @property
    def id(self) -> NodeId:
        """This replica's id."""
        return self._id

    @property
    def primary(self) -> NodeId:
        """The primary of the current view."""
        return self._primary_of(self.view)

    def _primary_of(self, view: int) -> NodeId:
        return self._order[view % len(self._order)]

    def step(self, msg: Any) -> Ready:
        """Take a peer's message (or a client request a backup forwarded)."""
        if type(msg) is Request:
            return self.propose(msg)
        if type(msg) not in self._MESSAGE_TYPES:
            self._count("dropped_unknown_type")
            return self._ready()
        try:
            msg.check()
        except MalformedMessageError:
            self._count("dropped_malformed")
            return self._ready()
        if not 0 <= msg.src < self._n or msg.src == self._id:
            self._count("dropped_bad_src")
            return self._ready()
        handler = self._HANDLERS[type(msg)]
        handler(self, msg)
        return self._ready()

    def tick(self, now_ms: int) -> Ready:
        """Let time pass: request timer, view-change timer, retransmissions."""
        assert now_ms >= self._now, f"time went backwards: {now_ms} < {self._now}"
        self._now = now_ms
        if self.mode == NORMAL:
            if self._request_deadline is not None and now_ms >= self._request_deadline and self._is_voter \
                    and not self._defer_view_change():
                self._count("request_timeouts")
                self._on_request_timeout(self.view)
                self._start_view_change(self.view + 1)
        else:
            if self._vc_deadline is not None and now_ms >= self._vc_deadline:
                self._count("view_change_timeouts")
                self._start_view_change(self.view + 1)
            elif self._resend_deadline is not None and now_ms >= self._resend_deadline:
                assert self._own_vc is not None
                self._send_voters(self._own_vc)  # it may have been lost
                self._resend_deadline = now_ms + self.config.resend_ms
        if self._need_state is not None and self._fetch_deadline is not None \
                and now_ms >= self._fetch_deadline:
            self._fetch_state()
        return self._ready()

    def propose(self, request: Request) -> Ready:
        """A client's request (or a backup's forward of one)."""
        self._on_request(request)
        return self._ready()

    def read(self, request: Request) -> Ready:
        """Reads go through the log: ordered like commands, so linearizable."""
        return self.propose(request)

    def deadline_ms(self) -> int | None:
        """When `tick` next has work."""
        # Asked after every event a replica takes: no list, no min() over one.
        if self.mode == NORMAL:
            best = self._request_deadline if self._is_voter else None
        else:
            best, t = self._vc_deadline, self._resend_deadline
            if t is not None and (best is None or t < best):
                best = t
        t = self._fetch_deadline
        if t is not None and self._need_state is not None and (best is None or t < best):
            best = t
        return best

    def status_role(self) -> str:
        """"primary", "backup" or "observer", with " (view-change)" while changing views."""
        role = "primary" if self.primary == self._id else "backup" if self._is_voter else "observer"
        return role if self.mode == NORMAL else f"{role} (view-change)"

    def status(self) -> ReplicaStatus:
        """Role, view, primary, executed sequence number, members, counters."""
        return ReplicaStatus(id=self._id, role=self.status_role(), term=self.view,
                             leader=self.primary if self.mode == NORMAL else None, commit=self.last_exec,
                             applied=self.last_exec, members=self.config.voter_ids,
                             counters=dict(self.counters))

    # -- helpers -----------------------------------------------------------------

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def _sign(self, msg: Any) -> Any:
        return msg.signed(self._signer)

    def _send_all(self, msg: Any) -> None:
        for r in range(self._n):
            if r != self._id:
                self._out.send(r, msg)

    def _send_voters(self, msg: Any) -> None:
        for r in self.config.voter_ids:
            if r != self._id:
                self._out.send(r, msg)

    def _verify(self, msg: Any) -> bool:
        if msg.verify(self._verifier):
            return True
        self._count("dropped_bad_signature")
        return False

    def _high(self) -> int:
        """The high watermark: the window above the stable checkpoint, capped at the instance's end."""
        high = self.low + self.config.watermark_window
        return min(high, self.config.seq_max) if self.config.seq_max else high

    def _in_window(self, seq: int) -> bool:
        return self.low < seq <= self._high()

    def _slot(self, seq: int, view: int) -> _Slot | None:
        """The slot for `seq` in `view`, reset if it held an older view; None if it is newer."""
        s = self._slots.get(seq)
        if s is None:
            s = self._slots[seq] = _Slot(view)
        elif s.view < view:
            s.reset(view)
        elif s.view > view:
            return None
        return s

    def _client_signature_ok(self, req: Request) -> bool:
        try:
            payload = req.signed_bytes
        except MalformedMessageError:
            return False
        return self._client_verifier.verify(req.client_id, payload, req.signature)

    def _reply(self, req: Request, result: Any, status: str = "ok") -> None:
        self._out.replies.append(ClientReply(client_id=req.client_id, request_id=req.request_id,
                                             replica=self._id, status=status, result=result, view=self.view))

    def _early_view(self, msg: Any) -> bool:
        """Keep a message for a view we have not entered yet; True if it was kept (or is stale)."""
        if msg.view < self.view:
            self._count("dropped_old_view")
            return True
        if msg.view > self.view or self.mode == VIEW_CHANGE:
            if msg.view > self.view + self.config.views_ahead_max:
                self._count("dropped_far_view")
                return True
            if len(self._future) >= self.config.future_msgs_max:
                self._future.pop(0)
                self._count("dropped_future_overflow")
            self._future.append(msg)
            return True
        return False

    # -- client requests ---------------------------------------------------------

    def _on_request(self, req: Request) -> None:
        if not self._client_signature_ok(req):
            self._count("dropped_bad_client_signature")
            return
        found, result = self._sm.cached_result(req)
        if found:
            self._reply(req, result)
            self._request_was_done(req)
            return
        key = req.key
        if key in self._pending:
            if self.mode == NORMAL and self.primary != self._id:
                self._out.send(self.primary, req)  # the client retried: maybe the primary never saw it
            elif self.mode == NORMAL and key not in self._assigned and key not in self._unassigned:
                self._unassigned[key] = req
                self._send_batches()
            return
        if len(self._pending) >= self.config.requests_pending_max:
            self._count("request_refused_backlog")
            self._reply(req, None, "retry")
            return
        self._pending[key] = req
        if self.mode == NORMAL:
            if self.primary == self._id:
                self._unassigned[key] = req
                self._send_batches()
            else:
                self._out.send(self.primary, req)
        if self._request_deadline is None:
            self._request_deadline = self._now + self.config.request_timeout_ms

    def _send_batches(self) -> None:
        """Primary: pre-prepare waiting requests while the pipeline and the window have room."""
        cfg = self.config
        while (self.mode == NORMAL and self.primary == self._id and self._unassigned
               and self._next_seq <= self._high()
               and self._next_seq - 1 - self.last_exec < cfg.pipeline_max):
            batch: list[Request] = []
            while self._unassigned and len(batch) < cfg.batch_max - self._batch_prefix_len:
                key, req = self._unassigned.popitem(last=False)
                if key not in self._assigned and not self._sm.cached_result(req)[0]:
                    batch.append(req)
                    self._assigned.add(key)
            if not batch:
                break
            seq = self._next_seq
            batch[:0] = self._batch_prefix(self.view, seq)
            self._next_seq += 1
            pp = self._sign(self._PRE_PREPARE(src=self._id, view=self.view, seq=seq,
                                              digest=batch_digest(tuple(batch)), batch=tuple(batch)))
            slot = self._slot(seq, self.view)
            assert slot is not None and slot.own_digest is None, f"seq {seq} pre-prepared twice in a view"
            slot.pre_prepare, slot.own_digest = pp, pp.digest
            self._rec.append(pp)
            self._send_all(pp)
            self._count("batches")
            if self._primary_prepares:
                self._send_own_prepare(slot, pp)
                self._check_prepared(seq, slot)

    # -- normal case ---------------------------------------------------------------

    def _on_pre_prepare(self, m: PrePrepare) -> None:
        if self._early_view(m):
            return
        if m.src != self.primary:
            self._count("dropped_pre_prepare_not_from_primary")
            return
        if not self._in_window(m.seq):
            self._count("dropped_outside_window")
            return
        if not self._verify(m):
            return
        slot = self._slot(m.seq, m.view)
        assert slot is not None  # m.view is our view, and slots are never ahead of it
        if slot.pre_prepare is not None:
            if slot.pre_prepare.digest != m.digest:
                self._count("equivocation_detected")
                self._equivocation(slot.pre_prepare, m)
            return
        if slot.own_digest is not None and slot.own_digest != m.digest:
            self._count("equivocation_detected")  # we prepared another digest before a restart
            return
        if batch_digest(m.batch) != m.digest or len({r.key for r in m.batch}) != len(m.batch) \
                or len(m.batch) > self.config.batch_max:
            self._count("dropped_bad_batch")
            return
        if not all(self._client_signature_ok(r) for r in m.batch):
            self._count("dropped_forged_request")
            return
        self._accept_pre_prepare(slot, m)

    def _accept_pre_prepare(self, slot: _Slot, pp: PrePrepare) -> None:
        slot.pre_prepare, slot.own_digest = pp, pp.digest
        for r in pp.batch:
            self._assigned.add(r.key)
        if self._is_voter and self.primary != self._id:
            self._send_own_prepare(slot, pp)
        if self._request_deadline is None and pp.seq > self.last_exec:
            self._request_deadline = self._now + self.config.request_timeout_ms
        self._check_prepared(pp.seq, slot)

    def _send_own_prepare(self, slot: _Slot, pp: PrePrepare) -> None:
        p = self._sign(self._make_prepare(pp))
        slot.prepares[self._id] = p
        self._rec.append(p)
        for to in self._prepare_targets(pp.view, pp.seq):
            self._out.send(to, p)

    def _on_prepare(self, m: Prepare) -> None:
        if self._early_view(m):
            return
        if m.src == self.primary and not self._primary_prepares:
            self._count("dropped_prepare_from_primary")
            return
        if m.src not in self._voters:
            self._count("dropped_vote_not_from_voter")
            return
        if not self._in_window(m.seq) or not self._verify(m) or not self._vote_admitted(m, "prepare"):
            return
        slot = self._slot(m.seq, m.view)
        assert slot is not None
        have = slot.prepares.get(m.src)
        if have is not None:
            if have.digest != m.digest:
                self._count("equivocation_detected")
                self._equivocation(have, m)
            return
        slot.prepares[m.src] = m
        self._check_prepared(m.seq, slot)

    def _check_prepared(self, seq: int, slot: _Slot) -> None:
        pp = slot.pre_prepare
        if pp is None or slot.prepared or not self._is_voter:
            return
        primary = self._primary_of(slot.view)
        matching = sorted((p for src, p in slot.prepares.items() if p.digest == pp.digest
                           and (src != primary or self._primary_prepares)), key=lambda p: p.src)
        need = self._prepares_needed()
        if len(matching) < need:
            return
        slot.prepared = True
        cert = self._CERT(pre_prepare=pp, prepares=tuple(matching[:need]))
        slot.cert = cert
        self._rec.append(cert)
        c = self._sign(self._make_commit(slot.view, seq, pp.digest))
        slot.commits[self._id] = pp.digest
        self._note_commit(c)
        self._rec.append(c)
        for to in self._commit_targets(slot.view, seq):
            self._out.send(to, c)
        self._check_committed(slot)

    def _on_commit(self, m: Commit) -> None:
        if self._early_view(m):
            return
        if m.src not in self._voters:
            self._count("dropped_vote_not_from_voter")
            return
        if not self._in_window(m.seq) or not self._verify(m) or not self._vote_admitted(m, "commit"):
            return
        slot = self._slot(m.seq, m.view)
        assert slot is not None
        if m.src in slot.commits:
            if slot.commits[m.src] != m.digest:
                self._count("equivocation_detected")
            return
        slot.commits[m.src] = m.digest
        self._note_commit(m)
        self._check_committed(slot)

    def _check_committed(self, slot: _Slot) -> None:
        # A voter commits what it prepared; an observer what a quorum of voters committed
        # (2f+1 commits hold f+1 honest prepared voters: the batch is committed, TOCS 4.2).
        if slot.committed or slot.pre_prepare is None or \
                (self._is_voter and self._commit_needs_prepared and not slot.prepared):
            return
        d = slot.pre_prepare.digest
        if sum(1 for digest in slot.commits.values() if digest == d) >= self._commits_needed():
            slot.committed = True
            self._execute()

    def _execute(self) -> None:
        progressed = False
        while True:
            seq = self.last_exec + 1
            pp = self._committed_pre_prepare(seq)
            if pp is None:
                break
            if not self._before_execute(seq, pp):
                break
            for j, req in enumerate(pp.batch):
                result = self._sm.apply(req)
                self._out.committed.append(Committed(index=seq, slot=j, request=req, result=result))
                self._reply(req, result)
                self._pending.pop(req.key, None)
                self._unassigned.pop(req.key, None)
                # Executed: a retransmission is answered from the session table, so the
                # key need not stay here (this keeps the set bounded by the window).
                self._assigned.discard(req.key)
            self.last_exec = seq
            progressed = True
            self._out.decided.append((seq, pp.digest))
            self._after_execute(seq, pp)
            if seq % self.config.checkpoint_interval == 0:
                self._take_checkpoint(seq)
        if progressed:
            self._restart_request_timer()
            self._send_batches()

    def _restart_request_timer(self) -> None:
        waiting = bool(self._pending) or any(seq > self.last_exec and s.pre_prepare is not None
                                             for seq, s in self._slots.items())
        self._request_deadline = self._now + self.config.request_timeout_ms \
            if waiting and self.mode == NORMAL else None

    # -- checkpoints and state transfer --------------------------------------------

    def _take_checkpoint(self, seq: int) -> None:
        d = self._sm.digest()
        self._own_checkpoints[seq] = (d, self._sm.snapshot())
        if self._is_voter:  # an observer's word does not count in a checkpoint proof
            cp = self._sign(Checkpoint(src=self._id, seq=seq, state_digest=d))
            self._checkpoints.setdefault(seq, {})[self._id] = cp
            self._send_all(cp)
        self._check_stable(seq)

    def _on_checkpoint(self, m: Checkpoint) -> None:
        if m.seq <= self.low:
            return
        if m.src not in self._voters:
            self._count("dropped_vote_not_from_voter")
            return
        if m.seq % self.config.checkpoint_interval or (self.config.seq_max and m.seq > self.config.seq_max):
            self._count("dropped_bad_checkpoint")
            return
        if m.seq not in self._checkpoints:
            # Bounded: a few windows' worth of checkpoint numbers (a laggard must see
            # ones far ahead to learn it fell behind); the lowest goes first.
            seqs_max = 2 * self.config.watermark_window // self.config.checkpoint_interval + 2
            if len(self._checkpoints) >= seqs_max:
                lowest = min(self._checkpoints)
                if lowest > m.seq:
                    self._count("dropped_checkpoint_overflow")
                    return
                del self._checkpoints[lowest]
        if not self._verify(m):
            return
        self._checkpoints.setdefault(m.seq, {}).setdefault(m.src, m)
        self._check_stable(m.seq)

    def _check_stable(self, seq: int) -> None:
        by_digest: dict[bytes, list[Checkpoint]] = {}
        for cp in self._checkpoints.get(seq, {}).values():
            by_digest.setdefault(cp.state_digest, []).append(cp)
        for d, group in by_digest.items():
            if len(group) >= self._quorum:
                self._stabilize(seq, d, tuple(sorted(group, key=lambda c: c.src)[:self._quorum]))
                return

    def _stabilize(self, seq: int, d: bytes, proof: tuple[Checkpoint, ...]) -> None:
        if seq <= self.low:
            return
        own = self._own_checkpoints.get(seq)
        if own is not None and own[0] != d:
            self._own_checkpoint_differs(seq, d)
            return
        if own is None:
            assert self.last_exec < seq, f"replica {self._id} executed {seq} without a checkpoint"
        self.low = seq
        self._stable_digest, self._stable_proof = d, proof
        self._stable_snapshot = own[1] if own else None
        for table in (self._slots, self._checkpoints):
            for s in [s for s in table if s <= seq]:
                del table[s]
        for s in [s for s in self._own_checkpoints if s < seq]:
            del self._own_checkpoints[s]
        self._count("checkpoints_stable")
        if own is not None:
            self._stable_dirty = StableCheckpoint(seq=seq, digest=d, proof=proof, snapshot=own[1])
        else:
            self._need_state = (seq, d)
            self._fetch_round = 0
            self._fetch_state()
        self._send_batches()

    def _fetch_state(self) -> None:
        assert self._need_state is not None
        seq, _ = self._need_state
        peers = [c.src for c in self._stable_proof if c.src != self._id] or \
            [r for r in range(self._n) if r != self._id]
        target = peers[self._fetch_round % len(peers)]
        self._fetch_round += 1
        self._out.send(target, self._sign(FetchState(src=self._id, seq=seq)))
        self._fetch_deadline = self._now + self.config.resend_ms
        self._count("state_fetches")

    def _on_fetch_state(self, m: FetchState) -> None:
        if not self._verify(m):
            return
        if self.low >= m.seq and self._stable_snapshot is not None:
            self._out.send(m.src, self._sign(StateReply(src=self._id, seq=self.low, proof=self._stable_proof,
                                                        snapshot=self._stable_snapshot)))

    def _checkpoint_proof_digest(self, seq: int, proof: tuple[Checkpoint, ...]) -> bytes | None:
        """The digest 2f+1 distinct replicas signed for `seq` in `proof`, or None."""
        if not proof:
            return None
        d = proof[0].state_digest
        srcs = set()
        for cp in proof:
            if cp.seq != seq or cp.state_digest != d or cp.src not in self._voters or cp.src in srcs:
                return None
            if not cp.verify(self._verifier):
                return None
            srcs.add(cp.src)
        return d if len(srcs) >= self._quorum else None

    def _on_state_reply(self, m: StateReply) -> None:
        if m.seq <= self.last_exec or m.seq < self.low or not self._verify(m):
            return
        d = self._checkpoint_proof_digest(m.seq, m.proof)
        try:
            ok = d is not None and canonical_digest(m.snapshot) == d
        except MalformedMessageError:
            ok = False
        if not ok:
            self._count("dropped_bad_state")
            return
        if not self._before_install(m.seq, m.snapshot):
            return
        self._sm.restore(m.snapshot)
        self.last_exec = m.seq
        self._own_checkpoints[m.seq] = (d, m.snapshot)
        if m.seq > self.low:
            self._stabilize(m.seq, d, m.proof)
        else:
            self._stable_snapshot = m.snapshot
            self._stable_dirty = StableCheckpoint(seq=m.seq, digest=d, proof=m.proof, snapshot=m.snapshot)
        if self._need_state is not None and self._need_state[0] <= m.seq:
            self._need_state = None
            self._fetch_deadline = None
        for key in [k for k, r in self._pending.items() if self._sm.cached_result(r)[0]]:
            del self._pending[key]
            self._unassigned.pop(key, None)
        self._count("states_installed")
        self._execute()
        self._restart_request_timer()

    # -- view change -------------------------------------------------------------------

    def _start_view_change(self, view: int) -> None:
        assert view > self.view, (view, self.view)
        assert self._is_voter, "observers do not change views"
        self._vc_attempt = self._vc_attempt + 1 if self.mode == VIEW_CHANGE else 0
        self.view = view
        self.mode = VIEW_CHANGE
        self._view_dirty = True
        self._request_deadline = None
        self._vc_deadline = None  # starts once 2f+1 replicas want this view
        self._unassigned.clear()
        certs = tuple(s.cert for seq, s in sorted(self._slots.items())
                      if s.cert is not None and seq > self.low)
        vc = self._sign(self._VIEW_CHANGE(src=self._id, view=view, stable_seq=self.low,
                                          checkpoint_proof=self._stable_proof
                                          if self.low != self.config.seq_base else (), prepared=certs))
        self._own_vc = vc
        self._view_changes.setdefault(view, {})[self._id] = vc
        for v in [v for v in self._view_changes if v < view]:
            del self._view_changes[v]
        self._rec.append(vc)
        self._send_voters(vc)
        self._resend_deadline = self._now + self.config.resend_ms
        self._count("view_changes_started")
        self._view_change_progress(view)

    def _valid_view_change(self, vc: ViewChange) -> bool:
        if vc.src not in self._voters or not vc.verify(self._verifier):
            return False
        if vc.stable_seq < self.config.seq_base:
            return False
        if vc.stable_seq == self.config.seq_base:  # where this instance starts: known to all
            if vc.checkpoint_proof:
                return False
        elif self._checkpoint_proof_digest(vc.stable_seq, vc.checkpoint_proof) is None:
            return False
        seqs = set()
        window = self.config.watermark_window
        for cert in vc.prepared:
            pp = cert.pre_prepare
            if pp.seq in seqs or not vc.stable_seq < pp.seq <= vc.stable_seq + window or pp.view >= vc.view:
                return False
            seqs.add(pp.seq)
            primary = self._primary_of(pp.view)
            if pp.src != primary or batch_digest(pp.batch) != pp.digest or not pp.verify(self._verifier):
                return False
            srcs = set()
            for p in cert.prepares:
                if (p.view, p.seq, p.digest) != (pp.view, pp.seq, pp.digest) \
                        or (p.src == primary and not self._primary_prepares) \
                        or p.src not in self._voters or p.src in srcs or not p.verify(self._verifier) \
                        or not self._cert_vote_ok(vc.src, p):
                    return False
                srcs.add(p.src)
            if len(srcs) < self._prepares_needed():
                return False
        return True

    def _on_view_change(self, m: ViewChange) -> None:
        if not self._is_voter:
            self._count("dropped_view_change_at_observer")
            return
        self._peer_changing_view(m.src)
        if m.view < self.view or m.view > self.view + self.config.views_ahead_max:
            if self._help_laggards and m.view < self.view and self.mode == NORMAL and \
                    self._new_view is not None and self._new_view.view == self.view:
                # It missed the view change we completed: our NewView proves the view to it.
                self._out.send(m.src, self._new_view)
                self._count("new_views_resent")
            self._count("dropped_view_change_out_of_range")
            return
        if m.view == self.view and self.mode == NORMAL:
            # It missed the NewView that started our view: send it again.
            if self._new_view is not None and self._new_view.view == self.view and self.primary == self._id:
                self._out.send(m.src, self._new_view)
            return
        if not self._valid_view_change(m):
            self._count("dropped_bad_view_change")
            return
        self._view_changes.setdefault(m.view, {})[m.src] = m
        # f+1 replicas want a higher view: at least one is honest, so follow (TOCS 4.5.2).
        latest: dict[NodeId, int] = {}
        for v, vcs in self._view_changes.items():
            if v > self.view:
                for src in vcs:
                    latest[src] = max(latest.get(src, 0), v)
        if len(latest) >= self.config.f + 1:
            self._start_view_change(min(latest.values()))
            return
        self._view_change_progress(self.view)

    def _view_change_progress(self, view: int) -> None:
        if self.mode != VIEW_CHANGE or view != self.view:
            return
        # The NewView timer starts once 2f+1 replicas want this view or a later one
        # (one that moved past it no longer resends its view change for it, and
        # waiting for that would deadlock); a NewView needs 2f+1 for this very view.
        supporters = {src for v, vcs in self._view_changes.items() if v >= view for src in vcs}
        if len(supporters) >= self._quorum and self._vc_deadline is None:
            backoff = min(self._vc_attempt, self.config.view_change_backoff_max)
            self._vc_deadline = self._now + (self.config.view_change_timeout_ms << backoff)
        vcs = self._view_changes.get(view, {})
        if len(vcs) < self._quorum:
            return
        if self.primary == self._id:
            others = [vcs[r] for r in sorted(vcs) if r != self._id][:self._quorum - 1]
            chosen = [vcs[self._id], *others]
            _, _, plan = self._new_view_plan(chosen)
            pps = tuple(self._sign(self._PRE_PREPARE(src=self._id, view=view, seq=s, digest=d, batch=b))
                        for s, d, b in plan)
            nv = self._sign(self._NEW_VIEW(src=self._id, view=view, view_changes=tuple(chosen),
                                           pre_prepares=pps))
            self._rec.append(nv)
            self._send_all(nv)
            self._count("new_views_sent")
            self._enter_view(nv)

    def _new_view_plan(self, vcs: list[ViewChange] | tuple[ViewChange, ...]
                       ) -> tuple[int, ViewChange, list[tuple[int, bytes, tuple[Request, ...]]]]:
        """min-s, the view change holding its proof, and (seq, digest, batch) for min-s+1..max-s."""
        base = max(vcs, key=lambda vc: (vc.stable_seq, -vc.src))
        min_s = base.stable_seq
        best: dict[int, PreparedCert] = {}
        for vc in vcs:
            for cert in vc.prepared:
                have = best.get(cert.seq)
                if cert.seq > min_s and (have is None or (cert.view, cert.pre_prepare.digest) >
                                         (have.view, have.pre_prepare.digest)):
                    best[cert.seq] = cert
        max_s = max(best, default=min_s)
        plan = []
        for s in range(min_s + 1, max_s + 1):
            cert = best.get(s)
            if cert is not None:
                plan.append((s, cert.pre_prepare.digest, cert.pre_prepare.batch))
            else:
                plan.append((s, NULL_DIGEST, ()))
        return min_s, base, plan

    def _on_new_view(self, m: NewView) -> None:
        if m.view < self.view or (m.view == self.view and self.mode == NORMAL):
            return
        if m.view > self.view + self.config.views_ahead_max:
            self._count("dropped_far_view")
            return
        if m.src != self._primary_of(m.view):
            self._count("dropped_new_view_not_from_primary")
            return
        if not self._verify(m):
            return
        srcs = {vc.src for vc in m.view_changes}
        if len(srcs) != len(m.view_changes) or len(srcs) < self._quorum or \
                any(vc.view != m.view or vc.src not in self._voters for vc in m.view_changes) or \
                not all(self._valid_view_change(vc) for vc in m.view_changes):
            self._count("dropped_bad_new_view")
            return
        _, _, plan = self._new_view_plan(m.view_changes)
        if len(plan) != len(m.pre_prepares) or any(
                (pp.src, pp.view, pp.seq, pp.digest) != (m.src, m.view, s, d) or batch_digest(pp.batch) != d
                or not pp.verify(self._verifier) for pp, (s, d, _) in zip(m.pre_prepares, plan, strict=True)):
            self._count("dropped_bad_new_view")
            return
        self._rec.append(m)
        self._enter_view(m)

    def _enter_view(self, nv: NewView) -> None:
        self.view = nv.view
        self.mode = NORMAL
        self._unassigned.clear()  # re-queued below from the pending requests, once the plan is in
        self._view_dirty = True
        self._new_view = nv
        self._vc_deadline = self._resend_deadline = None
        self._vc_attempt = 0
        self._own_vc = None
        for v in [v for v in self._view_changes if v <= nv.view]:
            del self._view_changes[v]
        min_s, base, _ = self._new_view_plan(nv.view_changes)
        if min_s > self.low:
            d = self._checkpoint_proof_digest(min_s, base.checkpoint_proof)
            assert d is not None  # checked with the view change
            self._stabilize(min_s, d, base.checkpoint_proof)
        for slot in self._slots.values():
            slot.reset(nv.view)
        self._assigned = set()
        max_s = self.low
        for pp in nv.pre_prepares:
            max_s = max(max_s, pp.seq)
            if pp.seq > self.low:
                slot = self._slot(pp.seq, nv.view)
                assert slot is not None
                self._accept_pre_prepare(slot, pp)
                if self._primary_prepares and self.primary == self._id:
                    self._send_own_prepare(slot, pp)
                    self._check_prepared(pp.seq, slot)
        self._count("views_entered")
        if self.primary == self._id:
            self._next_seq = max_s + 1
            self._unassigned = OrderedDict((k, r) for k, r in self._pending.items()
                                           if k not in self._assigned)
            self._send_batches()
        else:
            for req in self._pending.values():
                if req.key not in self._assigned:
                    self._out.send(self.primary, req)
        self._restart_request_timer()
        future, self._future = self._future, []
        for msg in future:
            self._HANDLERS[type(msg)](self, msg)

    # -- family hooks: how votes travel and count (PBFT's rules here; ProBFT overrides) ----

    _MESSAGE_TYPES: tuple[type, ...] = MESSAGE_TYPES
    _PRE_PREPARE: type = PrePrepare
    _CERT: type = PreparedCert
    _VIEW_CHANGE: type = ViewChange
    _NEW_VIEW: type = NewView
    # PBFT's primary votes through its PrePrepare; in ProBFT it also sends a Prepare.
    _primary_prepares = False
    # PBFT executes what it prepared and saw 2f+1 Commits for; ProBFT decides on q Commits.
    _commit_needs_prepared = True
    # Answer a ViewChange for a view older than ours with our NewView. PBFT's clients need
    # f+1 replies, so a replica left behind in an old view costs nothing there; ProBFT's
    # need 2f+1, so its laggards must rejoin.
    _help_laggards = False

    def _make_prepare(self, pp: PrePrepare) -> Prepare:
        """This replica's (unsigned) Prepare for an accepted PrePrepare."""
        return Prepare(src=self._id, view=pp.view, seq=pp.seq, digest=pp.digest)

    def _make_commit(self, view: int, seq: int, digest: bytes) -> Commit:
        """This replica's (unsigned) Commit once prepared."""
        return Commit(src=self._id, view=view, seq=seq, digest=digest)

    def _prepare_targets(self, view: int, seq: int) -> tuple[NodeId, ...]:
        """Who gets our Prepare: every other voter."""
        return tuple(r for r in self.config.voter_ids if r != self._id)

    def _commit_targets(self, view: int, seq: int) -> tuple[NodeId, ...]:
        """Who gets our Commit: every other replica (observers execute on the voters' Commits)."""
        return tuple(r for r in range(self._n) if r != self._id)

    def _prepares_needed(self) -> int:
        """Matching Prepares (besides the PrePrepare) that make a prepared certificate: 2f."""
        return self._quorum - 1

    def _commits_needed(self) -> int:
        """Matching Commits that commit: 2f+1."""
        return self._quorum

    def _vote_admitted(self, m: Any, phase: str) -> bool:
        """A signed vote addressed to us: may it count here? (ProBFT checks its VRF sample.)"""
        return True

    def _cert_vote_ok(self, holder: NodeId, p: Prepare) -> bool:
        """May Prepare `p` count in `holder`'s prepared certificate? (ProBFT: was holder in p's sample?)"""
        return True

    def _committed_pre_prepare(self, seq: int) -> PrePrepare | None:
        """The PrePrepare committed at `seq` if this replica knows one, else None."""
        slot = self._slots.get(seq)
        if slot is None or not slot.committed:
            return None
        assert slot.pre_prepare is not None
        return slot.pre_prepare

    # Requests the primary puts first in each batch it makes (T-PBFT's proposer stamp).
    _batch_prefix_len = 0

    def _batch_prefix(self, view: int, seq: int) -> list[Request]:
        """The first `_batch_prefix_len` requests of the batch the primary makes for (view, seq)."""
        return []

    def _defer_view_change(self) -> bool:
        """Our request timer expired: True if something cheaper than a view change was tried first
        (and the timer re-armed). PBFT goes straight to the view change."""
        return False

    def _on_request_timeout(self, view: int) -> None:
        """Our request timer expired in `view`: its primary did not get requests executed in time."""

    def _equivocation(self, first: Any, second: Any) -> None:
        """The same replica signed two conflicting messages for one (view, seq): a proof."""

    def _note_commit(self, m: Commit) -> None:
        """A Commit (ours or a peer's) was counted."""

    def _request_was_done(self, req: Request) -> None:
        """A client asked again for a request already executed here (someone may be behind)."""

    def _peer_changing_view(self, src: NodeId) -> None:
        """A ViewChange from `src` arrived, not yet checked (it may be behind: a hint, not a fact)."""

    def _before_execute(self, seq: int, pp: PrePrepare) -> bool:
        """Called before executing `seq`; False stops execution there."""
        return True

    def _after_execute(self, seq: int, pp: PrePrepare) -> None:
        """Called after executing `seq`, before its checkpoint."""

    def _own_checkpoint_differs(self, seq: int, d: bytes) -> None:
        """A quorum certified another state at `seq` than ours."""
        # 2f+1 signed d, so f+1 honest replicas did: an honest state that differs is our bug.
        raise AssertionError(f"replica {self._id}: state at {seq} differs from a quorum's")

    def _before_install(self, seq: int, snapshot: Any) -> bool:
        """A certified state at `seq` is about to replace ours; False refuses it."""
        return True

    def _restore_record(self, rec: Any) -> bool:
        """Rebuild from a persisted record of a subclass's own kind; True if it was one."""
        return False

    # -- restart -------------------------------------------------------------------------

    def _restore(self, durable: PbftDurable) -> None:
        """Rebuild from storage: state at the stable checkpoint, and what we signed since."""
        if durable.stable is not None:
            st = durable.stable
            self._sm.restore(st.snapshot)
            self.low = self.last_exec = st.seq
            self._stable_digest, self._stable_proof, self._stable_snapshot = st.digest, st.proof, st.snapshot
            self._own_checkpoints[st.seq] = (st.digest, st.snapshot)
        self.view = durable.view
        self._next_seq = self.low + 1
        for rec in durable.records:
            if self._restore_record(rec):
                continue
            if isinstance(rec, NewView):
                self._new_view = rec
                for pp in rec.pre_prepares:
                    slot = self._slot(pp.seq, pp.view) if pp.seq > self.low else None
                    if slot is not None:
                        slot.pre_prepare, slot.own_digest = pp, pp.digest
                    if rec.view == self.view:
                        self._next_seq = max(self._next_seq, pp.seq + 1)
            elif isinstance(rec, ViewChange):
                self._own_vc = rec
            elif isinstance(rec, PreparedCert):
                slot = self._slots.get(rec.seq)
                if rec.seq > self.low and (slot is None or slot.cert is None or slot.cert.view <= rec.view):
                    self._slots.setdefault(rec.seq, _Slot(rec.view)).cert = rec
            elif rec.seq > self.low:
                slot = self._slot(rec.seq, rec.view)
                if slot is None:
                    continue
                if isinstance(rec, PrePrepare):
                    slot.pre_prepare, slot.own_digest = rec, rec.digest
                    if rec.view == self.view:
                        self._next_seq = max(self._next_seq, rec.seq + 1)
                elif isinstance(rec, Prepare):
                    slot.own_digest = rec.digest
                    slot.prepares[self._id] = rec
                elif isinstance(rec, Commit):
                    slot.commits[self._id] = rec.digest
        if self._own_vc is not None and self._own_vc.view == self.view and \
                (self._new_view is None or self._new_view.view < self.view):
            self.mode = VIEW_CHANGE
            self._view_changes[self.view] = {self._id: self._own_vc}
            self._resend_deadline = self._now
        self._count("restarts")

    # -- readiness -----------------------------------------------------------------------

    def _ready(self) -> Ready:
        if self._rec or self._view_dirty or self._stable_dirty is not None:
            self._out.persist = PbftPersist(view=self.view if self._view_dirty else None,
                                            records=tuple(self._rec), stable=self._stable_dirty)
            self._rec = []
            self._view_dirty = False
            self._stable_dirty = None
        return self._out.take()

    _HANDLERS: dict[type, Any] = {
        PrePrepare: _on_pre_prepare, Prepare: _on_prepare, Commit: _on_commit, Checkpoint: _on_checkpoint,
        ViewChange: _on_view_change, NewView: _on_new_view, FetchState: _on_fetch_state,
        StateReply: _on_state_reply,
    }
