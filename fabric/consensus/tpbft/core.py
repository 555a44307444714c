"""The T-PBFT replica (Gao et al., "T-PBFT: An EigenTrust-based practical Byzantine fault-tolerant
consensus algorithm", China Communications 2019): PBFT run by the most trusted replicas.

Time is cut in epochs of `epoch_length` sequence numbers. In each epoch a PBFT
instance (fabric.consensus.pbft, unchanged rules) runs with:

- a consensus group: the `group_size` replicas of highest EigenTrust global trust
  (fabric.consensus.tpbft.eigentrust); the others observe, executing on the
  group's Commits, as T-PBFT's "candidate nodes" follow the primary group;
- primaries in turn by trust: the primary of view v is the (v mod m)-th most
  trusted member, so the most trusted replica leads first and a primary that
  times out hands over to the next most trusted (PBFT's view change, TOCS 4.4).

Trust comes from the committed log only (fabric.consensus.tpbft.trust): proposer
stamps, signed timeout reports, equivocation proofs. At the end of an epoch,
once its last checkpoint is stable (2f+1 of the group signed the state), every
replica computes the same trust from the same state, hence the same next group
and order, and starts the next instance from that checkpoint. A replica left in
an older epoch is sent the epoch starts it missed (`EpochJump`) and verifies
each with the group it knows, one epoch at a time.

With group_size = n (the default) T-PBFT keeps PBFT's resilience, f = (n-1)//3
Byzantine replicas anywhere, and trust only orders the primaries; a smaller group
cuts the messages of agreement to the group but tolerates only (m-1)//3 faulty
members, which is T-PBFT's bet that trust keeps faulty replicas out of the group.
"""

from __future__ import annotations

import random
from collections.abc import Hashable
from dataclasses import dataclass, fields
from typing import Any

from fabric.consensus.api import (
    EMPTY_READY,
    ClientReply,
    Committed,
    NodeId,
    Ready,
    ReplicaStatus,
    Request,
    StateMachine,
)
from fabric.consensus.canonical import digest as canonical_digest
from fabric.consensus.errors import MalformedMessageError
from fabric.consensus.pbft.core import PbftConfig, PbftReplica
from fabric.consensus.pbft.messages import PrePrepare
from fabric.consensus.pbft.storage import MemoryPbftStorage, PbftDurable
from fabric.consensus.signing import Signer, Verifier
from fabric.consensus.tpbft.eigentrust import SCALE, global_trust, ranking
from fabric.consensus.tpbft.messages import EPOCHS_CARRIED_MAX, EpochJump, EpochMsg, EpochQuery, EpochStart
from fabric.consensus.tpbft.trust import (
    EVIDENCE_CLIENT_PREFIX,
    Equivocation,
    Stamp,
    Suspect,
    TrustParams,
    TrustStateMachine,
    epoch_binding,
    evidence_request,
)
from fabric.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class TpbftConfig(PbftConfig):
    """PBFT's settings (for every epoch's instance) plus T-PBFT's; `validate()` says how to fix one."""

    # Replicas in the consensus group (0: all n). Fewer cut agreement messages to the
    # group, and tolerate only (group_size-1)//3 faulty members.
    group_size: int = 0
    # Sequence numbers per epoch: trust is recomputed, and the group and primaries
    # chosen again, this often (a multiple of checkpoint_interval).
    epoch_length: int = 64
    # EigenTrust's pre-trusted replicas (empty: all) and their weight a, in parts per
    # million (the paper's experiments use a = 0.1-0.2; Section 4.5).
    pre_trusted: tuple[int, ...] = ()
    trust_alpha_ppm: int = 150_000
    # Fixed iterations of t = (1-a) C^T t + a p (the paper's convergence test is replaced
    # by a fixed count so every replica stops at the same value; 20 reach ~1e-3).
    trust_iterations: int = 20
    stamp_credit: int = 1
    timeout_penalty: int = 4
    equivocation_penalty: int = 1000
    # Epoch starts kept, to carry a laggard across that many epochs.
    epochs_kept_max: int = 4
    # Messages of a later epoch than ours, kept until we get there.
    future_epoch_msgs_max: int = 512

    @property
    def group(self) -> int:
        """m, defaulted."""
        return self.group_size or self.n

    def validate(self) -> TpbftConfig:
        """Return self, or raise ConfigError naming the bad value."""
        super().validate()

        def bad(name: str, why: str) -> ConfigError:
            """The error naming the bad value."""
            return ConfigError(f"tpbft config {name}={getattr(self, name)!r}: {why}")
        if self.voters or self.primary_order or self.seq_base or self.seq_max:
            raise ConfigError("tpbft chooses voters, primary_order and the sequence range per epoch: "
                              "leave them unset")
        if self.group_size and not 4 <= self.group_size <= self.n:
            raise bad("group_size", "use 0 (all) or 4..n")
        if self.epoch_length < self.checkpoint_interval or self.epoch_length % self.checkpoint_interval:
            raise bad("epoch_length", "use a multiple of checkpoint_interval")
        if self.batch_max < 2:
            raise bad("batch_max", "use at least 2 (the proposer's stamp takes one place)")
        if any(type(j) is not int or not 0 <= j < self.n for j in self.pre_trusted):
            raise bad("pre_trusted", "use replica ids")
        if not 0 <= self.trust_alpha_ppm <= 1_000_000:
            raise bad("trust_alpha_ppm", "use 0..1000000")
        if not 1 <= self.trust_iterations <= 1000:
            raise bad("trust_iterations", "use 1..1000")
        for name in ("stamp_credit", "timeout_penalty", "equivocation_penalty"):
            if not 0 <= getattr(self, name) <= 1_000_000:
                raise bad(name, "use 0..1000000")
        if not 1 <= self.epochs_kept_max <= EPOCHS_CARRIED_MAX:
            raise bad("epochs_kept_max", f"use 1..{EPOCHS_CARRIED_MAX}")
        if not 1 <= self.future_epoch_msgs_max <= 1_000_000:
            raise bad("future_epoch_msgs_max", "use 1..1000000")
        return self

    def instance_config(self, *, voters: tuple[int, ...], order: tuple[int, ...], base: int) -> PbftConfig:
        """The PBFT config of the epoch starting after `base`."""
        own = {f.name: getattr(self, f.name) for f in fields(PbftConfig)}
        own.update(voters=tuple(sorted(voters)), primary_order=order, seq_base=base,
                   seq_max=base + self.epoch_length)
        return PbftConfig(**own).validate()


@dataclass(frozen=True, kw_only=True)
class TpbftPersist:
    """One Ready's changes in order: an EpochStart starts a new epoch's storage, a PbftPersist updates it."""

    ops: tuple[Any, ...]

    def brief(self) -> str:
        """Short text form for scripts."""
        return "; ".join(f"epoch {op.epoch} starts after {op.base}" if isinstance(op, EpochStart)
                         else op.brief() for op in self.ops)


@dataclass(frozen=True, kw_only=True)
class TpbftDurable:
    """What `load` returns: the latest epoch starts, and the current epoch's PBFT state."""

    starts: tuple[EpochStart, ...]
    pbft: PbftDurable


class MemoryTpbftStorage:
    """Durable state kept in memory: survives a simulated crash, not the process."""

    def __init__(self, epochs_kept_max: int = EPOCHS_CARRIED_MAX) -> None:
        self._starts: list[EpochStart] = []
        self._pbft = MemoryPbftStorage()
        self._kept = epochs_kept_max
        self.saves = 0

    def load(self) -> TpbftDurable:
        """What was saved."""
        return TpbftDurable(starts=tuple(self._starts), pbft=self._pbft.load())

    def save(self, persist: TpbftPersist) -> None:
        """Apply `persist`: a new epoch replaces the old one's PBFT state."""
        for op in persist.ops:
            if isinstance(op, EpochStart):
                self._starts = [*self._starts, op][-self._kept:]
                self._pbft = MemoryPbftStorage()
            else:
                self._pbft.save(op)
        self.saves += 1


class _EpochSigner:
    """Signs as the replica, over the epoch's binding prefix and the payload."""

    def __init__(self, signer: Signer, epoch: int) -> None:
        self._signer = signer
        self._binding = epoch_binding(epoch)

    @property
    def identity(self) -> Hashable:
        """The replica's id."""
        return self._signer.identity

    def sign(self, payload: bytes) -> bytes:
        """A signature over the binding and the payload."""
        return self._signer.sign(self._binding + payload)


class _EpochVerifier:
    """Verifies what an _EpochSigner of the same epoch signed."""

    def __init__(self, verifier: Verifier, epoch: int) -> None:
        self._verifier = verifier
        self._binding = epoch_binding(epoch)

    def verify(self, identity: Hashable, payload: bytes, signature: bytes) -> bool:
        """True iff `identity` signed the binding and the payload."""
        return self._verifier.verify(identity, self._binding + payload, signature)


class TpbftInstance(PbftReplica):
    """One epoch's PBFT instance: PBFT's rules, plus the evidence T-PBFT's trust is made of."""

    def __init__(self, config: PbftConfig, *, epoch: int, trust: TrustStateMachine, evidence_signer: Signer,
                 **kwargs: Any) -> None:
        self.epoch = epoch
        self._trust = trust
        self._evidence_signer = evidence_signer
        super().__init__(config, state_machine=trust, **kwargs)

    _batch_prefix_len = 1

    def _batch_prefix(self, view: int, seq: int) -> list[Request]:
        stamp = Stamp(epoch=self.epoch, view=view, seq=seq)
        return [evidence_request(self._evidence_signer, self._id, stamp)]

    def _before_execute(self, seq: int, pp: PrePrepare) -> bool:
        self._trust.position = seq  # a stamp must name the position it executes at
        return True

    def _on_request_timeout(self, view: int) -> None:
        if self._primary_of(view) != self._id:  # a primary does not suspect itself
            self._submit(Suspect(epoch=self.epoch, view=view, accused=self._primary_of(view)))

    def _equivocation(self, first: Any, second: Any) -> None:
        self._submit(Equivocation(epoch=self.epoch, first=first, second=second))

    def _submit(self, op: Any) -> None:
        self._count("evidence_submitted")
        self._on_request(evidence_request(self._evidence_signer, self._id, op))

    def pending_requests(self) -> list[Request]:
        """Requests known but not executed (carried into the next epoch)."""
        return list(self._pending.values())


class TpbftReplica:
    """One T-PBFT replica (see the module doc and fabric.consensus.api for how to drive it)."""

    def __init__(self, config: TpbftConfig, *, state_machine: StateMachine, rng: random.Random,
                 signer: Signer, verifier: Verifier, client_verifier: Verifier, evidence_signer: Signer,
                 durable: TpbftDurable | None = None, now_ms: int = 0) -> None:
        self.config = config.validate()
        assert signer.identity == config.id, "a replica signs as itself"
        self._id = config.id
        self._n = config.n
        self._rng = rng
        self._signer = signer
        self._verifier = verifier
        self._client_verifier = client_verifier
        self._evidence_signer = evidence_signer
        self._now = now_ms
        self._trust = TrustStateMachine(state_machine, n=config.n, verifier=verifier,
                                        params=TrustParams(stamp_credit=config.stamp_credit,
                                                           timeout_penalty=config.timeout_penalty,
                                                           equivocation_penalty=config.equivocation_penalty))
        self.counters: dict[str, int] = {}
        self._starts: list[EpochStart] = []
        self._future: list[EpochMsg] = []
        self._jumped_ms: dict[NodeId, int] = {}
        self._queried_ms: dict[NodeId, int] = {}
        # What this event produced, in order: ("ready", epoch, Ready) from an instance,
        # ("start", EpochStart) when an epoch begins, ("send", to, msg) of our own.
        self._events: list[tuple[Any, ...]] = []
        self.trust_values: list[int] = []
        if durable is not None and durable.starts:
            self._starts = list(durable.starts)
            latest = durable.starts[-1]
            self._trust.restore(latest.snapshot)
            voters, order = self._plan_epoch(latest.epoch)
            fresh = durable.pbft.view == 0 and durable.pbft.stable is None and not durable.pbft.records
            self._instance = self._make_instance(latest.epoch, latest.base, voters, order,
                                                 None if fresh else durable.pbft)
            self._count("restarts")
        else:
            voters, order = self._plan_epoch(0)
            pbft = durable.pbft if durable is not None else None
            fresh = pbft is None or (pbft.view == 0 and pbft.stable is None and not pbft.records)
            self._instance = self._make_instance(0, 0, voters, order, None if fresh else pbft)

    # -- epochs ---------------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        """The current epoch."""
        return self._instance.epoch

    @property
    def group(self) -> tuple[NodeId, ...]:
        """This epoch's consensus group."""
        return self._instance.config.voter_ids

    @property
    def order(self) -> tuple[NodeId, ...]:
        """This epoch's primaries in turn (most trusted first)."""
        return self._instance.config.order

    def _plan_epoch(self, epoch: int) -> tuple[tuple[NodeId, ...], tuple[NodeId, ...]]:
        """The group and the primaries of `epoch`, from the trust state at its start (deterministic)."""
        cfg = self.config
        alpha = cfg.trust_alpha_ppm * SCALE // 1_000_000
        trust = global_trust(self._trust.local_trust(), pre_trusted=cfg.pre_trusted, alpha=alpha,
                             iterations=cfg.trust_iterations)
        ranked = ranking(trust)
        order = ranked[:cfg.group]
        self.trust_values = trust
        if epoch == 0:
            self._trust.order = order  # the genesis state: nothing committed yet
        else:
            self._trust.begin_epoch(epoch, order)
        return tuple(sorted(order)), order

    def _make_instance(self, epoch: int, base: int, voters: tuple[NodeId, ...], order: tuple[NodeId, ...],
                       durable: PbftDurable | None) -> TpbftInstance:
        cfg = self.config.instance_config(voters=voters, order=order, base=base)
        return TpbftInstance(cfg, epoch=epoch, trust=self._trust, evidence_signer=self._evidence_signer,
                             rng=self._rng, signer=_EpochSigner(self._signer, epoch),
                             verifier=_EpochVerifier(self._verifier, epoch),
                             client_verifier=self._client_verifier, durable=durable, now_ms=self._now)

    def _maybe_advance(self) -> None:
        """Start the next epoch once this one's last checkpoint is stable and executed here."""
        while True:
            inst = self._instance
            end = inst.config.seq_max
            if not (inst.low == end == inst.last_exec) or inst._stable_snapshot is None:
                return
            start = EpochStart(epoch=inst.epoch + 1, base=end, proof=inst._stable_proof,
                               snapshot=inst._stable_snapshot)
            self._enter_epoch(start, restore=False)

    def _enter_epoch(self, start: EpochStart, *, restore: bool) -> None:
        old = self._instance
        # Client requests that arrived but did not make it into the old epoch go on; its
        # evidence does not (trust counts evidence of the current epoch only).
        carried = [r for r in old.pending_requests() if not r.client_id.startswith(EVIDENCE_CLIENT_PREFIX)]
        if restore:
            self._trust.restore(start.snapshot)
        voters, order = self._plan_epoch(start.epoch)
        self._starts = [*self._starts, start][-self.config.epochs_kept_max:]
        self._events.append(("start", start))
        self._keep_counters(old)
        self._instance = self._make_instance(start.epoch, start.base, voters, order, None)
        self._count("epochs_entered")
        for req in carried:  # requests that arrived but did not make it into the old epoch
            self._run(self._instance.propose(req))
        future, self._future = self._future, []
        for m in future:
            self._on_epoch_msg(m)

    def _on_jump(self, m: EpochJump) -> None:
        for start in m.starts:
            if start.epoch <= self.epoch:
                continue
            inst = self._instance
            if self.config.group == self._n and start.epoch > self.epoch + 1:
                d = self._full_group_proof(start)  # every group is everyone: no need for the chain
            elif start.epoch != self.epoch + 1 or start.base != inst.config.seq_max:
                self._count("dropped_jump_gap")
                return
            else:
                d = inst._checkpoint_proof_digest(start.base, start.proof)
            try:
                ok = d is not None and canonical_digest(start.snapshot) == d
            except MalformedMessageError:
                ok = False
            if not ok:
                self._count("dropped_bad_jump")
                return
            self._count("epoch_jumps")
            self._enter_epoch(start, restore=True)

    def _full_group_proof(self, start: EpochStart) -> bytes | None:
        """The digest 2f+1 of all n replicas signed at `start.base`, bound to the epoch before it."""
        verifier = _EpochVerifier(self._verifier, start.epoch - 1)
        quorum = self._instance.config.quorum
        d = start.proof[0].state_digest
        srcs: set[int] = set()
        for cp in start.proof:
            if cp.seq != start.base or cp.state_digest != d or not 0 <= cp.src < self._n or cp.src in srcs \
                    or not cp.verify(verifier):
                return None
            srcs.add(cp.src)
        return d if len(srcs) >= quorum else None

    def _help_laggard(self, peer: NodeId, its_epoch: int) -> None:
        last = self._jumped_ms.get(peer)
        if not 0 <= peer < self._n or peer == self._id or \
                (last is not None and self._now - last < self.config.resend_ms):
            return
        starts = [st for st in self._starts if st.epoch > its_epoch]
        if self.config.group == self._n and starts:
            starts = starts[-1:]  # with everyone in every group, the latest start is enough
        elif not starts or starts[0].epoch != its_epoch + 1:
            self._count("laggard_too_far_behind")
            return
        self._jumped_ms[peer] = self._now
        self._send(peer, EpochJump(src=self._id, starts=tuple(starts)))

    # -- the sans-IO interface ------------------------------------------------------------

    @property
    def id(self) -> NodeId:
        """This replica's id."""
        return self._id

    def step(self, msg: Any) -> Ready:
        """Take a peer's message (or a forwarded client request)."""
        if type(msg) is Request:
            return self.propose(msg)
        if type(msg) is EpochMsg:
            try:
                msg.check()
            except MalformedMessageError:
                self._count("dropped_malformed")
                return self._ready()
            self._on_epoch_msg(msg)
        elif type(msg) is EpochJump:
            try:
                msg.check()
            except MalformedMessageError:
                self._count("dropped_malformed")
                return self._ready()
            self._on_jump(msg)
        elif type(msg) is EpochQuery:
            if msg.epoch < self.epoch:
                self._help_laggard(msg.src, msg.epoch)
        else:
            self._count("dropped_unknown_type")
        return self._ready()

    def _on_epoch_msg(self, m: EpochMsg) -> None:
        if m.epoch == self.epoch:
            self._run(self._instance.step(m.msg))
        elif m.epoch > self.epoch:
            if len(self._future) >= self.config.future_epoch_msgs_max:
                self._future.pop(0)
                self._count("dropped_future_epoch_overflow")
            self._future.append(m)
            # We are behind: ask the sender for the epoch starts we missed (once per resend period).
            last = self._queried_ms.get(m.src)
            if 0 <= m.src < self._n and (last is None or self._now - last >= self.config.resend_ms):
                self._queried_ms[m.src] = self._now
                self._send(m.src, EpochQuery(src=self._id, epoch=self.epoch))
        else:
            self._count("old_epoch_msgs")
            self._help_laggard(m.src, m.epoch)

    def tick(self, now_ms: int) -> Ready:
        """Let time pass."""
        assert now_ms >= self._now, f"time went backwards: {now_ms} < {self._now}"
        self._now = now_ms
        self._run(self._instance.tick(now_ms))
        return self._ready()

    def propose(self, request: Request) -> Ready:
        """A client's request."""
        self._run(self._instance.propose(request))
        return self._ready()

    def read(self, request: Request) -> Ready:
        """Reads are ordered like commands (PBFT's rule)."""
        return self.propose(request)

    def deadline_ms(self) -> int | None:
        """When `tick` next has work."""
        return self._instance.deadline_ms()

    def status(self) -> ReplicaStatus:
        """The instance's status, with the epoch's group as members."""
        st = self._instance.status()
        counters = dict(self.counters)
        for k, v in st.counters.items():
            counters[k] = counters.get(k, 0) + v
        for k, v in self._trust.counters.items():
            counters[k] = counters.get(k, 0) + v
        return ReplicaStatus(id=self._id, role=st.role, term=st.term, leader=st.leader, commit=st.commit,
                             applied=st.applied, members=st.members, counters=counters)

    # -- plumbing ---------------------------------------------------------------------------

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def _keep_counters(self, inst: TpbftInstance) -> None:
        for k, v in inst.counters.items():
            self.counters[k] = self.counters.get(k, 0) + v

    def _send(self, to: NodeId, msg: Any) -> None:
        self._events.append(("send", to, msg))

    def _run(self, ready: Ready) -> None:
        """Take the instance's Ready, then see whether its epoch ended."""
        if not ready.empty:
            self._events.append(("ready", self.epoch, ready))
        self._maybe_advance()

    def _ready(self) -> Ready:
        """Merge this event's Readies in order: persist ops (epoch starts among them), and each
        instance's messages wrapped in the epoch of the instance that made them."""
        ops: list[Any] = []
        messages: list[tuple[NodeId, Any]] = []
        committed: list[Committed] = []
        replies: list[ClientReply] = []
        decided: list[tuple[int, bytes]] = []
        for event in self._events:
            if event[0] == "start":
                ops.append(event[1])
            elif event[0] == "send":
                messages.append((event[1], event[2]))
            else:
                _, epoch, r = event
                if r.persist is not None:
                    ops.append(r.persist)
                messages.extend((to, m if type(m) is Request else EpochMsg(epoch=epoch, msg=m))
                                for to, m in r.messages)
                committed.extend(r.committed)
                replies.extend(x for x in r.replies if not x.client_id.startswith(EVIDENCE_CLIENT_PREFIX))
                decided.extend(r.decided)
        self._events = []
        if not (ops or messages or committed or replies or decided):
            return EMPTY_READY
        return Ready(persist=TpbftPersist(ops=tuple(ops)) if ops else None, messages=tuple(messages),
                     committed=tuple(committed), replies=tuple(replies), decided=tuple(decided))
