"""T-PBFT's trust ledger: evidence in the committed log, and the state machine that keeps score.

Trust must be the same at every honest replica, so it is a function of the
committed log alone: evidence travels as requests signed by the replica that
reports it (client id "replica-<id>"), gets ordered like any request, and is
applied by `TrustStateMachine`, which wraps the application's state machine.
Three kinds, each checkable by anyone (Gao et al., China Communications 2019,
evaluate nodes by their "transactions"; here the transactions are consensus
work, and local trust s_ij = sat_ij - unsat_ij as in EigenTrust, Section 3):

- `Stamp`: the primary of (epoch, view) signs the first request of each batch it
  makes. When the batch executes, every other replica is satisfied with it once.
  A batch re-proposed after a view change keeps its stamp, so the credit goes to
  the replica that made it, the same at every replica.
- `Suspect`: a replica whose request timer expired in a view says so, signed: one
  unsatisfied interaction with that view's primary, in its own row only (a liar
  hurts nobody's trust but its own opinion; EigenTrust weighs opinions by trust).
- `Equivocation`: two messages the accused signed for one (view, seq) with
  different digests. A proof, so every replica's row counts it, heavily.

Counts halve at every epoch boundary, so old behaviour fades (T-PBFT recomputes
trust periodically; the halving is our choice of forgetting, deterministic).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, ClassVar

from fabric.consensus.api import Request, StateMachine
from fabric.consensus.canonical import digest as canonical_digest
from fabric.consensus.canonical import encode
from fabric.consensus.errors import MalformedMessageError
from fabric.consensus.pbft.messages import Prepare, PrePrepare
from fabric.consensus.signing import Verifier

EVIDENCE_CLIENT_PREFIX = "replica-"
EVIDENCE_KEYS_MAX = 4096  # evidence items applied per epoch; more are refused (a flood is no news)


def evidence_client(rid: int) -> str:
    """The client id replica `rid` signs its evidence as."""
    return f"{EVIDENCE_CLIENT_PREFIX}{rid}"


def epoch_binding(epoch: int) -> bytes:
    """Prefix of every payload signed in `epoch`: a message of one epoch never verifies in another."""
    return b"tpbft-epoch:%d|" % epoch


@dataclass(frozen=True, kw_only=True)
class Stamp:
    """The primary of `view` made the batch executed at `seq` in `epoch`."""

    op: ClassVar[str] = "tpbft-stamp"
    epoch: int
    view: int
    seq: int


@dataclass(frozen=True, kw_only=True)
class Suspect:
    """The reporter's request timer expired in `view`, whose primary was `accused`."""

    op: ClassVar[str] = "tpbft-suspect"
    epoch: int
    view: int
    accused: int


@dataclass(frozen=True, kw_only=True)
class Equivocation:
    """Two conflicting messages signed by one replica in `epoch`: the proof."""

    op: ClassVar[str] = "tpbft-equivocation"
    epoch: int
    first: Any
    second: Any


Evidence = Stamp | Suspect | Equivocation


def evidence_request(signer: Any, rid: int, op: Evidence) -> Request:
    """A signed request carrying `op`; its id comes from its content, so the same evidence is one request."""
    raw = encode(("tpbft-evidence", op))
    request_id = 1 + int.from_bytes(hashlib.sha256(raw).digest()[:6], "big")
    req = Request(client_id=evidence_client(rid), request_id=request_id, op=op)
    return Request(client_id=req.client_id, request_id=request_id, op=op,
                   signature=signer.sign(req.signed_bytes))


@dataclass(frozen=True, kw_only=True)
class TrustParams:
    """How much each kind of evidence weighs."""

    stamp_credit: int = 1
    timeout_penalty: int = 4
    equivocation_penalty: int = 1000


class TrustStateMachine:
    """The application plus the trust ledger (see the module doc); deterministic like the application."""

    def __init__(self, inner: StateMachine, *, n: int, params: TrustParams, verifier: Verifier) -> None:
        self.inner = inner
        self._n = n
        self._params = params
        self._verifier = verifier
        self.epoch = 0
        self.order: tuple[int, ...] = tuple(range(n))  # primaries in turn this epoch
        self.sat = [[0] * n for _ in range(n)]
        self.unsat = [[0] * n for _ in range(n)]
        self._applied: set[str] = set()  # evidence keys of this epoch
        self.position = 0  # the sequence number executing now (set by the replica, not state)
        self.counters: dict[str, int] = {}

    # -- the StateMachine interface ------------------------------------------------------

    def apply(self, request: Request) -> Any:
        """Evidence from replicas is scored here; everything else goes to the application."""
        if not request.client_id.startswith(EVIDENCE_CLIENT_PREFIX):
            return self.inner.apply(request)
        return self._apply_evidence(request)

    def query(self, request: Request) -> Any:
        """The application answers queries."""
        return self.inner.query(request)

    def cached_result(self, request: Request) -> tuple[bool, Any]:
        """Evidence already scored this epoch is done; the application keeps its own sessions."""
        if not request.client_id.startswith(EVIDENCE_CLIENT_PREFIX):
            return self.inner.cached_result(request)
        key = self._key(request)
        return (key in self._applied, "duplicate") if key is not None else (True, "malformed")

    def snapshot(self) -> dict[str, Any]:
        """Application and trust state, JSON-ready and deterministic."""
        return {"app": self.inner.snapshot(),
                "trust": {"epoch": self.epoch, "order": list(self.order), "sat": [list(r) for r in self.sat],
                          "unsat": [list(r) for r in self.unsat], "evidence": sorted(self._applied)}}

    def restore(self, snap: dict[str, Any]) -> None:
        """Replace both."""
        self.inner.restore(snap["app"])
        t = snap["trust"]
        self.epoch = int(t["epoch"])
        self.order = tuple(int(x) for x in t["order"])
        self.sat = [[int(x) for x in row] for row in t["sat"]]
        self.unsat = [[int(x) for x in row] for row in t["unsat"]]
        self._applied = set(t["evidence"])

    def digest(self) -> bytes:
        """SHA-256 of the canonical snapshot."""
        return canonical_digest(self.snapshot())

    # -- trust -----------------------------------------------------------------------------

    def local_trust(self) -> list[list[int]]:
        """s_ij = sat_ij - unsat_ij."""
        return [[self.sat[i][j] - self.unsat[i][j] for j in range(self._n)] for i in range(self._n)]

    def begin_epoch(self, epoch: int, order: tuple[int, ...]) -> None:
        """Enter `epoch` with these primaries in turn; older evidence weighs half."""
        assert epoch == self.epoch + 1, (epoch, self.epoch)
        self.epoch = epoch
        self.order = order
        for table in (self.sat, self.unsat):
            for row in table:
                for j in range(self._n):
                    row[j] //= 2
        self._applied = set()

    # -- evidence --------------------------------------------------------------------------

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def _key(self, request: Request) -> str | None:
        op = request.op
        try:
            return hashlib.sha256(encode((request.client_id, op))).hexdigest()
        except MalformedMessageError:
            return None

    def _reporter(self, request: Request) -> int | None:
        raw = request.client_id[len(EVIDENCE_CLIENT_PREFIX):]
        if not raw.isdigit() or not 0 <= int(raw) < self._n:
            return None
        return int(raw)

    def _apply_evidence(self, request: Request) -> str:
        reporter = self._reporter(request)
        key = self._key(request)
        op = request.op
        if reporter is None or key is None or type(op) not in (Stamp, Suspect, Equivocation):
            self._count("evidence_malformed")
            return "rejected: not evidence"
        if key in self._applied:
            return "duplicate"
        if len(self._applied) >= EVIDENCE_KEYS_MAX:
            self._count("evidence_refused_full")
            return "rejected: too much evidence this epoch"
        if type(op.epoch) is not int or op.epoch != self.epoch:
            self._count("evidence_stale")
            return "rejected: another epoch"
        m = len(self.order)
        p = self._params
        if isinstance(op, Stamp):
            if type(op.view) is not int or op.view < 0 or op.seq != self.position \
                    or self.order[op.view % m] != reporter:
                self._count("evidence_bad_stamp")
                return "rejected: not the proposer of this position"
            for i in range(self._n):
                if i != reporter:
                    self.sat[i][reporter] += p.stamp_credit
            self._count("evidence_stamps")
        elif isinstance(op, Suspect):
            if type(op.view) is not int or op.view < 0 or type(op.accused) is not int \
                    or self.order[op.view % m] != op.accused or op.accused == reporter:
                self._count("evidence_bad_suspect")
                return "rejected: not the primary of that view"
            self.unsat[reporter][op.accused] += p.timeout_penalty
            self._count("evidence_suspects")
        else:
            accused = self._proven_equivocator(op)
            if accused is None:
                self._count("evidence_bad_equivocation")
                return "rejected: not a proof"
            proof_key = hashlib.sha256(encode(("equivocation", accused, type(op.first).__name__,
                                               op.first.view, op.first.seq))).hexdigest()
            if proof_key in self._applied:
                self._applied.add(key)
                return "duplicate"
            self._applied.add(proof_key)  # one proof per (accused, kind, view, seq), however reported
            for i in range(self._n):
                if i != accused:
                    self.unsat[i][accused] += p.equivocation_penalty
            self._count("evidence_equivocations")
        self._applied.add(key)
        return "accepted"

    def _proven_equivocator(self, op: Equivocation) -> int | None:
        a, b = op.first, op.second
        if type(a) is not type(b) or type(a) not in (PrePrepare, Prepare):
            return None
        if (a.src, a.view, a.seq) != (b.src, b.view, b.seq) or a.digest == b.digest \
                or not 0 <= a.src < self._n:
            return None
        binding = epoch_binding(op.epoch)
        for msg in (a, b):
            try:
                payload = msg.payload
            except MalformedMessageError:
                return None
            if not self._verifier.verify(msg.src, binding + payload, msg.signature):
                return None
        return a.src
