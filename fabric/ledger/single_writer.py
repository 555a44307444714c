"""The single-writer ledger: one sequencer, an fsync'd append-only log, snapshots.

It has the interface the replicated ledger keeps (Begin / Commit / Abort with
epochs); only the sequencer changes when consensus replaces it. State is the
OwnershipLedger replayed from the snapshot and the log, so a restarted writer
recovers exactly what it had acknowledged.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fabric.errors import FabricError, LedgerRejected
from fabric.ledger.state import (
    Command,
    OwnershipLedger,
    VmRecord,
    command_from_dict,
    command_to_dict,
)

# Entries kept in the log before it is folded into a snapshot; bounds recovery
# time and disk use (a migration writes two entries).
LOG_ENTRIES_MAX = 10_000


class LedgerStorageError(FabricError):
    """The ledger's files are corrupt beyond a torn last line; refuse to guess."""


class SingleWriterLedger:
    """Sequences commands, persists each before acknowledging it, applies it."""

    def __init__(self, directory: str | Path | None = None, *,
                 log_entries_max: int = LOG_ENTRIES_MAX) -> None:
        if log_entries_max < 1:
            raise ValueError("log_entries_max must be >= 1")
        self._dir = Path(directory) if directory is not None else None
        self._log_entries_max = log_entries_max
        self._state = OwnershipLedger()
        self._index = 0  # index of the last applied entry
        self._snapshot_index = 0
        self._log_file = None
        self._log_entries = 0
        if self._dir is not None:
            self._dir.mkdir(parents=True, exist_ok=True)
            self._recover()
            self._log_file = open(self._log_path, "a", encoding="utf-8")  # noqa: SIM115

    @property
    def _log_path(self) -> Path:
        assert self._dir is not None
        return self._dir / "ledger.log"

    @property
    def _snapshot_path(self) -> Path:
        assert self._dir is not None
        return self._dir / "ledger.snapshot.json"

    @property
    def index(self) -> int:
        """Index of the last applied entry."""
        return self._index

    def submit(self, cmd: Command) -> VmRecord | None:
        """Apply `cmd` durably; return the VM's new record; LedgerRejected if it breaks a rule."""
        reason = self._state.check(cmd)
        if reason is not None:
            raise LedgerRejected(reason)
        self._append(cmd)
        outcome = self._state.apply(cmd)
        assert outcome.accepted, outcome.reason
        self._index += 1
        if self._dir is not None and self._log_entries >= self._log_entries_max:
            self._compact()
        return outcome.record

    def record(self, vm: str) -> VmRecord | None:
        """The record of `vm`, or None."""
        return self._state.record(vm)

    def records(self) -> list[VmRecord]:
        """Every VM's record."""
        return self._state.records()

    def close(self) -> None:
        """Close the log file."""
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    # -- persistence ---------------------------------------------------------

    def _append(self, cmd: Command) -> None:
        if self._log_file is None:
            return
        line = json.dumps({"index": self._index + 1, "command": command_to_dict(cmd)})
        self._log_file.write(line + "\n")
        self._log_file.flush()
        os.fsync(self._log_file.fileno())  # persist before we acknowledge
        self._log_entries += 1

    def _compact(self) -> None:
        snap = {"index": self._index, "state": self._state.snapshot()}
        tmp = self._snapshot_path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(snap, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._snapshot_path)
        assert self._log_file is not None
        self._log_file.close()
        self._log_file = open(self._log_path, "w", encoding="utf-8")  # noqa: SIM115
        self._snapshot_index = self._index
        self._log_entries = 0

    def _recover(self) -> None:
        if self._snapshot_path.exists():
            try:
                snap = json.loads(self._snapshot_path.read_text())
                self._state = OwnershipLedger.from_snapshot(snap["state"])
                self._index = self._snapshot_index = int(snap["index"])
            except (ValueError, KeyError, TypeError) as e:
                raise LedgerStorageError(f"{self._snapshot_path}: unreadable snapshot ({e})") from e
        if not self._log_path.exists():
            return
        text = self._log_path.read_text(encoding="utf-8")
        lines = [line for line in text.split("\n") if line]
        kept: list[str] = []
        for n, line in enumerate(lines):
            try:
                entry = json.loads(line)
                index, cmd = int(entry["index"]), command_from_dict(entry["command"])
            except (ValueError, KeyError, TypeError, FabricError) as e:
                if n == len(lines) - 1 and not text.endswith("\n"):
                    break  # a crash mid-append tore the last line; it was never acknowledged
                raise LedgerStorageError(f"{self._log_path}: entry {n + 1} unreadable ({e})") from e
            kept.append(line)
            if index <= self._index:
                continue  # already folded into the snapshot
            if index != self._index + 1:
                raise LedgerStorageError(f"{self._log_path}: entry {index} follows {self._index}")
            outcome = self._state.apply(cmd)
            if not outcome.accepted:
                raise LedgerStorageError(f"{self._log_path}: entry {index} no longer applies")
            self._index = index
        self._log_entries = len(kept)
        if len(kept) != len(lines) or (text and not text.endswith("\n")):
            # Drop the torn tail so the next append starts on a clean line.
            with open(self._log_path, "w", encoding="utf-8") as f:
                f.writelines(line + "\n" for line in kept)
                f.flush()
                os.fsync(f.fileno())

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary for status pages."""
        return {"kind": "single-writer", "index": self._index,
                "snapshot_index": self._snapshot_index,
                "persistent": self._dir is not None, "vms": len(self._state.records())}
