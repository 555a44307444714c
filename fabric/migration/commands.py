"""What the migration engine asks its shell to do.

The engine does no I/O. It hands out one command at a time; the shell (a Ray
actor, or the in-process loopback) carries it out and reports back with
`command_done`, `command_failed` or, for sent batches, `batch_acked`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa


@dataclass(frozen=True, kw_only=True)
class PrepareDestination:
    """Ask the destination to allocate an empty memory for the incoming VM."""

    vm: str
    epoch: int
    pages: int
    source: str


@dataclass(frozen=True, kw_only=True)
class SendBatch:
    """Send this batch to the destination; report its ack with `batch_acked(seq)`. Not blocking."""

    seq: int
    round: int
    batch: pa.RecordBatch
    pages: int
    raw_bytes: int
    wire_bytes: int


@dataclass(frozen=True, kw_only=True)
class AwaitAck:
    """Wait for the oldest batch in flight to be acknowledged."""


@dataclass(frozen=True, kw_only=True)
class Wait:
    """Nothing to do before `until` (the bandwidth cap); then ask again."""

    until: float


@dataclass(frozen=True, kw_only=True)
class PauseSource:
    """Pause the VM at the source; complete with its DeviceState."""


@dataclass(frozen=True, kw_only=True)
class ThrottleSource:
    """Hold the source guest back for `pct` percent of wall time (auto-converge; 0 lifts it)."""

    pct: int


@dataclass(frozen=True, kw_only=True)
class VerifyDestination:
    """Hand the destination the device state; complete with its memory digest."""

    device_state: dict[str, Any]
    full: bool


@dataclass(frozen=True, kw_only=True)
class StartPostcopy:
    """Hand the destination the device state and the pages it still lacks; it will fault them in."""

    device_state: dict[str, Any]
    missing: Any  # np.ndarray of page numbers
    fault_retry_s: float
    recovery_s_max: float


@dataclass(frozen=True, kw_only=True)
class VerifyReceived:
    """Post-copy is over: complete with the destination's received-image digest and fault stats."""


@dataclass(frozen=True, kw_only=True)
class ReopenChannel:
    """Post-copy lost its path to the destination: handshake again and start a fresh stream."""


@dataclass(frozen=True, kw_only=True)
class CommitOwnership:
    """Commit the migration in the ledger (the destination becomes the owner)."""

    epoch: int


@dataclass(frozen=True, kw_only=True)
class QueryOwnership:
    """Read the VM's ledger record; complete with (owner, epoch)."""


@dataclass(frozen=True, kw_only=True)
class ActivateDestination:
    """Tell the destination to start the VM at `epoch`."""

    epoch: int


@dataclass(frozen=True, kw_only=True)
class ReleaseSource:
    """Drop the source's stopped copy."""


@dataclass(frozen=True, kw_only=True)
class AbortOwnership:
    """Record the abort in the ledger."""

    epoch: int
    reason: str


@dataclass(frozen=True, kw_only=True)
class DiscardDestination:
    """Tell the destination to drop its partial copy."""

    epoch: int


@dataclass(frozen=True, kw_only=True)
class ResumeSource:
    """Resume the VM at the source."""


@dataclass(frozen=True, kw_only=True)
class Finished:
    """The migration is over; nothing more to do."""

    report: Any  # MigrationReport


Command = (PrepareDestination | SendBatch | AwaitAck | Wait | PauseSource | ThrottleSource | VerifyDestination
           | StartPostcopy | VerifyReceived | ReopenChannel
           | CommitOwnership | QueryOwnership | ActivateDestination | ReleaseSource
           | AbortOwnership | DiscardDestination | ResumeSource | Finished)
