"""The ownership ledger: its state machine, the single writer that sequences it, and its replicated form.

`LedgerStateMachine` is what consensus replicas replicate (the ledger plus
client sessions for exactly-once requests); `LedgerClient` is the sans-IO
client core that talks to them.
"""

from fabric.ledger.client import LedgerClient
from fabric.ledger.replicated import LedgerStateMachine, ReadVm, op_from_dict, op_to_dict
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
    "AbortMigration", "BeginMigration", "Command", "CommitMigration", "LedgerClient", "LedgerStateMachine",
    "LedgerStorageError", "OpenMigration", "Outcome", "OwnershipLedger", "ReadVm", "RegisterVm", "RemoveVm",
    "SingleWriterLedger", "VmRecord", "command_from_dict", "command_to_dict", "op_from_dict", "op_to_dict",
]
