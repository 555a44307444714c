"""The one sans-IO interface every consensus replica has, and the values it hands back.

A replica is a deterministic state machine. A shell (the simulator, a test
script, later a Ray NodeActor) feeds it events and carries out what it returns:

    ready = replica.step(msg)          # a message from a peer
    ready = replica.tick(now_ms)       # time has passed
    ready = replica.propose(request)   # a client's command
    ready = replica.read(request)      # a client's query (linearizable)

and then, for every `Ready`, in this order:

    1. storage.save(ready.persist)     if it is not None; durable (fsync) on return
    2. send every (to, msg) in ready.messages
    3. hand ready.committed to the application, ready.replies to the clients

"Persist before you send": a vote or an accepted entry must not leave the node
before it would survive a crash.

Time enters only through `tick`: the replica's clock is the `now_ms` of its
last tick, and a timer that `step` resets counts from there. So a shell ticks
to the current time before it hands over an event (the simulator does), or
ticks on a short fixed period and accepts that period as timer resolution.
`deadline_ms()` says when the next `tick` has work to do.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal, Protocol

from fabric.consensus.canonical import encode
from fabric.consensus.errors import MalformedMessageError

NodeId = int
ReplyStatus = Literal["ok", "redirect", "retry"]

CLIENT_ID_CHARS_MAX = 64
SIGNATURE_BYTES_MAX = 128  # Ed25519 signatures are 64 bytes; room for a different scheme


def require(ok: bool, what: str) -> None:
    """Raise MalformedMessageError(`what`) unless `ok`: the check every message runs when built."""
    if not ok:
        raise MalformedMessageError(what)


def is_node_id(x: Any) -> bool:
    """A replica id is a non-negative int (and not a bool)."""
    return type(x) is int and x >= 0


def is_count(x: Any) -> bool:
    """A term, view, index or sequence number: a non-negative int."""
    return type(x) is int and x >= 0


def describe_op(op: Any) -> str:
    """A short text form of a state machine operation: its `op` name (or type) and its field values."""
    if dataclasses.is_dataclass(op) and not isinstance(op, type):
        name = getattr(op, "op", type(op).__name__)
        values = [str(getattr(op, f.name)) for f in dataclasses.fields(op) if getattr(op, f.name) != ""]
        return " ".join([name, *values])
    return repr(op)


@dataclass(frozen=True, kw_only=True)
class Request:
    """A client's operation: `op` is a command or, with `read_only`, a query of the state machine.

    (client_id, request_id) names it across retries and leader changes, so the
    state machine applies it at most once. A client has one request outstanding
    at a time, with ids that only grow.
    """

    client_id: str
    request_id: int
    op: Any
    read_only: bool = False
    # The client's signature over everything above; BFT protocols check it so a
    # faulty primary cannot invent requests. Crash-fault protocols ignore it.
    signature: bytes = b""

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise MalformedMessageError if a field is out of range."""
        require(type(self.client_id) is str and 0 < len(self.client_id) <= CLIENT_ID_CHARS_MAX,
                "client_id must be a non-empty str of at most 64 chars")
        require(type(self.request_id) is int and self.request_id >= 1, "request_id must be an int >= 1")
        require(type(self.read_only) is bool, "read_only must be a bool")
        require(type(self.signature) is bytes and len(self.signature) <= SIGNATURE_BYTES_MAX,
                "signature must be bytes of at most 128")

    @property
    def key(self) -> tuple[str, int]:
        """(client_id, request_id): the request's name."""
        return (self.client_id, self.request_id)

    def brief(self) -> str:
        """Short text form for scripts."""
        return f"{self.client_id}#{self.request_id} {describe_op(self.op)}"

    def signed_part(self) -> tuple[Any, ...]:
        """What the client signs."""
        return ("request", self.client_id, self.request_id, self.op, self.read_only)

    @cached_property
    def signed_bytes(self) -> bytes:
        """Canonical bytes of `signed_part()` (MalformedMessageError if `op` cannot be encoded)."""
        return encode(self.signed_part())

    def __canonical__(self) -> bytes:
        """Canonical bytes of the whole request (what was signed, and the signature), cached."""
        raw = self.__dict__.get("_canonical")
        if raw is None:
            raw = encode((self.signed_bytes, self.signature))
            object.__setattr__(self, "_canonical", raw)
        return raw


@dataclass(frozen=True, kw_only=True)
class ClientReply:
    """A replica's answer to a request: its result, or where to go instead."""

    client_id: str
    request_id: int
    replica: NodeId
    status: ReplyStatus
    # The state machine's result when status is "ok".
    result: Any = None
    # "redirect": the replica believes this one leads (None: it does not know).
    leader_hint: NodeId | None = None
    # The term or view the replica was in; a client follows the newest.
    view: int = 0

    def __post_init__(self) -> None:
        require(type(self.client_id) is str and 0 < len(self.client_id) <= CLIENT_ID_CHARS_MAX,
                "reply client_id must be a non-empty str")
        require(type(self.request_id) is int and self.request_id >= 1, "reply request_id must be >= 1")
        require(is_node_id(self.replica), "reply replica must be a node id")
        require(self.status in ("ok", "redirect", "retry"), "reply status must be ok, redirect or retry")
        require(self.leader_hint is None or is_node_id(self.leader_hint), "leader_hint must be a node id")
        require(is_count(self.view), "view must be >= 0")


@dataclass(frozen=True, kw_only=True)
class Committed:
    """One request applied to the state machine, at its place in the total order."""

    index: int  # Raft: the log index; PBFT: the sequence number of its batch
    slot: int = 0  # position inside that batch (0 for Raft)
    request: Request
    result: Any


@dataclass(frozen=True, kw_only=True)
class Ready:
    """What one event asks the shell to do: persist, then send, then deliver (see the module doc)."""

    persist: Any = None
    messages: tuple[tuple[NodeId, Any], ...] = ()
    committed: tuple[Committed, ...] = ()
    replies: tuple[ClientReply, ...] = ()
    # (position, digest) of every batch executed by this event, empty ones included:
    # for checkers (two honest replicas that execute different batches at one position
    # disagree, even where the batches hold no request). Shells may ignore it.
    decided: tuple[tuple[int, bytes], ...] = ()

    @property
    def empty(self) -> bool:
        """True when there is nothing to do."""
        return self.persist is None and not self.messages and not self.committed and not self.replies \
            and not self.decided


EMPTY_READY = Ready()


@dataclass(frozen=True, kw_only=True)
class ReplicaStatus:
    """A snapshot of a replica's volatile state, for shells, scripts and checks."""

    id: NodeId
    role: str
    term: int  # Raft term or PBFT view
    leader: NodeId | None
    commit: int
    applied: int
    members: tuple[NodeId, ...]
    counters: dict[str, int] = field(default_factory=dict)


class StateMachine(Protocol):
    """The deterministic application a replica replicates (the ownership ledger)."""

    def apply(self, request: Request) -> Any:
        """Apply a committed request once per (client_id, request_id); return its result."""
        ...

    def query(self, request: Request) -> Any:
        """Answer a read-only request without changing anything."""
        ...

    def snapshot(self) -> Any:
        """The whole state, JSON-ready and deterministic."""
        ...

    def restore(self, snap: Any) -> None:
        """Replace the state with `snapshot()`'s output."""
        ...

    def digest(self) -> bytes:
        """A hash of `snapshot()`, equal on replicas in equal states."""
        ...

    def cached_result(self, request: Request) -> tuple[bool, Any]:
        """(True, result) if this request, or a later one of its client, was already applied.

        For the request itself the result is the one it got; for an older one it
        is a refusal the client will ignore (it moved on). (False, None) otherwise.
        """
        ...


class Replica(Protocol):
    """The sans-IO surface of every protocol's replica (see the module doc for the shell's loop)."""

    @property
    def id(self) -> NodeId:
        """This replica's id."""
        ...

    def step(self, msg: Any) -> Ready:
        """Take a peer's message; a malformed or forged one is dropped and counted."""
        ...

    def tick(self, now_ms: int) -> Ready:
        """Let time pass to `now_ms` (never backwards) and fire what is due."""
        ...

    def propose(self, request: Request) -> Ready:
        """Take a client's command."""
        ...

    def read(self, request: Request) -> Ready:
        """Take a client's query; answered linearizably."""
        ...

    def deadline_ms(self) -> int | None:
        """The earliest time at which `tick` has work, or None."""
        ...

    def status(self) -> ReplicaStatus:
        """Role, term or view, leader, commit and applied indexes, counters."""
        ...


@dataclass(frozen=True, kw_only=True)
class ClientPolicy:
    """How a client talks to one protocol's replicas."""

    replicas: tuple[NodeId, ...]
    # Matching "ok" replies from distinct replicas that make a result: 1 when the
    # leader answers (Raft), f+1 when up to f replicas may lie (PBFT).
    replies_needed: int
    # After a timeout, send to every replica (PBFT: backups then force a view
    # change) rather than to the next one in turn (Raft).
    broadcast_on_retry: bool
    # Sign requests (BFT protocols check client signatures).
    sign_requests: bool

    def __post_init__(self) -> None:
        assert self.replicas and len(set(self.replicas)) == len(self.replicas), self.replicas
        assert 1 <= self.replies_needed <= len(self.replicas)


class Outbox:
    """What a core collects during one event, turned into a Ready at its end."""

    __slots__ = ("committed", "decided", "messages", "persist", "replies")

    def __init__(self) -> None:
        self.messages: list[tuple[NodeId, Any]] = []
        self.committed: list[Committed] = []
        self.replies: list[ClientReply] = []
        self.decided: list[tuple[int, bytes]] = []
        self.persist: Any = None

    def send(self, to: NodeId, msg: Any) -> None:
        """Queue `msg` for `to`."""
        self.messages.append((to, msg))

    def take(self) -> Ready:
        """The Ready for this event; the outbox is empty afterwards."""
        if self.persist is None and not self.messages and not self.committed and not self.replies \
                and not self.decided:
            return EMPTY_READY
        ready = Ready(persist=self.persist, messages=tuple(self.messages), committed=tuple(self.committed),
                      replies=tuple(self.replies), decided=tuple(self.decided))
        self.messages.clear()
        self.committed.clear()
        self.replies.clear()
        self.decided.clear()
        self.persist = None
        return ready
