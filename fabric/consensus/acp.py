"""ACP, the adaptive consensus protocol: the ledger's protocol follows the link mode, and a switch is safe.

The mode of the links between data centers (ARCHITECTURE.md, "Modes") picks the
protocol: datacenter -> Raft, internet -> a PBFT-family protocol (PBFT by
default; ProBFT, T-PBFT or Bullshark by config), hybrid -> configurable. Time is
cut in eras; each era runs one protocol's replicas (the registry's), wrapped.

A switch, in the order the replicas carry it out:

1. Propose. A replica told the mode changed (`change_mode`) proposes a signed
   `SwitchEra(era+1, protocol)` request through the current era's log, and
   retries until the log holds it; until then it accepts no new client request
   (they get "retry": the client comes back, to the new era). It keeps the mode's
   protocol as its target: if the others switch elsewhere first, it asks again in
   the next era.
2. Drain. The log orders the switch requests like any request; the switch entry
   is the one that brings a protocol's requests to the quorum: one in a Raft era,
   f+1 distinct replicas in a Byzantine era (so at least one correct replica
   measured the change, and no f liars can move the ledger to a protocol whose
   fault model excludes them). Only protocols ACP's config names count.
   Everything ordered before the switch entry commits in the old era; everything
   ordered after it is refused by the
   state machine (`AcpStateMachine`) without taking effect, and its client is
   told to retry. So each accepted request is committed or definitely failed.
3. Snapshot. The state right after the switch entry (the ledger and its
   exactly-once client sessions) is the same at every correct replica: it is
   the state after one prefix of one log.
4. Start. Each replica starts the new protocol's replica from that snapshot.
   A request committed before the switch and retried after it finds its
   session and gets its first answer; one refused by the switch runs once in
   the new era. Nothing committed is lost, nothing is applied twice.

A replica that missed the old era's end (crashed, cut off) learns there is a
newer era from `EraBeacon`s and adopts its start from `EraStart`s, once
enough replicas vouch for the same snapshot: one in a crash-fault era, f+1
(so at least one correct) in a Byzantine one.

Clients talk to every replica through one policy that suits every era:
requests signed, retries broadcast, and f+1 matching answers (2f+1 if ProBFT
may run, its fencing quorum). In a Raft era every replica answers what it
applies (ACP does, for Raft, whose followers do not), and reads go through the
log, so f+1 answers come from a crash-fault group that has them.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from fabric.consensus.api import (
    EMPTY_READY,
    ClientPolicy,
    ClientReply,
    Committed,
    NodeId,
    Ready,
    ReplicaStatus,
    Request,
    StateMachine,
    is_count,
    is_node_id,
    require,
)
from fabric.consensus.canonical import digest as canonical_digest
from fabric.consensus.canonical import encode
from fabric.consensus.errors import MalformedMessageError
from fabric.consensus.registry import ClusterParams, ProtocolSpec, get_protocol, register_protocol
from fabric.consensus.signing import Signer, Verifier, make_signers
from fabric.errors import ConfigError

Mode = Literal["datacenter", "internet", "hybrid"]
MODES: tuple[Mode, ...] = ("datacenter", "internet", "hybrid")
SWITCH_CLIENT_PREFIX = "acp-"
ERA_SHIFT = 40  # a position in era e is (e << ERA_SHIFT) | the era protocol's own index
BFT_PROTOCOLS = ("pbft", "probft", "tpbft", "bullshark")


def switch_votes_needed(protocol: str, n: int) -> int:
    """Replicas that must ask to end an era of `protocol` among n: f+1 in a Byzantine era, else 1."""
    return (n - 1) // 3 + 1 if protocol in BFT_PROTOCOLS else 1


def switch_client(rid: int) -> str:
    """The client id replica `rid` proposes switches as."""
    return f"{SWITCH_CLIENT_PREFIX}{rid}"


@dataclass(frozen=True, kw_only=True)
class SwitchEra:
    """End the current era here; era `era` runs `protocol` from the state after this entry."""

    op: ClassVar[str] = "acp-switch"
    era: int
    protocol: str


@dataclass(frozen=True, kw_only=True)
class EraClosed:
    """The result of a request ordered after its era's switch: it did not take effect; retry."""

    era: int


class AcpStateMachine:
    """The ledger's state machine of one era: applies until the era's switch entry, refuses after it.

    The era ends when `votes_needed` replicas have asked, through the log, for the
    same next protocol, one ACP's config names: in a Byzantine era f+1, so at least
    one correct replica measured the mode change and no f liars can switch the
    ledger (to Raft, say, whose model they are outside of); in a crash era one.
    """

    def __init__(self, inner: StateMachine, era: int, *, votes_needed: int = 1,
                 protocols: tuple[str, ...] | None = None) -> None:
        assert votes_needed >= 1, votes_needed
        self.inner = inner
        self.era = era
        self.votes_needed = votes_needed
        self.protocols = protocols  # None: any known protocol
        self.switch_to: str | None = None  # set by the switch entry
        self.votes: dict[str, set[str]] = {}  # protocol -> the replicas (switch clients) asking for it

    def apply(self, request: Request) -> Any:
        """Apply, unless the era ended; enough SwitchEras for one next protocol end it."""
        if self.switch_to is not None:
            return EraClosed(era=self.era)
        op = request.op
        if type(op) is SwitchEra:
            allowed = _known_protocols() if self.protocols is None else self.protocols
            if not request.client_id.startswith(SWITCH_CLIENT_PREFIX) or op.era != self.era + 1 \
                    or op.protocol not in allowed:
                return "rejected: not a switch to the next era"
            voters = self.votes.setdefault(op.protocol, set())
            voters.add(request.client_id)
            if len(voters) < self.votes_needed:
                return "vote recorded"
            self.switch_to = op.protocol
            return "switching"
        return self.inner.apply(request)

    def query(self, request: Request) -> Any:
        """The application answers."""
        return self.inner.query(request)

    def cached_result(self, request: Request) -> tuple[bool, Any]:
        """The application's sessions; a switch request of an ended era is done."""
        if type(request.op) is SwitchEra:
            return (self.switch_to is not None, "switching")
        return self.inner.cached_result(request)

    def snapshot(self) -> dict[str, Any]:
        """The application, the era, the switch votes so far, and whether it ended."""
        return {"app": self.inner.snapshot(), "era": self.era, "switch_to": self.switch_to,
                "votes": {p: sorted(v) for p, v in sorted(self.votes.items())}}

    def restore(self, snap: dict[str, Any]) -> None:
        """Replace the state."""
        self.inner.restore(snap["app"])
        self.era = int(snap["era"])
        self.switch_to = snap["switch_to"]
        self.votes = {p: set(v) for p, v in snap.get("votes", {}).items()}

    def digest(self) -> bytes:
        """SHA-256 of the canonical snapshot."""
        return canonical_digest(self.snapshot())


def _known_protocols() -> set[str]:
    return {"raft", *BFT_PROTOCOLS}


# -- messages ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class EraMsg:
    """A message of era `era`'s protocol (the inner message is checked by that protocol)."""

    era: int
    msg: Any

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise MalformedMessageError if a field is out of range."""
        require(is_count(self.era), "era must be >= 0")

    @property
    def kind(self) -> str:
        """The inner message's type name."""
        return getattr(self.msg, "kind", None) or type(self.msg).__name__

    def brief(self) -> str:
        """Short text form for scripts."""
        inner = self.msg.brief() if hasattr(self.msg, "brief") else type(self.msg).__name__
        return f"era{self.era} {inner}"


@dataclass(frozen=True, kw_only=True)
class EraBeacon:
    """Replica `src` is in era `era` (sent after a switch, so that laggards learn of it)."""

    src: int
    era: int

    def __post_init__(self) -> None:
        require(is_node_id(self.src) and is_count(self.era), "src and era")

    def brief(self) -> str:
        """Short text form for scripts."""
        return f"EraBeacon era={self.era}"


@dataclass(frozen=True, kw_only=True)
class EraStart:
    """Replica `src` vouches: era `era` runs `protocol` from `snapshot` (signed by src)."""

    src: int
    era: int
    protocol: str
    snapshot: Any
    signature: bytes = b""

    def __post_init__(self) -> None:
        require(is_node_id(self.src) and is_count(self.era) and self.era >= 1, "src and era >= 1")
        require(type(self.protocol) is str and type(self.signature) is bytes, "protocol and signature")

    def payload(self) -> bytes:
        """What the signature covers: era, protocol, the snapshot's digest."""
        return encode(("acp-era-start", self.src, self.era, self.protocol, canonical_digest(self.snapshot)))

    def brief(self) -> str:
        """Short text form for scripts."""
        return f"EraStart era={self.era} {self.protocol}"


@dataclass(frozen=True, kw_only=True)
class Forward:
    """A replica's own switch request, for the replica its era's protocol says leads."""

    src: int
    request: Request

    def __post_init__(self) -> None:
        require(is_node_id(self.src) and type(self.request) is Request, "src and request")

    def brief(self) -> str:
        """Short text form for scripts."""
        return f"Forward {self.request.brief()}"


# -- config, storage -------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class AcpConfig:
    """What ACP runs in each mode and how it switches; `validate()` says how to fix a bad value."""

    id: NodeId
    n: int
    datacenter: str = "raft"
    internet: str = "pbft"
    hybrid: str = "pbft"
    initial_mode: Mode = "datacenter"
    # Re-propose a switch, and beacon after one, this often.
    resend_ms: int = 200
    # Beacons sent after a switch (laggards that talk learn sooner: we answer them).
    beacons_max: int = 10
    # Messages of a later era than ours, kept until we get there.
    future_msgs_max: int = 1024
    # Options of each protocol's replicas, by protocol name.
    protocol_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def protocol_for(self, mode: Mode) -> str:
        """The protocol of `mode`."""
        return {"datacenter": self.datacenter, "internet": self.internet, "hybrid": self.hybrid}[mode]

    def validate(self) -> AcpConfig:
        """Return self, or raise ConfigError."""
        for mode in MODES:
            proto = self.protocol_for(mode)
            if proto not in _known_protocols():
                raise ConfigError(f"acp {mode}={proto!r}: use raft or one of {', '.join(BFT_PROTOCOLS)}")
            if proto in BFT_PROTOCOLS and self.n < 4:
                raise ConfigError(f"acp: {proto} needs at least 4 replicas, not {self.n}")
        if self.initial_mode not in MODES:
            raise ConfigError(f"acp initial_mode={self.initial_mode!r}: use one of {MODES}")
        if not 1 <= self.resend_ms <= 3_600_000 or not 0 <= self.beacons_max <= 10_000:
            raise ConfigError("acp resend_ms must be 1..3600000 and beacons_max 0..10000")
        if not 1 <= self.future_msgs_max <= 1_000_000:
            raise ConfigError("acp future_msgs_max: use 1..1000000")
        return self

    @property
    def protocols(self) -> tuple[str, ...]:
        """Every protocol ACP may run, in mode order, without repeats."""
        return tuple(dict.fromkeys(self.protocol_for(m) for m in MODES))


@dataclass(frozen=True, kw_only=True)
class EraRecord:
    """Where an era starts: its number, protocol and initial state."""

    era: int
    protocol: str
    snapshot: Any


@dataclass(frozen=True, kw_only=True)
class AcpPersist:
    """One Ready's changes: an EraRecord starts a new era's storage; anything else is the era's own."""

    ops: tuple[Any, ...]

    def brief(self) -> str:
        """Short text form for scripts."""
        return "; ".join(f"era {op.era} {op.protocol} starts" if isinstance(op, EraRecord)
                         else op.brief() if hasattr(op, "brief") else type(op).__name__ for op in self.ops)


class MemoryAcpStorage:
    """The current era's start and its protocol's storage, in memory."""

    def __init__(self, make_inner: Any) -> None:
        self._make_inner = make_inner  # protocol name -> an empty storage of that protocol
        self.era: EraRecord | None = None
        self.inner: Any = None

    def save(self, persist: AcpPersist) -> None:
        """Apply `persist`, in order."""
        for op in persist.ops:
            if isinstance(op, EraRecord):
                self.era = op
                self.inner = self._make_inner(op.protocol)
            else:
                self.inner.save(op)


# -- the replica ----------------------------------------------------------------------------------


class AcpReplica:
    """One replica of the adaptive ledger (see the module doc)."""

    def __init__(self, config: AcpConfig, *, cluster: AcpCluster, storage: MemoryAcpStorage, signer: Signer,
                 verifier: Verifier, rng: random.Random, now_ms: int = 0) -> None:
        self.config = config.validate()
        self._id = config.id
        self._cluster = cluster
        self._storage = storage
        self._signer = signer
        self._verifier = verifier
        self._rng = rng
        self._now = now_ms
        self.counters: dict[str, int] = {}
        self._events: list[tuple[Any, ...]] = []
        self._future: list[EraMsg] = []
        # The protocol the latest mode change asked for, kept once reached: a switch other
        # replicas ordered first may leave us in another era, and then we ask again. Not
        # durable: a restarted replica has no say until it is told the mode again (a
        # stale one would ask for a mode the links have left).
        self._wanted: str | None = None
        self._switch_deadline: int | None = None
        self._beacons_left = 0
        self._beacon_deadline: int | None = None
        self._starts_seen: dict[tuple[int, str, bytes], dict[NodeId, EraStart]] = {}
        self._history: dict[int, str] = {}  # era -> protocol, for the eras this replica knew
        self._start_sent: dict[NodeId, int] = {}
        self._last_start: EraStart | None = None
        if storage.era is None:
            record = EraRecord(era=0, protocol=config.protocol_for(config.initial_mode),
                               snapshot=cluster.new_app().snapshot())
            self._events.append(("start", record))
            self._begin(record, fresh=True)
        else:
            self._begin(storage.era, fresh=False)
            if storage.era.era >= 1:
                self._vouch(storage.era)
            self._count("restarts")
            self._beacons_left = 1  # tell the others we are back: a newer era would answer us
            self._beacon_deadline = now_ms

    # -- eras ----------------------------------------------------------------------------------

    @property
    def id(self) -> NodeId:
        """This replica's id."""
        return self._id

    @property
    def era(self) -> int:
        """The current era."""
        return self._era.era

    @property
    def protocol(self) -> str:
        """The current era's protocol."""
        return self._era.protocol

    @property
    def inner(self) -> Any:
        """The current era's replica."""
        return self._inner

    @property
    def app(self) -> StateMachine:
        """The current era's application state (the ledger), as this replica has applied it."""
        return self._sm.inner

    def _begin(self, record: EraRecord, *, fresh: bool) -> None:
        """Run `record`'s era: a replica of its protocol, on a state machine holding its snapshot."""
        self._era = record
        self._history[record.era] = record.protocol
        self._spec: ProtocolSpec = get_protocol(record.protocol)
        app = self._cluster.new_app()
        app.restore(record.snapshot)
        self._sm = AcpStateMachine(app, record.era, protocols=self.config.protocols,
                                   votes_needed=switch_votes_needed(record.protocol, self.config.n))
        inner_cluster = self._cluster.era_cluster(record.protocol)
        inner_id = self._id + self._spec.first_id
        # A new era's replica starts empty; a restarted one from what its storage holds.
        storage = inner_cluster.new_storage(inner_id) if fresh else self._storage.inner
        self._inner = self._cluster.build_inner(record.protocol, inner_id, storage, self._sm,
                                                now_ms=self._now, rng=self._rng)
        self._switch_deadline = self._now if self._switch_pending else None

    @property
    def _switch_pending(self) -> bool:
        """Does the latest mode want another protocol than this era's?"""
        return self._wanted is not None and self._wanted != self._era.protocol

    @property
    def _vote_ordered(self) -> bool:
        """Is our switch request for the wanted protocol in this era's log already?"""
        return switch_client(self._id) in self._sm.votes.get(self._wanted or "", ())

    def _check_switch(self) -> None:
        """After the era's replica applied its switch entry, start the next era from that state."""
        if self._sm.switch_to is None:
            return
        # The ledger and its sessions right after the switch entry: the same at every correct replica.
        record = EraRecord(era=self.era + 1, protocol=self._sm.switch_to, snapshot=self._sm.inner.snapshot())
        self._count("eras_started")
        self._start_era(record)

    def _vouch(self, record: EraRecord) -> None:
        """Our signed word on how `record`'s era starts, for replicas left in the era before."""
        start = EraStart(src=self._id, era=record.era, protocol=record.protocol, snapshot=record.snapshot)
        self._last_start = dataclasses.replace(start, signature=self._signer.sign(start.payload()))

    def _start_era(self, record: EraRecord) -> None:
        self._events.append(("start", record))
        self._begin(record, fresh=True)
        self._vouch(record)
        self._beacons_left = self.config.beacons_max
        self._beacon_deadline = self._now
        future, self._future = self._future, []
        for m in future:
            self._on_era_msg(m)

    def change_mode(self, mode: Mode) -> Ready:
        """The link mode changed: switch to its protocol if it is not the current one."""
        if mode not in MODES:
            raise ConfigError(f"mode {mode!r}: use one of {MODES}")
        proto = self.config.protocol_for(mode)
        self._wanted = proto
        if self._switch_pending:
            self._propose_switch()
        else:
            self._switch_deadline = None
        return self._ready()

    def _propose_switch(self) -> None:
        assert self._wanted is not None and self._switch_pending
        req = self._cluster.switch_request(self._id, SwitchEra(era=self.era + 1, protocol=self._wanted))
        self._run(self._inner.propose(req))
        self._switch_deadline = self._now + self.config.resend_ms
        self._count("switches_proposed")

    # -- the sans-IO interface ------------------------------------------------------------------

    def step(self, msg: Any) -> Ready:
        """Take a peer's message, or a client's request."""
        t = type(msg)
        if t is Request:
            return self.propose(msg)
        if t is EraMsg:
            self._on_era_msg(msg)
        elif t is EraBeacon:
            self._on_beacon(msg)
        elif t is EraStart:
            self._on_era_start(msg)
        elif t is Forward:
            if msg.request.client_id.startswith(SWITCH_CLIENT_PREFIX):
                self._run(self._inner.propose(msg.request))
        else:
            self._count("dropped_unknown_type")
        return self._ready()

    def _on_era_msg(self, m: EraMsg) -> None:
        if m.era == self.era:
            self._run(self._inner.step(m.msg))
        elif m.era > self.era:
            if len(self._future) >= self.config.future_msgs_max:
                self._future.pop(0)
                self._count("dropped_future_era_overflow")
            self._future.append(m)
        else:
            # A replica still in an older era: our start may carry it over. Its sender id is
            # in that era's protocol's numbering (Raft counts from 1).
            self._count("old_era_msgs")
            src = getattr(m.msg, "src", None)
            proto = self._history.get(m.era)
            if is_node_id(src) and proto is not None:
                self._send_start(src - get_protocol(proto).first_id)

    def _on_beacon(self, m: EraBeacon) -> None:
        if m.era < self.era:
            self._send_start(m.src)
        elif m.era > self.era and m.src != self._id:
            self._out_send(m.src, EraBeacon(src=self._id, era=self.era))  # "I am behind": it answers

    def _send_start(self, to: int) -> None:
        last = self._start_sent.get(to)
        if self._last_start is None or not 0 <= to < self.config.n or to == self._id or \
                (last is not None and self._now - last < self.config.resend_ms):
            return
        self._start_sent[to] = self._now
        self._out_send(to, self._last_start)

    def _on_era_start(self, m: EraStart) -> None:
        if m.era <= self.era or m.protocol not in self.config.protocols or m.src == self._id:
            return
        try:
            key = (m.era, m.protocol, canonical_digest(m.snapshot))
        except MalformedMessageError:
            self._count("dropped_bad_era_start")
            return
        if not self._verifier.verify(m.src, m.payload(), m.signature):
            self._count("dropped_bad_signature")
            return
        vouchers = self._starts_seen.setdefault(key, {})
        vouchers[m.src] = m
        # One word suffices from a crash-fault era to the next; across a Byzantine era, or several
        # eras, f+1 (one of them correct) of the most faults any era tolerates.
        crash = self._spec.fault_model == "crash" and m.era == self.era + 1
        need = 1 if crash else self._cluster.faults_tolerated_by_any() + 1
        if len(vouchers) >= need:
            self._count("eras_adopted")
            self._starts_seen.clear()
            self._start_era(EraRecord(era=m.era, protocol=m.protocol, snapshot=m.snapshot))

    def tick(self, now_ms: int) -> Ready:
        """Let time pass: the era's replica's timers, switch retries, beacons."""
        assert now_ms >= self._now, f"time went backwards: {now_ms} < {self._now}"
        self._now = now_ms
        self._run(self._inner.tick(now_ms))
        if self._switch_deadline is not None and now_ms >= self._switch_deadline and self._switch_pending:
            if self._vote_ordered:
                self._switch_deadline = None  # our vote is ordered: the others' decide when
            else:
                self._propose_switch()
        if self._beacon_deadline is not None and now_ms >= self._beacon_deadline:
            if self._beacons_left > 0:
                self._beacons_left -= 1
                for r in range(self.config.n):
                    if r != self._id:
                        self._out_send(r, EraBeacon(src=self._id, era=self.era))
            self._beacon_deadline = now_ms + self.config.resend_ms if self._beacons_left > 0 else None
        return self._ready()

    def propose(self, request: Request) -> Ready:
        """A client's request: to the current era, unless our switch request is on its way (then: retry).

        Held only until our vote is in the log: after that the switch waits for the
        others (f+1 in a Byzantine era), and a replica that alone wants it, perhaps the
        leader, must not stop the ledger meanwhile."""
        if self._switch_pending and not self._vote_ordered \
                and not request.client_id.startswith(SWITCH_CLIENT_PREFIX):
            self._events.append(("reply", ClientReply(client_id=request.client_id,
                                                       request_id=request.request_id, replica=self._id,
                                                       status="retry", view=self.era)))
            self._count("requests_held_for_switch")
            return self._ready()
        found, result = self._sm.cached_result(request)
        if found and not request.client_id.startswith(SWITCH_CLIENT_PREFIX):
            # Applied already (a retry, perhaps across a switch): every replica answers from its
            # sessions, as PBFT's backups do; a Raft follower would only redirect.
            self._events.append(("reply", self._answer(request, result)))
            return self._ready()
        self._run(self._inner.propose(request))
        return self._ready()

    def read(self, request: Request) -> Ready:
        """Reads go through the log in every era (see the module doc)."""
        return self.propose(request)

    def deadline_ms(self) -> int | None:
        """When `tick` next has work."""
        times = [t for t in (self._inner.deadline_ms(), self._switch_deadline, self._beacon_deadline)
                 if t is not None]
        return min(times) if times else None

    def status(self) -> ReplicaStatus:
        """The era's replica's status in ACP ids, with ACP's counters."""
        st = self._inner.status()
        first = self._spec.first_id
        counters = {**st.counters}
        for k, v in self.counters.items():
            counters[k] = counters.get(k, 0) + v
        return ReplicaStatus(id=self._id, role=f"{self.protocol} {st.role}", term=st.term,
                             leader=None if st.leader is None else st.leader - first, commit=st.commit,
                             applied=st.applied, members=tuple(m - first for m in st.members),
                             counters=counters)

    # -- plumbing -------------------------------------------------------------------------------

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def _out_send(self, to: NodeId, msg: Any) -> None:
        self._events.append(("send", to, msg))

    def _run(self, ready: Ready) -> None:
        if not ready.empty:
            self._events.append(("ready", self.era, self._spec.first_id, self.protocol, ready))
        self._check_switch()

    def _ready(self) -> Ready:
        """This event's Readies in order, in ACP terms: ids from 0, positions tagged with their era."""
        ops: list[Any] = []
        messages: list[tuple[NodeId, Any]] = []
        committed: list[Committed] = []
        replies: list[ClientReply] = []
        decided: list[tuple[int, bytes]] = []
        for event in self._events:
            kind = event[0]
            if kind == "start":
                ops.append(event[1])
            elif kind == "send":
                messages.append((event[1], event[2]))
            elif kind == "reply":
                replies.append(event[1])
            else:
                _, era, first, protocol, r = event
                if r.persist is not None:
                    ops.append(r.persist)
                for to, m in r.messages:
                    if type(m) is Request and m.client_id.startswith(SWITCH_CLIENT_PREFIX):
                        messages.append((to - first, Forward(src=self._id, request=m)))
                    elif type(m) is Request:
                        messages.append((to - first, m))
                    else:
                        messages.append((to - first, EraMsg(era=era, msg=m)))
                base = era << ERA_SHIFT
                for c in r.committed:
                    committed.append(dataclasses.replace(c, index=base | c.index))
                    if protocol == "raft":  # followers do not answer; ACP does, for each replica
                        replies.append(self._answer(c.request, c.result))
                decided.extend((base | pos, d) for pos, d in r.decided)
                for x in r.replies:
                    if protocol == "raft" and x.status == "ok":
                        continue  # answered from `committed` above (the leader's own answer too)
                    if x.client_id.startswith(SWITCH_CLIENT_PREFIX):
                        if x.status == "redirect" and x.leader_hint is not None and self._switch_pending:
                            req = self._cluster.switch_request(self._id, SwitchEra(era=era + 1,
                                                                                  protocol=self._wanted))
                            messages.append((x.leader_hint - first, Forward(src=self._id, request=req)))
                        continue
                    replies.append(self._translate(x, first, era))
        self._events = []
        if not (ops or messages or committed or replies or decided):
            return EMPTY_READY
        return Ready(persist=AcpPersist(ops=tuple(ops)) if ops else None, messages=tuple(messages),
                     committed=tuple(committed), replies=tuple(r for r in replies if r is not None),
                     decided=tuple(decided))

    def _answer(self, req: Request, result: Any) -> ClientReply | None:
        if req.client_id.startswith(SWITCH_CLIENT_PREFIX):
            return None
        if isinstance(result, EraClosed):
            return ClientReply(client_id=req.client_id, request_id=req.request_id, replica=self._id,
                               status="retry", view=self.era)
        return ClientReply(client_id=req.client_id, request_id=req.request_id, replica=self._id, status="ok",
                           result=result, view=self.era)

    def _translate(self, x: ClientReply, first: int, era: int) -> ClientReply:
        if x.status == "ok" and isinstance(x.result, EraClosed):
            return ClientReply(client_id=x.client_id, request_id=x.request_id, replica=self._id,
                               status="retry", view=era)
        hint = None if x.leader_hint is None else x.leader_hint - first
        return dataclasses.replace(x, replica=self._id, leader_hint=hint, view=era)


# -- the cluster ------------------------------------------------------------------------------------


class AcpCluster:
    """n ACP replicas, ids 0..n-1, and one inner cluster per protocol ACP may run."""

    def __init__(self, params: ClusterParams) -> None:
        options = dict(params.options)
        self._params = params
        self.replica_ids: tuple[NodeId, ...] = tuple(range(params.n))
        known = {f.name for f in dataclasses.fields(AcpConfig)} - {"id", "n"}
        unknown = set(options) - known
        if unknown:
            raise ConfigError(f"unknown AcpConfig options {sorted(unknown)}; known: {sorted(known)}")
        self._options = options
        self.config = AcpConfig(id=0, n=params.n, **options).validate()
        rng = random.Random(f"acp-keys:{params.seed}")
        self._signers, self._verifier = make_signers(self.replica_ids, params.signatures, rng)
        switch_ids = tuple(switch_client(r) for r in self.replica_ids)
        # One set of client keys for every era's protocol (ClusterParams.client_keys).
        self._client_signers, self._client_verifier = make_signers((*params.client_ids, *switch_ids),
                                                                   params.signatures, rng)
        self._inner: dict[str, Any] = {}
        self._prepared: StateMachine | None = None
        for proto in self.config.protocols:
            self._inner[proto] = get_protocol(proto).cluster(ClusterParams(
                n=params.n, seed=params.seed, state_machine=self._take_prepared,
                client_ids=(*params.client_ids, *switch_ids), signatures=params.signatures,
                options=self.config.protocol_options.get(proto, {}),
                client_keys=(self._client_signers, self._client_verifier)))
        f = (params.n - 1) // 3
        probft = "probft" in self.config.protocols
        self.client_policy = ClientPolicy(replicas=self.replica_ids,
                                          replies_needed=2 * f + 1 if probft else f + 1,
                                          broadcast_on_retry=True, sign_requests=True)
        bft = [p for p in self.config.protocols if p in BFT_PROTOCOLS]
        raft = "raft" in self.config.protocols
        # Byzantine replicas are outside Raft's model, crashes inside every protocol's.
        self.faults_tolerated = min([(params.n - 1) // 2 if raft else params.n] +
                                    [self._inner[p].faults_tolerated for p in bft])

    def new_app(self) -> StateMachine:
        """A fresh application state machine (the ledger)."""
        return self._params.state_machine()

    def era_cluster(self, protocol: str) -> Any:
        """The inner cluster of `protocol`."""
        return self._inner[protocol]

    def faults_tolerated_by_any(self) -> int:
        """The largest f of the protocols ACP may run."""
        return max(c.faults_tolerated for c in self._inner.values())

    def _take_prepared(self) -> StateMachine:
        """The inner clusters' state machine factory: hands over the one build_inner prepared."""
        sm, self._prepared = self._prepared, None
        assert sm is not None, "an inner cluster built a replica outside build_inner"
        return sm

    def build_inner(self, protocol: str, inner_id: NodeId, storage: Any, sm: AcpStateMachine, *, now_ms: int,
                    rng: random.Random) -> Any:
        """The era's replica of `protocol`, on state machine `sm` (which holds the era's start)."""
        self._prepared = sm
        replica = self._inner[protocol].new_replica(inner_id, storage, now_ms=now_ms, rng=rng)
        assert self._prepared is None, "the inner cluster did not take its state machine"
        return replica

    def switch_request(self, rid: NodeId, op: SwitchEra) -> Request:
        """Replica `rid`'s signed switch request (its id names the switch, so all of them are one)."""
        client = switch_client(rid)
        request_id = 1 + op.era
        req = Request(client_id=client, request_id=request_id, op=op)
        return Request(client_id=client, request_id=request_id, op=op,
                       signature=self._client_signers[client].sign(req.signed_bytes))

    def new_storage(self, rid: NodeId) -> MemoryAcpStorage:
        """An empty storage (each era gets its protocol's storage when it starts)."""
        return MemoryAcpStorage(lambda proto: self._inner[proto].new_storage(
            rid + get_protocol(proto).first_id))

    def new_replica(self, rid: NodeId, storage: MemoryAcpStorage, *, now_ms: int, rng: random.Random
                    ) -> AcpReplica:
        """A replica from `storage` (a restart if it holds an era)."""
        return AcpReplica(AcpConfig(id=rid, n=self._params.n, **self._options), cluster=self, storage=storage,
                          signer=self._signers[rid], verifier=self._verifier, rng=rng, now_ms=now_ms)

    def replica_signer(self, rid: NodeId) -> Signer | None:
        """The replica's ACP key."""
        return self._signers[rid]

    def client_signer(self, client_id: Hashable) -> Signer | None:
        """The client's key (the same in every era)."""
        return self._client_signers[client_id]


def _build(params: ClusterParams) -> AcpCluster:
    return AcpCluster(params)


register_protocol(ProtocolSpec(name="acp", fault_model="crash", replicas_min=4, first_id=0, build=_build,
                               summary="ACP: Raft in datacenter mode, a PBFT-family protocol in internet "
                                       "mode; switches drain the log at a switch entry and restart from "
                                       "its state"))
