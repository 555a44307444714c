"""Checks of one simulated run: linearizability per VM, one owner per epoch, equal committed prefixes,
and fencing (what VM hosts act on never runs a VM twice).

Linearizability (Herlihy and Wing): the ledger is a map of independent VM
records, so a history is linearizable iff each VM's sub-history is (locality),
and the check runs per VM as Porcupine does. Each VM is a compare-and-set
register whose value is (record, highest epoch ever issued); the model below is
written from the ledger's rules, independently of OwnershipLedger's code. The
search is Wing and Gong's, with Lowe's memo of (linearized set, state) pairs,
and a step budget: a history too tangled to decide within it is reported as
inconclusive, never as passing.

An operation whose client gave up (or that never returned) may have taken effect
or not: it can be linearized anywhere after its call, or left out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from fabric.ledger.replicated import ReadVm
from fabric.ledger.state import (
    AbortMigration,
    BeginMigration,
    CommitMigration,
    OpenMigration,
    Outcome,
    RegisterVm,
    RemoveVm,
    VmRecord,
)

# States explored per VM history before giving up: a 30-operation history with
# every operation concurrent needs far fewer with the memo.
SEARCH_STEPS_MAX = 200_000

VmState = tuple[VmRecord | None, int]  # (record, highest epoch ever handed out for this name)


@dataclass(frozen=True, kw_only=True)
class HistoryOp:
    """One client operation: called at `call`, returned at `ret` (None: no answer) with `result`.

    `call` and `ret` are positions in the simulator's single event order, so
    a < b means a really happened before b.
    """

    client: str
    op: Any
    call: int
    ret: int | None
    result: Outcome | None


def model_step(state: VmState, op: Any) -> tuple[VmState, tuple[bool, VmRecord | None]]:
    """The ledger's rules for one VM: the next state and the (accepted, record) the op must return."""
    rec, emax = state
    reject = (state, (False, rec))
    if isinstance(op, ReadVm):
        return state, (True, rec)
    if isinstance(op, RegisterVm):
        if rec is not None:
            return reject
        new = VmRecord(vm=op.vm, owner=op.node, epoch=emax + 1)
        return (new, emax + 1), (True, new)
    if rec is None:
        return reject
    if isinstance(op, BeginMigration):
        if rec.migration is not None or op.source != rec.owner or op.destination == op.source:
            return reject
        new = VmRecord(vm=rec.vm, owner=rec.owner, epoch=rec.epoch,
                       migration=OpenMigration(epoch=emax + 1, source=op.source, destination=op.destination))
        return (new, emax + 1), (True, new)
    if isinstance(op, CommitMigration | AbortMigration):
        if rec.migration is None or rec.migration.epoch != op.epoch:
            return reject
        owner = rec.migration.destination if isinstance(op, CommitMigration) else rec.owner
        epoch = op.epoch if isinstance(op, CommitMigration) else rec.epoch
        new = VmRecord(vm=rec.vm, owner=owner, epoch=epoch)
        return (new, emax), (True, new)
    if isinstance(op, RemoveVm):
        if rec.migration is not None or op.epoch != rec.epoch:
            return reject
        return (None, emax), (True, None)
    raise AssertionError(f"not a ledger operation: {op!r}")


def check_vm(ops: list[HistoryOp], *, steps_max: int = SEARCH_STEPS_MAX
             ) -> Literal["ok", "violation", "inconclusive"]:
    """Is this one VM's history linearizable (starting from "no such VM")?"""
    ops = sorted(ops, key=lambda o: o.call)
    n = len(ops)
    if n == 0:
        return "ok"
    inf = 1 << 62
    rets = [o.ret if o.ret is not None else inf for o in ops]
    must = 0  # ops that returned: all must be linearized
    for i, o in enumerate(ops):
        if o.ret is not None and o.result is not None:
            must |= 1 << i
    expected = [(o.result.accepted, o.result.record) if o.result is not None else None for o in ops]
    start: VmState = (None, 0)
    seen: set[tuple[int, VmState]] = set()
    stack: list[tuple[int, VmState]] = [(0, start)]
    steps = 0
    while stack:
        done, state = stack.pop()
        if done & must == must:
            return "ok"
        if (done, state) in seen:
            continue
        seen.add((done, state))
        steps += 1
        if steps > steps_max:
            return "inconclusive"
        # An op may go next only if no other pending op returned before it was called.
        horizon = min(rets[i] for i in range(n) if not done >> i & 1 and must >> i & 1)
        for i in range(n):
            if done >> i & 1 or ops[i].call > horizon:
                continue
            new_state, got = model_step(state, ops[i].op)
            if expected[i] is not None and got != expected[i]:
                continue
            stack.append((done | 1 << i, new_state))
    return "violation"


def check_linearizable(history: Iterable[HistoryOp], *, steps_max: int = SEARCH_STEPS_MAX
                       ) -> tuple[list[str], int]:
    """Per-VM check of a whole history: (violations, inconclusive VM count)."""
    by_vm: dict[str, list[HistoryOp]] = {}
    for op in history:
        by_vm.setdefault(op.op.vm, []).append(op)
    violations, inconclusive = [], 0
    for vm in sorted(by_vm):
        verdict = check_vm(by_vm[vm], steps_max=steps_max)
        if verdict == "violation":
            lines = [f"{o.client} {type(o.op).__name__}{_fields(o.op)} [{o.call},{o.ret}] -> "
                     f"{_result(o.result)}" for o in sorted(by_vm[vm], key=lambda o: o.call)]
            violations.append(f"history of {vm} is not linearizable:\n    " + "\n    ".join(lines))
        elif verdict == "inconclusive":
            inconclusive += 1
    return violations, inconclusive


def _fields(op: Any) -> str:
    return "(" + ", ".join(f"{k}={v}" for k, v in vars(op).items()) + ")"


def _result(res: Outcome | None) -> str:
    if res is None:
        return "?"
    rec = res.record
    body = "none" if rec is None else f"{rec.owner}@{rec.epoch}" + (
        f" open@{rec.migration.epoch}->{rec.migration.destination}" if rec.migration else "")
    return ("ok " if res.accepted else "rejected ") + body


def check_single_owner(outcomes: Iterable[Outcome]) -> list[str]:
    """No (VM, epoch) ever has two owners, across every honest replica and client observation."""
    owner: dict[tuple[str, int], str] = {}
    bad: list[str] = []
    for res in outcomes:
        rec = res.record if isinstance(res, Outcome) else None
        if rec is None:
            continue
        have = owner.setdefault((rec.vm, rec.epoch), rec.owner)
        if have != rec.owner:
            bad.append(f"{rec.vm} has two owners at epoch {rec.epoch}: {have} and {rec.owner}")
            if len(bad) >= 10:
                break
    return bad


def check_prefixes(applied: dict[Any, dict[tuple[int, int], tuple[Any, Any]]]) -> list[str]:
    """Honest replicas applied the same request with the same result at every position both reached.

    `applied[replica][(index, slot)] = (request key, result)`.
    """
    merged: dict[tuple[int, int], tuple[Any, Any, Any]] = {}
    bad: list[str] = []
    for rid in sorted(applied, key=str):
        for pos, entry in applied[rid].items():
            have = merged.setdefault(pos, (*entry, rid))
            if have[:2] != entry:
                bad.append(f"position {pos}: replica {have[2]} applied {have[0]} -> {have[1]}, "
                           f"replica {rid} applied {entry[0]} -> {entry[1]}")
                if len(bad) >= 10:
                    return bad
    return bad



def check_fencing(ops: Iterable[HistoryOp]) -> list[str]:
    """What clients accepted never lets a VM run twice (ARCHITECTURE.md invariant 1).

    VM hosts act on the outcomes their ledger clients accept: the owner at an epoch
    runs the VM, an open migration copies it, an accepted Commit makes the
    destination resume it, an accepted Abort the source. So among the completed
    client operations: one owner per (VM, epoch); one migration (source,
    destination) per (VM, migration epoch); no migration both committed and aborted.
    Unlike the other checks this one holds for ProBFT too, whatever its quorums do
    (see fabric.consensus.probft.core).
    """
    done = [o for o in ops if o.ret is not None and isinstance(o.result, Outcome)]
    bad = check_single_owner(o.result for o in done)
    opened: dict[tuple[str, int], tuple[str, str]] = {}
    resolved: dict[tuple[str, int], set[str]] = {}
    for o in done:
        res = o.result
        assert res is not None
        rec = res.record
        if rec is not None and rec.migration is not None:
            m = rec.migration
            have = opened.setdefault((rec.vm, m.epoch), (m.source, m.destination))
            if have != (m.source, m.destination):
                bad.append(f"{rec.vm} has two migrations at epoch {m.epoch}: {have} and "
                           f"{(m.source, m.destination)}")
        if res.accepted and isinstance(o.op, CommitMigration | AbortMigration):
            kinds = resolved.setdefault((o.op.vm, o.op.epoch), set())
            kinds.add(type(o.op).__name__)
            if len(kinds) == 2:
                bad.append(f"{o.op.vm}'s migration at epoch {o.op.epoch} was both committed and aborted")
    return bad[:10]
