"""The ownership ledger as the state machine that consensus replicas replicate.

`LedgerStateMachine` wraps OwnershipLedger with client sessions: each client's
last request id and its result, so a request retried across leader changes or
duplicated by the network is applied at most once and answered with the first
result. Reads (`ReadVm`) are queries: answered from the state, never changing it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, ClassVar

from fabric.consensus.api import Request
from fabric.consensus.canonical import digest
from fabric.errors import ConfigError
from fabric.ledger.state import (
    AbortMigration,
    BeginMigration,
    Command,
    CommitMigration,
    Outcome,
    OwnershipLedger,
    RegisterVm,
    RemoveVm,
    VmRecord,
    command_from_dict,
    command_to_dict,
)

# Client sessions kept; the least recently active is forgotten first. A client
# forgotten while a retry of its last request is still in flight could see that
# request applied twice, so this must exceed the clients active at once by far.
SESSIONS_MAX = 10_000
_TEXT_CHARS_MAX = 256  # VM and node names, abort reasons


@dataclass(frozen=True, kw_only=True)
class ReadVm:
    """A linearizable read of one VM's record."""

    op: ClassVar[str] = "read"
    vm: str


LedgerOp = Command | ReadVm

_STR_FIELDS = {RegisterVm: ("vm", "node"), BeginMigration: ("vm", "source", "destination"),
               CommitMigration: ("vm",), AbortMigration: ("vm", "reason"), RemoveVm: ("vm",),
               ReadVm: ("vm",)}
_EPOCH_OPS = (CommitMigration, AbortMigration, RemoveVm)


def op_problem(op: Any) -> str | None:
    """Why `op` is not a well-formed ledger operation (a peer may send anything), or None."""
    names = _STR_FIELDS.get(type(op))
    if names is None:
        return f"not a ledger operation: {type(op).__name__}"
    for name in names:
        value = getattr(op, name)
        if type(value) is not str or len(value) > _TEXT_CHARS_MAX or (name != "reason" and not value):
            return f"{op.op}.{name} must be a non-empty str of at most {_TEXT_CHARS_MAX} chars"
    if isinstance(op, _EPOCH_OPS) and (type(op.epoch) is not int or op.epoch < 0):
        return f"{op.op}.epoch must be an int >= 0"
    return None


def op_to_dict(op: LedgerOp) -> dict[str, Any]:
    """JSON-ready form of a command or a read."""
    if isinstance(op, ReadVm):
        return {"op": "read", "vm": op.vm}
    return command_to_dict(op)


def op_from_dict(raw: dict[str, Any]) -> LedgerOp:
    """Parse `op_to_dict`'s output; ConfigError if it is not an operation."""
    if raw.get("op") == "read":
        return ReadVm(vm=raw["vm"])
    return command_from_dict(raw)


def outcome_to_dict(outcome: Outcome) -> dict[str, Any]:
    """JSON-ready form of an Outcome."""
    return {"accepted": outcome.accepted, "record": outcome.record.to_dict() if outcome.record else None,
            "reason": outcome.reason}


def outcome_from_dict(raw: dict[str, Any]) -> Outcome:
    """Parse `outcome_to_dict`'s output."""
    rec = raw.get("record")
    return Outcome(accepted=bool(raw["accepted"]), record=VmRecord.from_dict(rec) if rec else None,
                   reason=str(raw.get("reason", "")))


class LedgerStateMachine:
    """OwnershipLedger plus client sessions: deterministic, exactly-once per request."""

    def __init__(self, *, sessions_max: int = SESSIONS_MAX) -> None:
        if not 1 <= sessions_max <= 10_000_000:
            raise ConfigError(f"sessions_max={sessions_max}: use 1..10000000")
        self._sessions_max = sessions_max
        self.ledger = OwnershipLedger()
        # client_id -> (last request_id applied, its result), least recently active first
        self._sessions: OrderedDict[str, tuple[int, Outcome]] = OrderedDict()

    def apply(self, request: Request) -> Outcome:
        """Apply a committed request once; a retry gets the first result, an older one is refused."""
        last = self._sessions.get(request.client_id)
        if last is not None and request.request_id <= last[0]:
            if request.request_id == last[0]:
                self._sessions.move_to_end(request.client_id)
                return last[1]
            return Outcome(accepted=False, record=None,
                           reason=f"request {request.request_id} is older than {last[0]}")
        result = self._execute(request)
        self._sessions[request.client_id] = (request.request_id, result)
        self._sessions.move_to_end(request.client_id)
        if len(self._sessions) > self._sessions_max:
            self._sessions.popitem(last=False)
        return result

    def _execute(self, request: Request) -> Outcome:
        op = request.op
        problem = op_problem(op)
        if problem is not None:
            return Outcome(accepted=False, record=None, reason=problem)
        if isinstance(op, ReadVm):
            return Outcome(accepted=True, record=self.ledger.record(op.vm))
        if request.read_only:
            return Outcome(accepted=False, record=None, reason="a command sent as a read")
        return self.ledger.apply(op)

    def query(self, request: Request) -> Outcome:
        """Answer a read without changing anything (no session either: reads need no dedup)."""
        op = request.op
        problem = op_problem(op)
        if problem is None and not isinstance(op, ReadVm):
            problem = "only reads are answered without the log"
        if problem is not None:
            return Outcome(accepted=False, record=None, reason=problem)
        return Outcome(accepted=True, record=self.ledger.record(op.vm))

    def cached_result(self, request: Request) -> tuple[bool, Any]:
        """(True, result) if this request or a later one of its client was applied (see StateMachine)."""
        last = self._sessions.get(request.client_id)
        if last is None or request.request_id > last[0]:
            return False, None
        if request.request_id == last[0]:
            return True, last[1]
        return True, Outcome(accepted=False, record=None,
                             reason=f"request {request.request_id} is older than {last[0]}")

    def snapshot(self) -> dict[str, Any]:
        """Ledger and sessions, JSON-ready, in a deterministic order."""
        return {"ledger": self.ledger.snapshot(),
                "sessions": [[cid, rid, outcome_to_dict(res)] for cid, (rid, res) in self._sessions.items()]}

    def restore(self, snap: dict[str, Any]) -> None:
        """Replace the state with a `snapshot()`."""
        self.ledger = OwnershipLedger.from_snapshot(snap["ledger"])
        self._sessions = OrderedDict((str(cid), (int(rid), outcome_from_dict(res)))
                                     for cid, rid, res in snap["sessions"])

    def digest(self) -> bytes:
        """SHA-256 of the canonical snapshot."""
        return digest(self.snapshot())


def record_summary(rec: VmRecord | None) -> str:
    """A short text form of a record, for scripts and reports."""
    if rec is None:
        return "none"
    text = f"{rec.owner}@{rec.epoch}"
    if rec.migration is not None:
        m = rec.migration
        text += f" open {m.source}->{m.destination}@{m.epoch}"
    return text


def outcome_summary(outcome: Any) -> str:
    """A short text form of an Outcome, for scripts and reports."""
    if not isinstance(outcome, Outcome):
        return repr(outcome)
    if outcome.accepted:
        return f"ok {record_summary(outcome.record)}"
    return f"rejected ({outcome.reason})"


