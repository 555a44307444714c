"""`LedgerActor`: the single-writer ownership ledger on Ray.

One actor serialises every command (a sync actor runs one call at a time) and
persists it before answering. It restarts from its directory if it dies.
Replaced by a replica per NodeActor when consensus lands; callers only see
submit / read.
"""

from __future__ import annotations

from typing import Any

import ray

from fabric.ledger import SingleWriterLedger, command_from_dict


@ray.remote(num_cpus=0, max_restarts=-1)
class LedgerActor:
    """Sequences ledger commands from the controller and the nodes."""

    def __init__(self, directory: str) -> None:
        self._ledger = SingleWriterLedger(directory)

    def ready(self) -> bool:
        """True once recovered."""
        return True

    def submit(self, command: dict[str, Any]) -> dict[str, Any] | None:
        """Apply a command; the VM's new record, or LedgerRejected."""
        rec = self._ledger.submit(command_from_dict(command))
        return rec.to_dict() if rec else None

    def read(self, vm: str) -> dict[str, Any] | None:
        """The record of `vm`, or None."""
        rec = self._ledger.record(vm)
        return rec.to_dict() if rec else None

    def records(self) -> list[dict[str, Any]]:
        """Every VM's record."""
        return [r.to_dict() for r in self._ledger.records()]

    def describe(self) -> dict[str, Any]:
        """Health and size, for status pages."""
        return self._ledger.describe()
