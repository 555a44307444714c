"""The ledger's client core: ConsensusClient with one method per ledger operation.

Sans-IO like the replicas: each call returns the requests to send and, once
the replicas agree, the operation's Outcome (see fabric.consensus.client).
The same core serves the simulator and, later, the Ray shell.
"""

from __future__ import annotations

from fabric.consensus.client import ClientOutput, ConsensusClient
from fabric.ledger.replicated import ReadVm
from fabric.ledger.state import AbortMigration, BeginMigration, CommitMigration, RegisterVm, RemoveVm


class LedgerClient(ConsensusClient):
    """A client of the replicated ownership ledger."""

    def register(self, vm: str, node: str, now_ms: int) -> ClientOutput:
        """RegisterVm: `vm` starts owned by `node`."""
        return self.submit(RegisterVm(vm=vm, node=node), now_ms)

    def begin(self, vm: str, source: str, destination: str, now_ms: int) -> ClientOutput:
        """BeginMigration: open a migration from its owner `source` to `destination`."""
        return self.submit(BeginMigration(vm=vm, source=source, destination=destination), now_ms)

    def commit(self, vm: str, epoch: int, now_ms: int) -> ClientOutput:
        """CommitMigration: hand `vm` to the open migration's destination at `epoch`."""
        return self.submit(CommitMigration(vm=vm, epoch=epoch), now_ms)

    def abort(self, vm: str, epoch: int, now_ms: int, reason: str = "") -> ClientOutput:
        """AbortMigration: close the open migration at `epoch`; the owner stays."""
        return self.submit(AbortMigration(vm=vm, epoch=epoch, reason=reason), now_ms)

    def remove(self, vm: str, epoch: int, now_ms: int) -> ClientOutput:
        """RemoveVm: delete `vm`, owned at `epoch`."""
        return self.submit(RemoveVm(vm=vm, epoch=epoch), now_ms)

    def read(self, vm: str, now_ms: int) -> ClientOutput:
        """ReadVm: the VM's record, linearizably."""
        return self.submit(ReadVm(vm=vm), now_ms, read_only=True)
