"""NovaCron Fabric: live migration of VM memory between data centers, on Ray.

The core (everything under `fabric.`) is pure Python and imports no Ray.
`fabric.connect()` is the one door to the running fabric; it imports the Ray
layer only when called, so `import fabric` stays Ray-free.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fabric.errors import (
    CapacityError,
    CaptureFormatError,
    ConfigError,
    CorruptPageError,
    FabricError,
    FencedError,
    LedgerRejected,
    MalformedBatchError,
    MigrationFailed,
    UnknownNodeError,
    UnknownVmError,
    VmStateError,
)
from fabric.memory import PageStore, ReplaySpec, RunState, SyntheticSpec, Vm
from fabric.migration import FaultPlan, MigrationConfig, MigrationReport

if TYPE_CHECKING:
    from actors.client import FabricHandle

__all__ = [
    "CapacityError", "CaptureFormatError", "ConfigError", "CorruptPageError", "FabricError",
    "FaultPlan", "FencedError", "LedgerRejected", "MalformedBatchError", "MigrationConfig",
    "MigrationFailed", "MigrationReport", "PageStore", "ReplaySpec", "RunState", "SyntheticSpec",
    "UnknownNodeError", "UnknownVmError", "Vm", "VmStateError", "connect",
]


def connect(address: str | None = None, **kwargs: Any) -> FabricHandle:
    """Attach to the running fabric (or boot it); see `actors.client.connect`."""
    from actors.client import connect as _connect  # the Ray layer, loaded on demand

    return _connect(address, **kwargs)
