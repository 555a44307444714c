"""The ownership ledger: its state machine and the single writer that sequences it."""

from fabric.ledger.single_writer import LedgerStorageError, SingleWriterLedger
from fabric.ledger.state import (
    AbortMigration,
    BeginMigration,
    Command,
    CommitMigration,
    OpenMigration,
    Outcome,
    OwnershipLedger,
    RegisterVm,
    RemoveVm,
    VmRecord,
    command_from_dict,
    command_to_dict,
)

__all__ = [
    "AbortMigration", "BeginMigration", "Command", "CommitMigration", "LedgerStorageError",
    "OpenMigration", "Outcome", "OwnershipLedger", "RegisterVm", "RemoveVm", "SingleWriterLedger",
    "VmRecord", "command_from_dict", "command_to_dict",
]
