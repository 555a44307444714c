"""The fabric's error classes: one flat hierarchy, raised at boundaries.

Local mistakes (a wrong config, an unknown name) are kept apart from remote
ones (a peer sent a malformed or corrupt batch): a remote error is the peer's
fault and must never crash the node that receives it.
"""

from __future__ import annotations


class FabricError(Exception):
    """Base class of every error the fabric raises on purpose."""


class ConfigError(FabricError, ValueError):
    """A configuration value is out of range or inconsistent; the message says how to fix it."""


class UnknownVmError(FabricError, LookupError):
    """No VM of that name exists in the fabric (or on that node)."""


class UnknownNodeError(FabricError, LookupError):
    """No node or data center of that name exists in the topology."""


class VmStateError(FabricError):
    """The VM is not in a run state that allows the operation (e.g. migrating a paused VM)."""


class CapacityError(FabricError):
    """A node has not enough free guest memory for the VM."""


class CaptureFormatError(FabricError):
    """A guest-memory capture folder is not in the documented format."""


class MalformedBatchError(FabricError):
    """A page batch from a peer violates the wire schema; nothing of it was applied."""


class CorruptPageError(MalformedBatchError):
    """A page's content does not match the checksum it travelled with; nothing was applied."""


class LedgerRejected(FabricError):
    """The ownership ledger refused a command that breaks its rules (e.g. a second open migration)."""


class FencedError(FabricError):
    """A node tried to run or change a VM it does not own at the ledger's current epoch."""


class MigrationFailed(FabricError):
    """A migration did not complete; `report` says why and where the VM runs."""

    def __init__(self, message: str, report: dict | None = None) -> None:
        super().__init__(message)
        self.report = report
