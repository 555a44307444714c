"""The Bullshark validator, partially synchronous version (Spiegelman, Giridharan, Sonnino,
Kokoris-Kogias, CCS '22, and "Bullshark: The Partially Synchronous Version", arXiv 2209.05633),
over a Narwhal-style DAG (Danezis et al., EuroSys '22), as a deterministic sans-IO core.

n validators tolerate f = (n-1)//3 Byzantine ones; a quorum is (n+f)//2+1 (2f+1
when n = 3f+1), so two quorums share an honest validator.

The DAG (Narwhal 3.1). In round r a validator proposes one header: a batch of
client requests and the digests of at least a quorum of certificates of round
r-1. Others vote for it (once per author and round, persisted first) if they
hold all its parents; a quorum of votes is a certificate, the vertex. One
certificate per (author, round) can exist, so equivocation cannot fork the DAG.
A validator inserts a certificate only once it holds its parents (fetching the
missing ones from the sender), so every vertex's causal history is available.

Rounds (the partially synchronous version, Section 4). A validator moves from
round r to r+1 once it holds a quorum of round-r certificates and: r even (an
anchor round), the anchor, leader(r) = (r/2) mod n round-robin, is there or a
timeout expired; r odd (a voting round), f+1 round-r certificates vote for the
anchor of r-1 (have it as a parent), or a quorum do not, or a timeout expired.
After GST, honest leaders' anchors get their votes before the timeouts.

Commit rule (Section 4, Algorithm 2). An anchor is committed when f+1 round
r+1 certificates vote for it. Committing it first orders earlier anchors: going
back two rounds at a time to the last committed one, each anchor with a path
from the newer one is ordered before it (any anchor an honest validator
committed directly has such a path from every later anchor: its f+1 votes and
every later quorum share an honest vertex). Then each anchor's causal history
not yet ordered is ordered deterministically, by (round, author). All honest
validators so order the same vertices in the same order.

Garbage collection: vertices more than `gc_depth` rounds below the last
committed anchor are dropped and never ordered (Narwhal's GC; a request in one
is retried by its client). Every `checkpoint_anchors` committed anchors the
validators sign their state (PBFT's Checkpoint, at the position in the total
order); 2f+1 equal signatures make it stable, and a validator that fell more
than gc_depth rounds behind fetches that state instead of the DAG.

The DAG grows only while there is work: pending requests, vertices not yet
ordered, or peers at our round or beyond; otherwise validators go quiet
(Narwhal proposes empty headers on a timer; the simulator prefers quiescence).
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
from fabric.consensus.bullshark.messages import (
    BATCH_LIMIT,
    CERTS_PER_RESPONSE_LIMIT,
    DIGESTS_PER_REQUEST_LIMIT,
    Certificate,
    CertRequest,
    CertResponse,
    Header,
    Vote,
)
from fabric.consensus.canonical import digest as canonical_digest
from fabric.consensus.errors import MalformedMessageError
from fabric.consensus.pbft.messages import REPLICAS_LIMIT, Checkpoint, FetchState, StateReply
from fabric.consensus.signing import Signer, Verifier
from fabric.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class BullsharkConfig:
    """One validator's settings; `validate()` says how to fix a bad value."""

    id: NodeId
    n: int
    # Requests per header (Narwhal's batches are workers' digests; here the requests).
    batch_max: int = 64
    # Wait this long for the anchor (even rounds) or its votes (odd rounds) before moving on:
    # a few WAN round trips (Bullshark's timeout; after GST honest anchors beat it).
    leader_timeout_ms: int = 1_000
    # Retransmission of our uncertified header, our latest certificate, missing parents.
    resend_ms: int = 400
    # Rounds kept below the last committed anchor (Narwhal's gc_depth, 50 in its benchmarks).
    gc_depth: int = 50
    # A checkpoint every this many committed anchors.
    checkpoint_anchors: int = 8
    # Client requests waiting for a header.
    requests_pending_max: int = 4096
    # Headers and certificates kept while their parents are fetched.
    waiting_max: int = 1024
    # Headers accepted this many rounds above ours (a Byzantine one cannot make us store far ones).
    rounds_ahead_max: int = 64
    # Request keys remembered as already in the DAG (not proposed again).
    seen_requests_max: int = 16_384

    @property
    def f(self) -> int:
        """Byzantine validators tolerated."""
        return (self.n - 1) // 3

    @property
    def quorum(self) -> int:
        """Any two quorums share f+1 validators."""
        return (self.n + self.f) // 2 + 1

    def validate(self) -> BullsharkConfig:
        """Return self, or raise ConfigError naming the bad value and its allowed range."""
        def bad(name: str, why: str) -> ConfigError:
            """The error naming the bad value."""
            return ConfigError(f"bullshark config {name}={getattr(self, name)!r}: {why}")
        if not 4 <= self.n <= REPLICAS_LIMIT:
            raise bad("n", f"use 4..{REPLICAS_LIMIT} (n = 3f+1 tolerates f faulty)")
        if type(self.id) is not int or not 0 <= self.id < self.n:
            raise bad("id", "use 0..n-1")
        if not 1 <= self.batch_max <= BATCH_LIMIT:
            raise bad("batch_max", f"use 1..{BATCH_LIMIT}")
        for name in ("leader_timeout_ms", "resend_ms"):
            if not 1 <= getattr(self, name) <= 3_600_000:
                raise bad(name, "use 1..3600000 ms")
        if not 4 <= self.gc_depth <= 100_000:
            raise bad("gc_depth", "use 4..100000 rounds")
        if not 1 <= self.checkpoint_anchors <= 100_000:
            raise bad("checkpoint_anchors", "use 1..100000")
        for name in ("requests_pending_max", "waiting_max", "seen_requests_max"):
            if not 1 <= getattr(self, name) <= 10_000_000:
                raise bad(name, "use 1..10000000")
        if not 2 <= self.rounds_ahead_max <= 100_000:
            raise bad("rounds_ahead_max", "use 2..100000")
        return self


@dataclass(frozen=True, kw_only=True)
class BullsharkPersist:
    """One Ready's changes to durable state: our headers and votes, the DAG's new certificates (Narwhal
    stores every certificate it holds, so a restart does not lose parents others may need), a stable
    checkpoint, and the garbage-collection round."""

    headers: tuple[Header, ...] = ()
    certs: tuple[Certificate, ...] = ()
    votes: tuple[tuple[int, int, bytes], ...] = ()  # (author, round, digest) we voted for
    stable: Any = None  # (position, digest, proof, snapshot)
    gc_round: int | None = None

    def brief(self) -> str:
        """Short text form for scripts."""
        parts = [f"header r={h.round}" for h in self.headers] + [f"vote {a}@{r}" for a, r, _ in self.votes]
        if self.certs:
            parts.append(f"{len(self.certs)} certificates")
        if self.stable is not None:
            parts.append(f"stable@{self.stable[0]}")
        return ", ".join(parts) or "gc"


@dataclass(frozen=True, kw_only=True)
class BullsharkDurable:
    """What `load` returns."""

    headers: tuple[Header, ...]
    votes: tuple[tuple[int, int, bytes], ...]
    certs: tuple[Certificate, ...]
    stable: Any


class MemoryBullsharkStorage:
    """Durable state kept in memory: survives a simulated crash, not the process."""

    def __init__(self) -> None:
        self._headers: dict[int, Header] = {}
        self._votes: dict[tuple[int, int], bytes] = {}
        self._certs: dict[bytes, Certificate] = {}
        self._stable: Any = None
        self.saves = 0

    def load(self) -> BullsharkDurable:
        """What was saved."""
        return BullsharkDurable(headers=tuple(self._headers[r] for r in sorted(self._headers)),
                                votes=tuple((a, r, d) for (a, r), d in sorted(self._votes.items())),
                                certs=tuple(sorted(self._certs.values(), key=lambda c: (c.round, c.author))),
                                stable=self._stable)

    def save(self, persist: BullsharkPersist) -> None:
        """Apply `persist`; records below its GC round are dropped."""
        for h in persist.headers:
            self._headers[h.round] = h
        for a, r, d in persist.votes:
            self._votes[(a, r)] = d
        for c in persist.certs:
            self._certs[c.digest] = c
        if persist.stable is not None:
            self._stable = persist.stable
        if persist.gc_round is not None:
            self._headers = {r: h for r, h in self._headers.items() if r > persist.gc_round}
            self._votes = {k: d for k, d in self._votes.items() if k[1] > persist.gc_round}
            self._certs = {k: c for k, c in self._certs.items() if c.round > persist.gc_round}
        self.saves += 1


class BullsharkReplica:
    """One Bullshark validator (see the module doc and fabric.consensus.api for how to drive it)."""

    def __init__(self, config: BullsharkConfig, *, state_machine: StateMachine, rng: random.Random,
                 signer: Signer, verifier: Verifier, client_verifier: Verifier,
                 durable: BullsharkDurable | None = None, now_ms: int = 0) -> None:
        self.config = config.validate()
        assert signer.identity == config.id, "a validator signs as itself"
        self._id = config.id
        self._n = config.n
        self._f = config.f
        self._quorum = config.quorum
        self._sm = state_machine
        self._rng = rng
        self._signer = signer
        self._verifier = verifier
        self._client_verifier = client_verifier
        self._now = now_ms
        self._out = Outbox()
        self.counters: dict[str, int] = {}

        self.round = 1  # the round of our next header
        self._round_deadline: int | None = None
        self._round_timed_out = False
        self._own: dict[int, Header] = {}  # our headers by round
        self._own_votes: dict[int, dict[NodeId, Vote]] = {}  # round -> voter -> vote for our header
        self._voted: dict[tuple[int, int], bytes] = {}  # (author, round) -> digest we voted for
        self._dag: dict[int, dict[NodeId, Certificate]] = {}
        self._by_digest: dict[bytes, Certificate] = {}
        self._waiting: OrderedDict[bytes, tuple[Any, NodeId]] = OrderedDict()  # digest -> (header|cert, from)
        self._missing: dict[bytes, NodeId] = {}  # parent digest -> who to ask
        self._highest_seen = 0  # highest round of a valid header or certificate seen
        self.last_committed_round = 0
        self.gc_round = 0
        self.position = 0  # vertices ordered so far
        self._ordered: set[tuple[int, NodeId]] = set()  # (round, author) ordered, rounds above gc_round
        self._unordered: set[tuple[int, NodeId]] = set()  # vertices with requests, in the DAG, not ordered
        self._anchors_committed = 0
        self._pending: OrderedDict[tuple[str, int], Request] = OrderedDict()
        self._seen_requests: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._resend_deadline: int | None = None
        self._resend_round = 0  # our round at the last resend: repair only what stopped moving
        self._persisted_gc = 0  # rounds at or below this were dropped from storage (_prune_storage)
        # Checkpoints: position -> src -> Checkpoint; ours: position -> (digest, snapshot).
        self._checkpoints: dict[int, dict[NodeId, Checkpoint]] = {}
        self._own_checkpoints: dict[int, tuple[bytes, Any]] = {}
        self._stable: tuple[int, bytes, tuple[Checkpoint, ...], Any] | None = None
        self._fetch_deadline: int | None = None
        self._fetch_round = 0
        self._fetch_target: int | None = None  # a stable position above ours we know of
        # Durable changes made by this event.
        self._rec_headers: list[Header] = []
        self._rec_certs: list[Certificate] = []
        self._restoring = False
        self._rec_votes: list[tuple[int, int, bytes]] = []
        self._rec_stable: Any = None
        self._rec_gc: int | None = None
        if durable is not None:
            self._restore(durable)

    # -- the sans-IO interface ---------------------------------------------------------

    @property
    def id(self) -> NodeId:
        """This validator's id."""
        return self._id

    def step(self, msg: Any) -> Ready:
        """Take a peer's message (or a client request another validator forwarded)."""
        if type(msg) is Request:
            return self.propose(msg)
        handler = self._HANDLERS.get(type(msg))
        if handler is None:
            self._count("dropped_unknown_type")
            return self._ready()
        try:
            msg.check()
        except MalformedMessageError:
            self._count("dropped_malformed")
            return self._ready()
        src = msg.src if not isinstance(msg, Certificate) else msg.author
        if not 0 <= src < self._n or (src == self._id and not isinstance(msg, Certificate)):
            self._count("dropped_bad_src")
            return self._ready()
        handler(self, msg)
        self._progress()
        return self._ready()

    def tick(self, now_ms: int) -> Ready:
        """Let time pass: round timeouts, retransmissions, state fetches."""
        assert now_ms >= self._now, f"time went backwards: {now_ms} < {self._now}"
        self._now = now_ms
        if self._round_deadline is not None and now_ms >= self._round_deadline:
            self._round_deadline = None
            self._round_timed_out = True
            self._count("round_timeouts")
        if self._resend_deadline is not None and now_ms >= self._resend_deadline:
            self._resend()
        if self._fetch_deadline is not None and now_ms >= self._fetch_deadline:
            self._fetch_deadline = None
            if self._behind():
                self._fetch_state(self._fetch_target)
        self._progress()
        return self._ready()

    def propose(self, request: Request) -> Ready:
        """A client's request: it goes into one of our next headers."""
        self._on_request(request)
        self._progress()
        return self._ready()

    def read(self, request: Request) -> Ready:
        """Reads are ordered through the DAG like commands, so linearizable."""
        return self.propose(request)

    def deadline_ms(self) -> int | None:
        """When `tick` next has work."""
        times = [t for t in (self._round_deadline if self._active() else None, self._resend_deadline,
                             self._fetch_deadline) if t is not None]
        return min(times) if times else None

    def status(self) -> ReplicaStatus:
        """Role, round, the current round's anchor leader, ordered position, counters."""
        return ReplicaStatus(id=self._id, role="validator", term=self.round,
                             leader=self.leader(self.round - self.round % 2), commit=self.position,
                             applied=self.position, members=tuple(range(self._n)),
                             counters=dict(self.counters))

    def leader(self, round_: int) -> NodeId:
        """The anchor's author of an even round: round-robin."""
        return (round_ // 2) % self._n

    # -- helpers ---------------------------------------------------------------------------

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def _send_all(self, msg: Any) -> None:
        for r in range(self._n):
            if r != self._id:
                self._out.send(r, msg)

    def _client_signature_ok(self, req: Request) -> bool:
        try:
            payload = req.signed_bytes
        except MalformedMessageError:
            return False
        return self._client_verifier.verify(req.client_id, payload, req.signature)

    def _reply(self, req: Request, result: Any) -> None:
        self._out.replies.append(ClientReply(client_id=req.client_id, request_id=req.request_id,
                                             replica=self._id, status="ok", result=result, view=0))

    def _certs(self, round_: int) -> dict[NodeId, Certificate]:
        return self._dag.get(round_, {})

    def _remember_request(self, key: tuple[str, int]) -> None:
        self._seen_requests[key] = None
        self._seen_requests.move_to_end(key)
        if len(self._seen_requests) > self.config.seen_requests_max:
            self._seen_requests.popitem(last=False)

    # -- client requests -----------------------------------------------------------------

    def _on_request(self, req: Request) -> None:
        if not self._client_signature_ok(req):
            self._count("dropped_bad_client_signature")
            return
        found, result = self._sm.cached_result(req)
        if found:
            self._reply(req, result)
            return
        key = req.key
        if key in self._pending or key in self._seen_requests:
            return
        if len(self._pending) >= self.config.requests_pending_max:
            self._count("request_refused_backlog")
            self._out.replies.append(ClientReply(client_id=req.client_id, request_id=req.request_id,
                                                 replica=self._id, status="retry", view=0))
            return
        self._pending[key] = req

    # -- the DAG: headers, votes, certificates ---------------------------------------------

    def _on_header(self, h: Header) -> None:
        if h.round <= self.gc_round or h.round > self.round + self.config.rounds_ahead_max:
            self._count("dropped_header_out_of_range")
            return
        if not h.verify(self._verifier):
            self._count("dropped_bad_signature")
            return
        self._highest_seen = max(self._highest_seen, h.round)
        voted = self._voted.get((h.src, h.round))
        if voted is not None:
            if voted == h.digest:
                self._send_vote(h)  # it may have lost our vote
            else:
                self._count("equivocation_detected")
            return
        if not self._header_valid(h):
            self._count("dropped_bad_header")
            return
        missing = [p for p in h.parents if p not in self._by_digest]
        if missing and h.round - 1 > self.gc_round:
            self._wait(h.digest, h, h.src, missing)
            return
        if not self._parents_ok(h):
            self._count("dropped_bad_parents")
            return
        self._voted[(h.src, h.round)] = h.digest  # persisted before the vote leaves
        self._rec_votes.append((h.src, h.round, h.digest))
        self._send_vote(h)

    def _header_valid(self, h: Header) -> bool:
        """Well formed for its round: signed distinct requests, a quorum of parents (checked once here)."""
        if len(h.batch) > self.config.batch_max or len({r.key for r in h.batch}) != len(h.batch):
            return False
        if (h.round == 1) != (not h.parents) or (h.round > 1 and len(h.parents) < self._quorum):
            return False
        return all(self._client_signature_ok(r) for r in h.batch)

    def _parents_ok(self, h: Header) -> bool:
        """Every parent held is a certificate of round-1, by distinct authors (GC'd ones aside)."""
        if h.round == 1 or h.round - 1 <= self.gc_round:
            return True
        authors = set()
        for p in h.parents:
            c = self._by_digest.get(p)
            if c is None or c.round != h.round - 1 or c.author in authors:
                return False
            authors.add(c.author)
        return len(authors) >= self._quorum

    def _send_vote(self, h: Header) -> None:
        vote = Vote(src=self._id, author=h.src, round=h.round, digest=h.digest).signed(self._signer)
        self._out.send(h.src, vote)

    def _on_vote(self, v: Vote) -> None:
        h = self._own.get(v.round)
        if h is None or v.author != self._id or v.digest != h.digest:
            self._count("dropped_stray_vote")
            return
        votes = self._own_votes.setdefault(v.round, {})
        if v.src in votes or self._id in self._certs(v.round):
            return
        if not v.verify(self._verifier):
            self._count("dropped_bad_signature")
            return
        votes[v.src] = v
        if len(votes) >= self._quorum:
            cert = Certificate(header=h, votes=tuple(votes[s] for s in sorted(votes)[:self._quorum]))
            self._send_all(cert)
            self._count("certificates_formed")
            self._insert(cert)

    def _cert_valid(self, c: Certificate) -> bool:
        h = c.header
        if not h.verify(self._verifier) or not self._header_valid(h):
            return False
        srcs = set()
        for v in c.votes:
            if (v.author, v.round, v.digest) != (h.src, h.round, h.digest) or v.src in srcs \
                    or not 0 <= v.src < self._n or not v.verify(self._verifier):
                return False
            srcs.add(v.src)
        return len(srcs) >= self._quorum

    def _on_certificate(self, c: Certificate) -> None:
        if c.round <= self.gc_round or c.digest in self._by_digest:
            return
        have = self._certs(c.round).get(c.author)
        if have is not None:
            self._count("equivocation_detected")  # a second certificate: more than f lied
            return
        if not self._cert_valid(c):
            self._count("dropped_bad_certificate")
            return
        self._highest_seen = max(self._highest_seen, c.round)
        missing = [p for p in c.header.parents if p not in self._by_digest]
        if missing and c.round - 1 > self.gc_round:
            self._wait(c.digest, c, c.author, missing)
            return
        self._insert(c)

    def _wait(self, digest: bytes, item: Any, source: NodeId, missing: list[bytes]) -> None:
        """Keep a header or certificate until its parents arrive; ask `source` for them."""
        if digest not in self._waiting:
            if len(self._waiting) >= self.config.waiting_max:
                self._waiting.popitem(last=False)
                self._count("dropped_waiting_overflow")
            self._waiting[digest] = (item, source)
        ask = [p for p in missing if p not in self._missing]
        for p in missing:
            self._missing[p] = source
        if ask:
            self._out.send(source, CertRequest(src=self._id, digests=tuple(ask[:DIGESTS_PER_REQUEST_LIMIT])))
            self._count("parents_requested")
        self._arm_resend()

    def _insert(self, c: Certificate) -> None:
        """Add a certificate whose parents we hold to the DAG; wake what waited for it."""
        if c.digest in self._by_digest or c.round <= self.gc_round:
            return
        self._dag.setdefault(c.round, {})[c.author] = c
        self._by_digest[c.digest] = c
        self._missing.pop(c.digest, None)
        if c.header.batch and (c.round, c.author) not in self._ordered:
            self._unordered.add((c.round, c.author))
        if not self._restoring:
            self._rec_certs.append(c)
        for r in c.header.batch:  # certified: it will be ordered or garbage-collected
            self._remember_request(r.key)
            self._pending.pop(r.key, None)
        ready = [d for d, (item, _) in self._waiting.items()
                 if all(p in self._by_digest for p in item_parents(item))]
        for d in ready:
            entry = self._waiting.pop(d, None)
            if entry is None:
                continue  # a nested insert already took it
            item = entry[0]
            if isinstance(item, Certificate):
                self._insert(item)
            else:
                self._on_header(item)
        self._try_commit()

    def _on_cert_request(self, m: CertRequest) -> None:
        certs = [self._by_digest[d] for d in m.digests if d in self._by_digest]
        if m.from_round:
            certs += [c for r in sorted(self._dag) if r >= m.from_round for c in self._dag[r].values()]
        if certs:
            self._out.send(m.src, CertResponse(src=self._id, certs=tuple(certs[:CERTS_PER_RESPONSE_LIMIT])))

    def _on_cert_response(self, m: CertResponse) -> None:
        for c in sorted(m.certs, key=lambda c: c.round):  # checked with the response
            self._on_certificate(c)

    # -- rounds ------------------------------------------------------------------------------

    def _active(self) -> bool:
        """Is there work that needs the DAG to grow?"""
        return bool(self._pending) or self._highest_seen >= self.round or self._unordered_payload()

    def _unordered_payload(self) -> bool:
        return bool(self._unordered)

    def _progress(self) -> None:
        """Propose, and move through rounds, as far as the rules allow (module doc, Section 4)."""
        while True:
            r = self.round
            if r not in self._own:
                if not self._active():
                    return
                if r > 1 and len(self._certs(r - 1)) < self._quorum:
                    return
                self._propose_header(r)
            if self._round_deadline is None and not self._round_timed_out:
                self._round_deadline = self._now + self.config.leader_timeout_ms  # e.g. after a restart
            if len(self._certs(r)) < self._quorum or not self._may_leave(r):
                return
            self.round = r + 1
            self._round_deadline = self._now + self.config.leader_timeout_ms
            self._round_timed_out = False

    def _may_leave(self, r: int) -> bool:
        if self._round_timed_out:
            return True
        if r % 2 == 0:
            return self.leader(r) in self._certs(r)
        anchor = self._certs(r - 1).get(self.leader(r - 1))
        if anchor is None:
            return True
        votes = sum(1 for c in self._certs(r).values() if anchor.digest in c.header.parents)
        return votes >= self._f + 1 or len(self._certs(r)) - votes >= self._quorum

    def _propose_header(self, r: int) -> None:
        parents: tuple[bytes, ...] = ()
        if r > 1:
            parents = tuple(c.digest for _, c in sorted(self._certs(r - 1).items()))
        batch: list[Request] = []
        while self._pending and len(batch) < self.config.batch_max:
            key, req = self._pending.popitem(last=False)
            if key not in self._seen_requests and not self._sm.cached_result(req)[0]:
                batch.append(req)
                self._remember_request(key)
        h = Header(src=self._id, round=r, batch=tuple(batch), parents=parents).signed(self._signer)
        self._own[r] = h
        self._rec_headers.append(h)
        self._voted[(self._id, r)] = h.digest  # we vote for our own header
        self._rec_votes.append((self._id, r, h.digest))
        self._own_votes[r] = {self._id: Vote(src=self._id, author=self._id, round=r,
                                             digest=h.digest).signed(self._signer)}
        self._send_all(h)
        self._count("headers")
        if self._round_deadline is None and not self._round_timed_out:
            self._round_deadline = self._now + self.config.leader_timeout_ms
        self._arm_resend()

    def _arm_resend(self) -> None:
        if self._resend_deadline is None:
            self._resend_deadline = self._now + self.config.resend_ms

    def _resend(self) -> None:
        """Repair what a lossy network broke: our uncertified header, parents we miss, and, when our
        round has not moved since the last resend, our latest certificate and a request for the
        certificates above ours (a validator that keeps advancing needs no help; one that is stuck
        asks, and peers stuck below us ask us in turn)."""
        self._resend_deadline = None
        work = False
        h = self._own.get(self.round) or self._own.get(self.round - 1)
        if h is not None and h.src not in self._certs(h.round):
            votes = self._own_votes.get(h.round, {})
            for r in range(self._n):
                if r not in votes:
                    self._out.send(r, h)
            work = True
        mine = max((r for r, certs in self._dag.items() if self._id in certs), default=0)
        stuck = self.round == self._resend_round  # no round advanced since the last resend
        self._resend_round = self.round
        if mine and self._active() and stuck:
            self._send_all(self._dag[mine][self._id])
            # Peers stuck below us: ask for what is above what we hold, as well.
            self._send_all(CertRequest(src=self._id, digests=(), from_round=max(self._dag)))
            work = True
        if self._missing:
            by_source: dict[NodeId, list[bytes]] = {}
            for d, src in self._missing.items():
                by_source.setdefault(src, []).append(d)
            peers = [r for r in range(self._n) if r != self._id]
            for src, ds in sorted(by_source.items()):
                # Ask the source, and someone else in case the source withholds them.
                for ask in {src, self._rng.choice(peers)} - {self._id}:
                    self._out.send(ask, CertRequest(src=self._id,
                                                    digests=tuple(ds[:DIGESTS_PER_REQUEST_LIMIT])))
            work = True
        if self._behind() and self._fetch_deadline is None:
            self._fetch_round = 0
            self._fetch_state(self._fetch_target)
        if work or self._active():
            self._arm_resend()
        self._count("resends")

    # -- ordering (the commit rule) ----------------------------------------------------------

    def _try_commit(self) -> None:
        top = max(self._dag, default=0)
        best = None
        for r in range(self.last_committed_round + 2, top, 2):
            anchor = self._certs(r).get(self.leader(r))
            if anchor is None:
                continue
            votes = sum(1 for c in self._certs(r + 1).values() if anchor.digest in c.header.parents)
            if votes >= self._f + 1:
                best = anchor
        if best is not None:
            self._commit(best)

    def _path(self, high: Certificate, low: Certificate) -> bool:
        """Is `low` in `high`'s causal history (in our DAG)?"""
        frontier = {high.digest}
        for r in range(high.round, low.round, -1):
            nxt: set[bytes] = set()
            for d in frontier:
                c = self._by_digest.get(d)
                if c is not None and c.round == r:
                    nxt.update(c.header.parents)
            frontier = nxt
            if not frontier:
                return False
        return low.digest in frontier

    def _commit(self, anchor: Certificate) -> None:
        stack = [anchor]
        a = anchor
        for r in range(anchor.round - 2, self.last_committed_round, -2):
            prev = self._certs(r).get(self.leader(r))
            if prev is not None and self._path(a, prev):
                stack.append(prev)
                a = prev
        for a in reversed(stack):
            self._order_history(a)
            self.last_committed_round = a.round
            self._anchors_committed += 1
            self._count("anchors_committed")
            if self._anchors_committed % self.config.checkpoint_anchors == 0:
                self._take_checkpoint(a.round)
        self._collect_garbage()

    def _order_history(self, anchor: Certificate) -> None:
        """Order the anchor's causal history not yet ordered, by (round, author) (deterministic)."""
        floor = anchor.round - self.config.gc_depth
        todo: list[Certificate] = []
        seen = {anchor.digest}
        stack = [anchor]
        while stack:
            c = stack.pop()
            if (c.round, c.author) in self._ordered:
                continue
            todo.append(c)
            for p in c.header.parents:
                pc = self._by_digest.get(p)
                if pc is not None and pc.round > floor and p not in seen:
                    seen.add(p)
                    stack.append(pc)
        for c in sorted(todo, key=lambda c: (c.round, c.author)):
            self._deliver(c)

    def _deliver(self, c: Certificate) -> None:
        self._ordered.add((c.round, c.author))
        self._unordered.discard((c.round, c.author))
        self.position += 1
        self._out.decided.append((self.position, c.digest))
        for j, req in enumerate(c.header.batch):
            result = self._sm.apply(req)
            self._out.committed.append(Committed(index=self.position, slot=j, request=req, result=result))
            self._reply(req, result)
            self._pending.pop(req.key, None)
        self._count("vertices_ordered")

    def _collect_garbage(self) -> None:
        gc = self.last_committed_round - self.config.gc_depth
        if gc <= self.gc_round:
            return
        self.gc_round = gc
        for r in [r for r in self._dag if r <= gc]:
            for c in self._dag.pop(r).values():
                self._by_digest.pop(c.digest, None)
                if (c.round, c.author) not in self._ordered:
                    self._count("vertices_garbage_collected_unordered")
                    for req in c.header.batch:  # never ordered: a retry must be proposed again
                        self._seen_requests.pop(req.key, None)
        self._ordered = {k for k in self._ordered if k[0] > gc}
        self._unordered = {k for k in self._unordered if k[0] > gc}
        for table in (self._own, self._own_votes):
            for r in [r for r in table if r <= gc]:
                del table[r]
        self._voted = {k: d for k, d in self._voted.items() if k[1] > gc}
        self._waiting = OrderedDict((d, v) for d, v in self._waiting.items() if item_round(v[0]) > gc)
        self._missing = {p: src for item, src in self._waiting.values() for p in item_parents(item)
                         if p not in self._by_digest}
        self._prune_storage()
        if self.round <= gc:
            self.round = gc + 1

    def _prune_storage(self) -> None:
        """Let storage drop rounds the memory dropped, but never those a restart replays.

        A restarted validator installs its stable checkpoint (or starts from round 1 if it
        has none) and re-orders the DAG above it from storage, so storage keeps every round
        above the stable anchor's own GC floor; dropping more would make a restart order the
        rest of the DAG from position 0 on a fresh ledger.
        """
        stable_floor = 0
        if self._stable is not None:
            stable_floor = max(0, int(self._stable[3]["anchor_round"]) - self.config.gc_depth)
        floor = min(self.gc_round, stable_floor)
        if floor > self._persisted_gc:
            self._persisted_gc = floor
            self._rec_gc = floor

    # -- checkpoints and state transfer -------------------------------------------------

    def _snapshot(self, anchor_round: int) -> dict[str, Any]:
        """The state at this position: the application, and what the next anchors need to know."""
        floor = anchor_round - self.config.gc_depth
        ordered = sorted([r, a] for r, a in self._ordered if r > floor)
        return {"app": self._sm.snapshot(), "anchor_round": anchor_round, "position": self.position,
                "anchors": self._anchors_committed, "ordered": ordered}

    def _take_checkpoint(self, anchor_round: int) -> None:
        snap = self._snapshot(anchor_round)
        d = canonical_digest(snap)
        self._own_checkpoints[self.position] = (d, snap)
        cp = Checkpoint(src=self._id, seq=self.position, state_digest=d).signed(self._signer)
        self._checkpoints.setdefault(self.position, {})[self._id] = cp
        self._send_all(cp)
        self._check_stable(self.position)

    def _on_checkpoint(self, m: Checkpoint) -> None:
        stable = self._stable[0] if self._stable else 0
        if m.seq <= stable:
            return
        if m.seq not in self._checkpoints and len(self._checkpoints) >= 2 * REPLICAS_LIMIT:
            lowest = min(self._checkpoints)
            if lowest > m.seq:
                return
            del self._checkpoints[lowest]
        if not m.verify(self._verifier):
            self._count("dropped_bad_signature")
            return
        self._checkpoints.setdefault(m.seq, {}).setdefault(m.src, m)
        self._check_stable(m.seq)

    def _proof_digest(self, seq: int, proof: tuple[Checkpoint, ...]) -> bytes | None:
        if not proof:
            return None
        d = proof[0].state_digest
        srcs = set()
        for cp in proof:
            if cp.seq != seq or cp.state_digest != d or not 0 <= cp.src < self._n or cp.src in srcs \
                    or not cp.verify(self._verifier):
                return None
            srcs.add(cp.src)
        return d if len(srcs) >= self._quorum else None

    def _check_stable(self, seq: int) -> None:
        by_digest: dict[bytes, list[Checkpoint]] = {}
        for cp in self._checkpoints.get(seq, {}).values():
            by_digest.setdefault(cp.state_digest, []).append(cp)
        for d, group in by_digest.items():
            if len(group) < self._quorum:
                continue
            proof = tuple(sorted(group, key=lambda c: c.src)[:self._quorum])
            own = self._own_checkpoints.get(seq)
            if own is not None:
                # 2f+1 signed d, so f+1 honest validators did: an honest state that differs is our bug.
                assert own[0] == d, f"validator {self._id}: state at position {seq} differs from a quorum's"
                self._stable = (seq, d, proof, own[1])
                self._rec_stable = self._stable
                self._count("checkpoints_stable")
                self._prune_storage()
            elif seq > self.position:
                self._fetch_target = max(seq, self._fetch_target or 0)
                if self._fetch_deadline is None:
                    self._fetch_round = 0
                    self._fetch_state(seq)
            for s in [s for s in self._checkpoints if s <= seq]:
                del self._checkpoints[s]
            for s in [s for s in self._own_checkpoints if s < seq]:
                del self._own_checkpoints[s]
            return

    def _behind(self) -> bool:
        """Too far behind to catch up through the DAG: fetch a certified state instead."""
        return (self._fetch_target is not None and self._fetch_target > self.position) or \
            self._highest_seen - self.last_committed_round > self.config.gc_depth

    def _fetch_state(self, seq: int | None = None) -> None:
        self._fetch_deadline = self._now + self.config.resend_ms
        target = [r for r in range(self._n) if r != self._id][self._fetch_round % (self._n - 1)]
        self._fetch_round += 1
        self._out.send(target, FetchState(src=self._id, seq=seq or self.position + 1).signed(self._signer))
        self._count("state_fetches")

    def _on_fetch_state(self, m: FetchState) -> None:
        if self._stable is None or self._stable[0] < m.seq or not m.verify(self._verifier):
            return
        seq, _, proof, snap = self._stable
        reply = StateReply(src=self._id, seq=seq, proof=proof, snapshot=snap).signed(self._signer)
        self._out.send(m.src, reply)

    def _on_state_reply(self, m: StateReply) -> None:
        if m.seq <= self.position or not m.verify(self._verifier):
            return
        d = self._proof_digest(m.seq, m.proof)
        try:
            ok = d is not None and canonical_digest(m.snapshot) == d
        except MalformedMessageError:
            ok = False
        if not ok:
            self._count("dropped_bad_state")
            return
        snap = m.snapshot
        self._install(snap)
        self._stable = (m.seq, d, m.proof, snap)
        self._rec_stable = self._stable
        self._prune_storage()
        self._fetch_deadline = None
        if self._fetch_target is not None and self._fetch_target <= self.position:
            self._fetch_target = None
        self._count("states_installed")

    def _install(self, snap: dict[str, Any]) -> None:
        """Jump to a certified state: application, position, last anchor, what was ordered near it."""
        self._sm.restore(snap["app"])
        self.position = int(snap["position"])
        self._anchors_committed = int(snap["anchors"])
        self.last_committed_round = int(snap["anchor_round"])
        self._ordered = {(int(r), int(a)) for r, a in snap["ordered"]}
        self._unordered = {(c.round, c.author) for certs in self._dag.values() for c in certs.values()
                           if c.header.batch and (c.round, c.author) not in self._ordered}
        self._collect_garbage()
        self.round = max(self.round, self.last_committed_round + 1)
        for key in [k for k, r in self._pending.items() if self._sm.cached_result(r)[0]]:
            del self._pending[key]
        self._try_commit()

    # -- restart -----------------------------------------------------------------------------

    def _restore(self, durable: BullsharkDurable) -> None:
        """Rebuild from storage: the stable state, and the headers and votes we signed since."""
        if durable.stable is not None:
            seq, d, proof, snap = durable.stable
            self._install(snap)
            self._stable = (seq, d, proof, snap)
        for h in durable.headers:
            if h.round > self.gc_round:
                self._own[h.round] = h
                self._own_votes[h.round] = {self._id: Vote(src=self._id, author=self._id, round=h.round,
                                                           digest=h.digest).signed(self._signer)}
        for a, r, d in durable.votes:
            if r > self.gc_round:
                self._voted[(a, r)] = d
        if self._own:
            self.round = max(self.round, max(self._own))
        self._restoring = True
        for c in durable.certs:  # in round order, so parents come first
            if c.round > self.gc_round:
                self._insert(c)
        self._restoring = False
        self._count("restarts")
        self._arm_resend()

    # -- readiness -----------------------------------------------------------------------------

    def _ready(self) -> Ready:
        if self._rec_headers or self._rec_votes or self._rec_certs or self._rec_stable is not None \
                or self._rec_gc is not None:
            self._out.persist = BullsharkPersist(headers=tuple(self._rec_headers),
                                                 votes=tuple(self._rec_votes), certs=tuple(self._rec_certs),
                                                 stable=self._rec_stable, gc_round=self._rec_gc)
            self._rec_headers, self._rec_votes, self._rec_certs = [], [], []
            self._rec_stable = self._rec_gc = None
        return self._out.take()

    _HANDLERS: dict[type, Any] = {
        Header: _on_header, Vote: _on_vote, Certificate: _on_certificate, CertRequest: _on_cert_request,
        CertResponse: _on_cert_response, Checkpoint: _on_checkpoint, FetchState: _on_fetch_state,
        StateReply: _on_state_reply,
    }


def item_parents(item: Any) -> tuple[bytes, ...]:
    """The parents of a waiting header or certificate."""
    return item.header.parents if isinstance(item, Certificate) else item.parents


def item_round(item: Any) -> int:
    """The round of a waiting header or certificate."""
    return item.round
