"""The ownership ledger's state machine: which node owns which VM at which epoch.

Deterministic: the same commands in the same order give the same state and the
same outcomes, so any replica (or the single writer) that applies the log
agrees. A command that breaks a rule is rejected and changes nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from fabric.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class RegisterVm:
    """A new VM, owned by `node` at its first epoch."""

    op: ClassVar[str] = "register"
    vm: str
    node: str


@dataclass(frozen=True, kw_only=True)
class BeginMigration:
    """Open a migration of `vm` from its owner `source` to `destination`."""

    op: ClassVar[str] = "begin"
    vm: str
    source: str
    destination: str


@dataclass(frozen=True, kw_only=True)
class CommitMigration:
    """Hand `vm` to the open migration's destination at that migration's `epoch`."""

    op: ClassVar[str] = "commit"
    vm: str
    epoch: int


@dataclass(frozen=True, kw_only=True)
class AbortMigration:
    """Close the open migration at `epoch` without a change of owner."""

    op: ClassVar[str] = "abort"
    vm: str
    epoch: int
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class RemoveVm:
    """Delete `vm`; only its owner at the current `epoch` may."""

    op: ClassVar[str] = "remove"
    vm: str
    epoch: int


Command = RegisterVm | BeginMigration | CommitMigration | AbortMigration | RemoveVm
_COMMANDS: dict[str, type] = {c.op: c for c in
                              (RegisterVm, BeginMigration, CommitMigration, AbortMigration, RemoveVm)}


def command_to_dict(cmd: Command) -> dict[str, Any]:
    """JSON-ready form of a command."""
    return {"op": cmd.op, **asdict(cmd)}


def command_from_dict(raw: dict[str, Any]) -> Command:
    """Parse a command; ConfigError if it is not one."""
    raw = dict(raw)
    cls = _COMMANDS.get(str(raw.pop("op", None)))
    if cls is None:
        raise ConfigError(f"not a ledger command: {raw}")
    try:
        return cls(**raw)
    except TypeError as e:
        raise ConfigError(f"bad ledger command {raw}: {e}") from e


@dataclass(frozen=True, kw_only=True)
class OpenMigration:
    """A migration between Begin and Commit/Abort."""

    epoch: int
    source: str
    destination: str


@dataclass(frozen=True, kw_only=True)
class VmRecord:
    """The ledger's truth about one VM."""

    vm: str
    owner: str
    epoch: int
    migration: OpenMigration | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> VmRecord:
        """Parse the JSON-ready form."""
        mig = raw.get("migration")
        return cls(vm=raw["vm"], owner=raw["owner"], epoch=int(raw["epoch"]),
                   migration=OpenMigration(**mig) if mig else None)


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """What applying a command did: the VM's record after it, or why it was rejected."""

    accepted: bool
    record: VmRecord | None
    reason: str = ""


class OwnershipLedger:
    """VMs, owners and epochs; Begin / Commit / Abort of migrations."""

    def __init__(self) -> None:
        self._vms: dict[str, VmRecord] = {}
        # Highest epoch ever handed out per VM name, removed VMs included, so an
        # epoch is never reused and a stale holder is always fenced.
        self._epoch_max: dict[str, int] = {}

    def check(self, cmd: Command) -> str | None:
        """Why `cmd` would be rejected now, or None if it would be accepted."""
        rec = self._vms.get(cmd.vm)
        if isinstance(cmd, RegisterVm):
            return f"VM {cmd.vm} already exists" if rec else None
        if rec is None:
            return f"unknown VM {cmd.vm}"
        if isinstance(cmd, BeginMigration):
            if rec.migration is not None:
                return f"VM {cmd.vm} already has a migration open at epoch {rec.migration.epoch}"
            if cmd.source != rec.owner:
                return f"VM {cmd.vm} is owned by {rec.owner}, not {cmd.source}"
            if cmd.destination == cmd.source:
                return "destination is the source"
            return None
        if isinstance(cmd, CommitMigration | AbortMigration):
            if rec.migration is None or rec.migration.epoch != cmd.epoch:
                return f"VM {cmd.vm} has no migration open at epoch {cmd.epoch}"
            return None
        if isinstance(cmd, RemoveVm):
            if rec.migration is not None:
                return f"VM {cmd.vm} is migrating"
            if cmd.epoch != rec.epoch:
                return f"VM {cmd.vm} is at epoch {rec.epoch}, not {cmd.epoch}"
            return None
        raise AssertionError(f"unhandled command {cmd!r}")

    def apply(self, cmd: Command) -> Outcome:
        """Apply one command; a rejected command changes nothing."""
        reason = self.check(cmd)
        if reason is not None:
            return Outcome(accepted=False, record=self._vms.get(cmd.vm), reason=reason)
        rec = self._vms.get(cmd.vm)
        if isinstance(cmd, RegisterVm):
            epoch = self._epoch_max.get(cmd.vm, 0) + 1
            new = VmRecord(vm=cmd.vm, owner=cmd.node, epoch=epoch)
            self._epoch_max[cmd.vm] = epoch
        elif isinstance(cmd, BeginMigration):
            assert rec is not None
            epoch = self._epoch_max[cmd.vm] + 1
            self._epoch_max[cmd.vm] = epoch
            new = VmRecord(vm=cmd.vm, owner=rec.owner, epoch=rec.epoch,
                           migration=OpenMigration(epoch=epoch, source=cmd.source,
                                                   destination=cmd.destination))
        elif isinstance(cmd, CommitMigration):
            assert rec is not None and rec.migration is not None
            assert cmd.epoch > rec.epoch, "epochs only grow"
            new = VmRecord(vm=cmd.vm, owner=rec.migration.destination, epoch=cmd.epoch)
        elif isinstance(cmd, AbortMigration):
            assert rec is not None
            new = VmRecord(vm=cmd.vm, owner=rec.owner, epoch=rec.epoch)
        else:
            del self._vms[cmd.vm]
            return Outcome(accepted=True, record=None)
        self._vms[cmd.vm] = new
        return Outcome(accepted=True, record=new)

    def record(self, vm: str) -> VmRecord | None:
        """The record of `vm`, or None if there is none."""
        return self._vms.get(vm)

    def records(self) -> list[VmRecord]:
        """Every VM's record, by name."""
        return [self._vms[k] for k in sorted(self._vms)]

    def snapshot(self) -> dict[str, Any]:
        """The whole state, JSON-ready."""
        return {"vms": [r.to_dict() for r in self.records()], "epoch_max": dict(self._epoch_max)}

    @classmethod
    def from_snapshot(cls, snap: dict[str, Any]) -> OwnershipLedger:
        """Rebuild from `snapshot()`."""
        ledger = cls()
        for raw in snap["vms"]:
            rec = VmRecord.from_dict(raw)
            ledger._vms[rec.vm] = rec
        ledger._epoch_max = {k: int(v) for k, v in snap["epoch_max"].items()}
        return ledger
