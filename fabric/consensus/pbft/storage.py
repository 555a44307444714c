"""Where a PBFT replica's durable state lives: its view, its stable checkpoint, what it signed.

A restarted replica must not contradict itself (that would make it faulty):
so every message it signs (PrePrepare, Prepare, Commit, ViewChange), every
prepared certificate it formed (view changes must carry them) and every NewView
it accepted is persisted before it is sent. Records at or below the stable
checkpoint are dropped with it, so the journal is bounded by the watermark window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from fabric.consensus.pbft.messages import Checkpoint, NewView, PreparedCert, ViewChange


@dataclass(frozen=True, kw_only=True)
class StableCheckpoint:
    """A checkpoint 2f+1 replicas signed: its sequence number, digest, proof and state."""

    seq: int
    digest: bytes
    proof: tuple[Checkpoint, ...]
    snapshot: Any


@dataclass(frozen=True, kw_only=True)
class PbftPersist:
    """One Ready's changes to durable state."""

    view: int | None = None
    records: tuple[Any, ...] = ()
    stable: StableCheckpoint | None = None

    def brief(self) -> str:
        """Short text form for scripts."""
        parts = []
        if self.view is not None:
            parts.append(f"view={self.view}")
        if self.records:
            parts.append(f"{len(self.records)} records")
        if self.stable is not None:
            parts.append(f"stable@{self.stable.seq}")
        return ", ".join(parts) or "nothing"


@dataclass(frozen=True, kw_only=True)
class PbftDurable:
    """Everything `load` returns."""

    view: int
    stable: StableCheckpoint | None
    records: tuple[Any, ...]


class PbftStorage(Protocol):
    """Durable state of one PBFT replica."""

    def load(self) -> PbftDurable:
        """What was saved, records in the order they were saved."""
        ...

    def save(self, persist: PbftPersist) -> None:
        """Apply `persist`; durable on return."""
        ...


def record_seq(record: Any) -> int | None:
    """The sequence number a record is about (None for view-level records and records without one)."""
    if isinstance(record, PreparedCert):
        return record.seq
    if isinstance(record, ViewChange | NewView):
        return None
    return getattr(record, "seq", None)


class MemoryPbftStorage:
    """Durable state kept in memory: survives a simulated crash, not the process."""

    def __init__(self) -> None:
        self._view = 0
        self._stable: StableCheckpoint | None = None
        self._records: list[Any] = []
        self.saves = 0

    def load(self) -> PbftDurable:
        """What was saved."""
        return PbftDurable(view=self._view, stable=self._stable, records=tuple(self._records))

    def save(self, persist: PbftPersist) -> None:
        """Apply `persist`; garbage-collect records the stable checkpoint made useless."""
        if persist.view is not None:
            self._view = persist.view
        self._records.extend(persist.records)
        if persist.stable is not None:
            self._stable = persist.stable
        if persist.stable is not None or persist.view is not None:
            low = self._stable.seq if self._stable else 0
            # View-level records of older views are superseded by the newest one.
            newest_view = max((r.view for r in self._records if isinstance(r, ViewChange | NewView)),
                              default=0)
            # Records with neither a view nor a sequence number (a subclass's) are kept.
            self._records = [r for r in self._records if
                             (record_seq(r) is None and getattr(r, "view", newest_view) >= newest_view) or
                             (record_seq(r) is not None and record_seq(r) > low)]
        self.saves += 1
