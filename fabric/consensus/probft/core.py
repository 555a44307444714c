"""The ProBFT replica (Avelas, Heydari, Alchieri, Distler, Bessani, PODC '24), on PBFT's core.

n replicas, f = (n-1)//3 of them Byzantine. Per sequence number:

1. The leader of the view (v mod n) sends a signed PrePrepare with the batch to all.
2. A replica that accepts it proves its VRF on (view, seq, "prepare"); the output
   picks a sample of s = ceil(o*sqrt(n)) other replicas, and the Prepare, with the
   proof, goes to them only. The leader prepares too.
3. A replica is prepared on q = ceil(l*sqrt(n)) matching Prepares (its own and the
   ones whose sample holds it), and sends a Commit the same way, phase "commit".
4. q matching Commits decide (the paper's decision rule; no own prepared certificate
   is needed). The batch executes in sequence order.

So a decision costs about n + 2*n*s messages instead of PBFT's ~2n^2: at n = 100
with o = 2, ~21% of PBFT's. The quorums are probabilistic: two of them intersect
in an honest replica only with high probability, so agreement holds with
probability 1 - exp(-Theta(sqrt(n))) when the Byzantine fraction stays below a
third by a constant margin (the paper's Theorem 5.x; the margin is what the
Chernoff bound eats). View changes, checkpoints and state transfer keep PBFT's
deterministic 2f+1 quorums (PBFT's rules, TOCS '02 4.4-4.5); a prepared
certificate carries q Prepares whose proofs show the holder was in each sample.

Where ProBFT errs, the fabric must still never run a VM twice. The replica keeps
an execution journal (`Executed` records, persisted before any reply leaves) and
the digests of the batches it executed in its checkpointed state; when a
2f+1-certified checkpoint or a certified state transfer contradicts what it
executed, or it cannot show that they agree, it halts for good (`Halted`,
persisted): it never again answers a client. Clients need 2f+1 matching replies
(ProbftCluster's policy). Then two conflicting answers a client acts on would
need f+1 honest replicas each, so one honest replica that answered both, which a
replica that halts on contradiction never does: an honest replica's answers come
from one history, in which each (VM, epoch) has one owner. The simulator checks
this "fencing" property on every run and counts agreement violations apart.
"""

from __future__ import annotations

import math
import random
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from fabric.consensus.api import NodeId, Ready, Request, StateMachine
from fabric.consensus.canonical import digest as canonical_digest
from fabric.consensus.errors import MalformedMessageError
from fabric.consensus.pbft.core import PbftConfig, PbftReplica
from fabric.consensus.pbft.messages import (
    Checkpoint,
    Commit,
    FetchState,
    PrePrepare,
    StateReply,
    batch_digest,
)
from fabric.consensus.pbft.storage import PbftDurable
from fabric.consensus.probft.messages import (
    Decision,
    Executed,
    FetchDecisions,
    Halted,
    ProCommit,
    ProNewView,
    ProPrepare,
    ProPreparedCert,
    ProViewChange,
)
from fabric.consensus.signing import Signer, Verifier
from fabric.consensus.sortition import VrfProver, VrfVerifier, sample_alpha, sample_of, sample_size
from fabric.errors import ConfigError

PROTOCOL = "probft"


@dataclass(frozen=True, kw_only=True)
class ProbftConfig(PbftConfig):
    """PBFT's settings plus ProBFT's two: samples of o*sqrt(n), quorums of l*sqrt(n)."""

    # Sample size multiplier: each vote goes to ceil(o*sqrt(n)) others. With o = 2 a
    # decision costs ~4n*sqrt(n) messages (about 20% of PBFT's at n = 100).
    o: float = 2.0
    # Quorum multiplier: q = ceil(l*sqrt(n)) matching votes (one's own included). l/o
    # = 0.75 makes n = 4 exactly PBFT (everyone in every sample, q = 3 = 2f+1); see
    # tests/test_consensus_probft.py for what larger n gives with f faulty.
    l: float = 1.5  # noqa: E741  (the paper's name)
    # Batch digests of the last executed sequence numbers kept in the checkpointed
    # state, so a replica that fetches a state can check it against what it executed.
    history_max: int = 64
    # Samples of other replicas' votes kept (recomputing one costs n hashes).
    sample_cache_max: int = 4096

    @property
    def sample(self) -> int:
        """s: replicas a vote goes to."""
        return sample_size(self.n, self.o)

    @property
    def q(self) -> int:
        """Matching votes (one's own included) that prepare or decide."""
        return min(self.sample + 1, math.ceil(self.l * math.sqrt(self.n)))

    def validate(self) -> ProbftConfig:
        """Return self, or raise ConfigError naming the bad value."""
        super().validate()
        if not 0.1 <= self.o <= 100:
            raise ConfigError(f"probft o={self.o}: use 0.1..100 (samples of o*sqrt(n))")
        if not 0.1 <= self.l <= 100:
            raise ConfigError(f"probft l={self.l}: use 0.1..100 (quorums of l*sqrt(n))")
        if self.q < 2:
            raise ConfigError(f"probft l={self.l}, n={self.n}: q = {self.q}; a quorum needs another replica")
        if self.voters or self.primary_order or self.seq_base or self.seq_max:
            raise ConfigError("probft samples from every replica: "
                              "leave voters, primary_order and seq_* unset")
        if not 2 * self.watermark_window <= self.history_max <= 1_000_000:
            raise ConfigError(f"probft history_max={self.history_max}: use 2*watermark_window..1000000")
        if not 1 <= self.sample_cache_max <= 1_000_000:
            raise ConfigError(f"probft sample_cache_max={self.sample_cache_max}: use 1..1000000")
        return self


class _HistoryStateMachine:
    """The application plus the digests of the last executed batches: both in every checkpoint."""

    def __init__(self, inner: StateMachine, history_max: int) -> None:
        self.inner = inner
        self._history: OrderedDict[int, bytes] = OrderedDict()
        self._history_max = history_max

    def note(self, seq: int, batch_digest: bytes) -> None:
        """Record that the batch with `batch_digest` executed at `seq`."""
        self._history[seq] = batch_digest
        while len(self._history) > self._history_max:
            self._history.popitem(last=False)

    def history(self) -> dict[int, bytes]:
        """seq -> batch digest for the last executed sequence numbers."""
        return dict(self._history)

    def apply(self, request: Request) -> Any:
        """Apply to the application."""
        return self.inner.apply(request)

    def query(self, request: Request) -> Any:
        """Query the application."""
        return self.inner.query(request)

    def cached_result(self, request: Request) -> tuple[bool, Any]:
        """The application's session table."""
        return self.inner.cached_result(request)

    def snapshot(self) -> dict[str, Any]:
        """Application state and history."""
        return {"app": self.inner.snapshot(), "history": [[s, d.hex()] for s, d in self._history.items()]}

    def restore(self, snap: dict[str, Any]) -> None:
        """Replace both."""
        self.inner.restore(snap["app"])
        self._history = OrderedDict((int(s), bytes.fromhex(d)) for s, d in snap["history"])

    def digest(self) -> bytes:
        """SHA-256 of the canonical snapshot."""
        return canonical_digest(self.snapshot())


class ProbftReplica(PbftReplica):
    """One ProBFT replica (see the module doc and fabric.consensus.api for how to drive it)."""

    config: ProbftConfig

    def __init__(self, config: ProbftConfig, *, state_machine: StateMachine, rng: random.Random,
                 signer: Signer, verifier: Verifier, client_verifier: Verifier, vrf: VrfProver,
                 vrf_verifier: VrfVerifier, durable: PbftDurable | None = None, now_ms: int = 0) -> None:
        config.validate()
        assert vrf.identity == config.id, "a replica proves as itself"
        self._vrf = vrf
        self._vrf_verifier = vrf_verifier
        self._history_sm = _HistoryStateMachine(state_machine, config.history_max)
        self._samples: OrderedDict[tuple[int, bytes, bytes], frozenset[int] | None] = OrderedDict()
        self._own_samples: OrderedDict[tuple[int, int, str], tuple[bytes, frozenset[int]]] = OrderedDict()
        self._journal: dict[int, bytes] = {}  # seq -> digest executed, not yet certified
        self._halted = False
        # Catching laggards up: Commits counted per sequence number in the window, the
        # Decision of each executed one above the stable checkpoint, Decisions received
        # for sequence numbers not executed yet, and when each peer was last sent ours.
        self._commit_msgs: dict[int, dict[NodeId, ProCommit]] = {}
        self._proofs: dict[int, Decision] = {}
        self._decided: dict[int, Decision] = {}
        self._pushed_ms: dict[NodeId, int] = {}
        # (view, seq) we last asked peers for Decisions about before giving up on the view.
        self._fetch_tried: tuple[int, int] | None = None
        self._early_fetched = 0  # the sequence number we last fetched early (see _execute)
        super().__init__(config, state_machine=self._history_sm, rng=rng, signer=signer, verifier=verifier,
                         client_verifier=client_verifier, durable=durable, now_ms=now_ms)

    @property
    def halted(self) -> bool:
        """True once this replica found its history contradicts a certified one (see the module doc)."""
        return self._halted

    # -- the sans-IO interface: a halted replica does nothing ----------------------

    def step(self, msg: Any) -> Ready:
        """Take a peer's message (nothing once halted)."""
        if self._halted:
            return self._ready()
        if type(msg) in (Decision, Checkpoint) and msg.src == self._id:
            # Proofs name their author, not their sender: peers relay our Decisions (which
            # they adopted) and our Checkpoint (in a stable proof) back to us, and after a
            # restart that is how we get our own history again. A Checkpoint is still checked
            # against our signature, a Decision vote by vote.
            try:
                msg.check()
            except MalformedMessageError:
                self._count("dropped_malformed")
                return self._ready()
            self._count("own_proofs_relayed")
            self._HANDLERS[type(msg)](self, msg)
            return self._ready()
        return super().step(msg)

    def tick(self, now_ms: int) -> Ready:
        """Let time pass (nothing fires once halted)."""
        if self._halted:
            self._now = max(self._now, now_ms)
            return self._ready()
        return super().tick(now_ms)

    def propose(self, request: Request) -> Ready:
        """A client's request (ignored once halted)."""
        return self._ready() if self._halted else super().propose(request)

    def deadline_ms(self) -> int | None:
        """When `tick` next has work (never once halted)."""
        return None if self._halted else super().deadline_ms()

    def status_role(self) -> str:
        """PBFT's roles, or "halted"."""
        return "halted" if self._halted else super().status_role()

    def _ready(self) -> Ready:
        ready = super()._ready()
        if self._halted and (ready.messages or ready.replies):
            # Whatever this event produced before the contradiction showed stays unsaid.
            return Ready(persist=ready.persist, committed=ready.committed, decided=ready.decided)
        return ready

    # -- sortition ---------------------------------------------------------------------

    def _own_sample(self, view: int, seq: int, phase: str) -> tuple[bytes, frozenset[int]]:
        key = (view, seq, phase)
        hit = self._own_samples.get(key)
        if hit is None:
            beta, pi = self._vrf.prove(sample_alpha(PROTOCOL, view, seq, phase))
            hit = self._own_samples[key] = (pi, sample_of(beta, self._id, self._n, self.config.sample))
            if len(self._own_samples) > self.config.sample_cache_max:
                self._own_samples.popitem(last=False)
        return hit

    def _in_sample_of(self, who: NodeId, src: NodeId, view: int, seq: int, phase: str, proof: bytes) -> bool:
        """Does src's verified VRF proof for (view, seq, phase) put `who` in its sample?"""
        alpha = sample_alpha(PROTOCOL, view, seq, phase)
        key = (src, alpha, proof)
        if key in self._samples:
            self._samples.move_to_end(key)
            sample = self._samples[key]
        else:
            beta = self._vrf_verifier.verify(src, alpha, proof)
            sample = None if beta is None else sample_of(beta, src, self._n, self.config.sample)
            self._samples[key] = sample
            if len(self._samples) > self.config.sample_cache_max:
                self._samples.popitem(last=False)
        if sample is None:
            self._count("dropped_bad_vrf_proof")
            return False
        return who in sample

    # -- family hooks ---------------------------------------------------------------------

    _MESSAGE_TYPES = (PrePrepare, ProPrepare, ProCommit, Checkpoint, ProViewChange, ProNewView, FetchState,
                      StateReply, Decision, FetchDecisions)
    _CERT = ProPreparedCert
    _VIEW_CHANGE = ProViewChange
    _NEW_VIEW = ProNewView
    _primary_prepares = True
    _commit_needs_prepared = False
    _help_laggards = True

    def _make_prepare(self, pp: PrePrepare) -> ProPrepare:
        pi, _ = self._own_sample(pp.view, pp.seq, "prepare")
        return ProPrepare(src=self._id, view=pp.view, seq=pp.seq, digest=pp.digest, proof=pi)

    def _make_commit(self, view: int, seq: int, digest: bytes) -> ProCommit:
        pi, _ = self._own_sample(view, seq, "commit")
        return ProCommit(src=self._id, view=view, seq=seq, digest=digest, proof=pi)

    def _prepare_targets(self, view: int, seq: int) -> tuple[NodeId, ...]:
        return tuple(sorted(self._own_sample(view, seq, "prepare")[1]))

    def _commit_targets(self, view: int, seq: int) -> tuple[NodeId, ...]:
        return tuple(sorted(self._own_sample(view, seq, "commit")[1]))

    def _prepares_needed(self) -> int:
        return self.config.q

    def _commits_needed(self) -> int:
        return self.config.q

    def _vote_admitted(self, m: Any, phase: str) -> bool:
        if self._in_sample_of(self._id, m.src, m.view, m.seq, phase, m.proof):
            return True
        self._count("dropped_not_in_sample")
        return False

    def _cert_vote_ok(self, holder: NodeId, p: Any) -> bool:
        return p.src == holder or self._in_sample_of(holder, p.src, p.view, p.seq, "prepare", p.proof)

    # -- the execution journal and the halt --------------------------------------------

    def _halt(self, reason: str) -> None:
        if self._halted:
            return
        self._halted = True
        self._rec.append(Halted(reason=reason))
        self._count("halted_divergence")

    def _before_execute(self, seq: int, pp: PrePrepare) -> bool:
        if self._halted:
            return False
        done = self._journal.get(seq)
        if done is not None and done != pp.digest:
            self._halt(f"seq {seq} executed with another batch before a restart")
            return False
        return True

    def _after_execute(self, seq: int, pp: PrePrepare) -> None:
        self._history_sm.note(seq, pp.digest)
        if self._journal.get(seq) != pp.digest:
            self._journal[seq] = pp.digest
            self._rec.append(Executed(seq=seq, digest=pp.digest))
        proof = self._decided.pop(seq, None)
        if proof is None:
            counted = self._commit_msgs.get(seq, {})
            commits = tuple(sorted((c for c in counted.values()
                                    if (c.view, c.digest) == (pp.view, pp.digest)), key=lambda c: c.src))
            assert len(commits) >= self.config.q, f"replica {self._id} executed {seq} without q Commits"
            proof = Decision(src=self._id, pre_prepare=pp, commits=commits[:self.config.q])
        self._proofs[seq] = proof
        self._commit_msgs.pop(seq, None)

    # -- catching laggards up ---------------------------------------------------------

    def _committed_pre_prepare(self, seq: int) -> PrePrepare | None:
        pp = super()._committed_pre_prepare(seq)
        if pp is None and seq in self._decided:
            pp = self._decided[seq].pre_prepare
        return pp

    def _note_commit(self, m: Commit) -> None:
        assert isinstance(m, ProCommit)
        if m.seq > self.last_exec:
            self._commit_msgs.setdefault(m.seq, {})[m.src] = m

    def _request_was_done(self, req: Request) -> None:
        # The client asked again for what we executed: someone it needs an answer from
        # may be behind. Everyone gets our recent Decisions (once per resend period).
        for r in range(self._n):
            if r != self._id:
                self._push_decisions(r)

    def _peer_changing_view(self, src: NodeId) -> None:
        self._push_decisions(src)

    def _push_decisions(self, to: NodeId) -> None:
        last = self._pushed_ms.get(to)
        if (not self._proofs and not self._stable_proof) or \
                (last is not None and self._now - last < self.config.resend_ms):
            return
        self._pushed_ms[to] = self._now
        # First the proof of our stable checkpoint: Decisions above it are no use to a
        # replica that missed it (it will fetch the state), and Checkpoints are sent once.
        for cp in self._stable_proof:
            self._out.send(to, cp)
        for seq in sorted(self._proofs):
            self._out.send(to, self._proofs[seq])
        self._count("decisions_pushed")

    def _defer_view_change(self) -> bool:
        """Before a view change, ask a sample of peers once for the Decisions we lack.

        A replica outside enough samples misses the q votes of an instance the others
        decided, although the primary is fine: a view change (n ViewChanges, each
        answered with every Decision) would cost more than the whole agreement. So
        when the primary did propose in this view, the first expiry of the request
        timer for our next sequence number sends a FetchDecisions to s peers instead
        and re-arms the timer; only a second expiry changes the view.
        """
        seq = self.last_exec + 1
        if self._fetch_tried == (self.view, seq):
            return False
        if not any(s > self.last_exec and slot.pre_prepare is not None and slot.pre_prepare.view == self.view
                   for s, slot in self._slots.items()):
            return False  # no proposal in this view: the primary may be at fault, change it
        self._fetch_tried = (self.view, seq)
        self._send_fetch(seq)
        self._request_deadline = self._now + self.config.request_timeout_ms
        self._count("decisions_fetched")
        return True

    def _send_fetch(self, seq: int) -> None:
        peers = [r for r in range(self._n) if r != self._id]
        ask = self._rng.sample(peers, min(len(peers), self.config.sample))
        m = self._sign(FetchDecisions(src=self._id, seq=seq))
        for r in sorted(ask):
            self._out.send(r, m)

    def _execute(self) -> None:
        """PBFT's in-order execution; then, if a later instance decided here while the next one did
        not, the votes for the next one missed us: fetch its Decision now, not at the timeout."""
        super()._execute()
        seq = self.last_exec + 1
        if self._early_fetched == seq or self._halted:
            return
        if any(s > seq and slot.committed for s, slot in self._slots.items()) or \
                any(s > seq for s in self._decided):
            self._early_fetched = seq
            self._send_fetch(seq)
            self._count("decisions_fetched_early")

    def _on_fetch_decisions(self, m: FetchDecisions) -> None:
        if not m.verify(self._verifier):
            self._count("dropped_bad_signature")
            return
        last = self._pushed_ms.get(m.src)
        if last is not None and self._now - last < self.config.resend_ms:
            return  # answered it a moment ago
        self._pushed_ms[m.src] = self._now
        if m.seq <= self.low:
            for cp in self._stable_proof:  # it fell below our window: it needs the state
                self._out.send(m.src, cp)
        for seq in sorted(self._proofs):
            if seq >= m.seq:
                self._out.send(m.src, self._proofs[seq])
        self._count("decisions_sent_on_fetch")

    def _on_decision(self, m: Decision) -> None:
        pp = m.pre_prepare
        if pp.seq <= self.last_exec or pp.seq in self._decided or not self._in_window(pp.seq):
            return
        if not self._valid_decision(m):
            self._count("dropped_bad_decision")
            return
        self._decided[pp.seq] = m
        self._count("decisions_adopted")
        self._execute()

    def _valid_decision(self, m: Decision) -> bool:
        """Would `m.src` have decided on these votes? (The decision rule, checked by a third party.)"""
        pp = m.pre_prepare
        if pp.src != self._primary_of(pp.view) or batch_digest(pp.batch) != pp.digest \
                or not pp.verify(self._verifier) or len({r.key for r in pp.batch}) != len(pp.batch):
            return False
        try:
            if not all(self._client_signature_ok(r) for r in pp.batch):
                return False
        except MalformedMessageError:
            return False
        srcs: set[int] = set()
        for c in m.commits:
            if (c.view, c.seq, c.digest) != (pp.view, pp.seq, pp.digest) or c.src in srcs \
                    or not 0 <= c.src < self._n or not c.verify(self._verifier):
                return False
            if c.src != m.src and not self._in_sample_of(m.src, c.src, c.view, c.seq, "commit", c.proof):
                return False
            srcs.add(c.src)
        return len(srcs) >= self.config.q

    def _own_checkpoint_differs(self, seq: int, d: bytes) -> None:
        self._halt(f"2f+1 replicas certified another state at {seq}")

    def _stabilize(self, seq: int, d: bytes, proof: tuple[Checkpoint, ...]) -> None:
        own = self._own_checkpoints.get(seq)
        super()._stabilize(seq, d, proof)
        if own is not None and own[0] == d:
            self._forget_journal(seq)  # certified: what we executed up to seq agrees with 2f+1
        self._forget_below_low()

    def _forget_journal(self, upto: int) -> None:
        for s in [s for s in self._journal if s <= upto]:
            del self._journal[s]

    def _forget_below_low(self) -> None:
        for table in (self._commit_msgs, self._proofs, self._decided):
            for s in [s for s in table if s <= self.low]:
                del table[s]

    def _before_install(self, seq: int, snapshot: Any) -> bool:
        if self._halted:
            return False
        certified = {int(s): bytes.fromhex(d) for s, d in snapshot["history"]}
        for s, d in self._journal.items():
            if s > seq:
                continue
            have = certified.get(s)
            if have is None:
                self._halt(f"cannot check seq {s} against the state certified at {seq}")
                return False
            if have != d:
                self._halt(f"seq {s}: executed another batch than the state certified at {seq}")
                return False
        self._forget_journal(seq)
        return True

    def _restore_record(self, rec: Any) -> bool:
        if isinstance(rec, Executed):
            if rec.seq > self.low:
                self._journal[rec.seq] = rec.digest
            return True
        if isinstance(rec, Halted):
            self._halted = True
            return True
        if isinstance(rec, ProCommit) and rec.seq > self.low:
            self._commit_msgs.setdefault(rec.seq, {})[self._id] = rec  # and PBFT's restore counts it
        return False

    _HANDLERS: dict[type, Any] = {
        PrePrepare: PbftReplica._on_pre_prepare, ProPrepare: PbftReplica._on_prepare,
        ProCommit: PbftReplica._on_commit, Checkpoint: PbftReplica._on_checkpoint,
        ProViewChange: PbftReplica._on_view_change, ProNewView: PbftReplica._on_new_view,
        FetchState: PbftReplica._on_fetch_state, StateReply: PbftReplica._on_state_reply,
        Decision: _on_decision, FetchDecisions: _on_fetch_decisions,
    }
