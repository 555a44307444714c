"""The destination side of a migration: check batches, write them, report the digest."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from fabric.errors import MalformedBatchError, VmStateError
from fabric.memory.pagestore import PageStore
from fabric.memory.vm import DeviceState, Vm
from fabric.migration.config import INFLIGHT_BATCHES_MAX
from fabric.wire import decode


class IncomingState(StrEnum):
    """Life of an incoming copy."""

    RECEIVING = "receiving"
    VERIFIED = "verified"
    ACTIVATED = "activated"
    DISCARDED = "discarded"


# Batches of one round may be applied in any order (Ray does not keep the
# order of calls to an async actor), within what the sender may keep in flight.
REORDER_WINDOW_MAX = INFLIGHT_BATCHES_MAX


class IncomingMigration:
    """An empty memory that fills with checked batches of one migration (one VM, one epoch)."""

    def __init__(self, *, vm: str, epoch: int, pages: int, source: str) -> None:
        self.vm = vm
        self.epoch = epoch
        self.source = source
        self.memory = PageStore(pages)
        self.state = IncomingState.RECEIVING
        self._seq_low = 0  # every seq below this has been applied
        self._seqs_above_low: set[int] = set()
        self._round = 0
        self.batches = 0
        self.pages_received = 0
        self._device: DeviceState | None = None

    def apply(self, batch: object) -> dict[str, int]:
        """Check one batch and write its pages; nothing is written if any check fails."""
        if self.state is not IncomingState.RECEIVING:
            raise VmStateError(f"incoming copy of {self.vm} is {self.state.value}, not receiving")
        decoded = decode(batch, page_count=self.memory.pages)
        h = decoded.header
        if h.vm != self.vm or h.epoch != self.epoch:
            raise MalformedBatchError(f"batch for {h.vm}@{h.epoch} sent to the migration of "
                                      f"{self.vm}@{self.epoch}")
        if h.seq < self._seq_low or h.seq in self._seqs_above_low:
            raise MalformedBatchError(f"batch {h.seq} was already applied (a replay)")
        if h.seq >= self._seq_low + REORDER_WINDOW_MAX:
            raise MalformedBatchError(f"batch {h.seq} is beyond the reorder window "
                                      f"({self._seq_low}..{self._seq_low + REORDER_WINDOW_MAX - 1})")
        if h.round < self._round:
            # Rounds are barriers at the sender: an older round's page would be stale here.
            raise MalformedBatchError(f"batch of round {h.round} after round {self._round} began")
        self.memory.apply_received(decoded.idx, decoded.pages, decoded.hashes)
        self._round = h.round
        self._seqs_above_low.add(h.seq)
        while self._seq_low in self._seqs_above_low:
            self._seqs_above_low.remove(self._seq_low)
            self._seq_low += 1
        self.batches += 1
        self.pages_received += decoded.idx.size
        return {"seq": h.seq, "pages": int(decoded.idx.size), "raw_bytes": decoded.raw_bytes}

    def finish(self, device_state: dict[str, Any], *, full: bool) -> str:
        """Take the device state and return the digest of the received memory."""
        if self.state is not IncomingState.RECEIVING:
            raise VmStateError(f"incoming copy of {self.vm} is {self.state.value}, not receiving")
        self._device = DeviceState.from_dict(device_state)
        self.state = IncomingState.VERIFIED
        return self.memory.full_digest() if full else self.memory.digest()

    def activate(self) -> Vm:
        """The VM, paused, ready to resume here (only after the ledger commit)."""
        if self.state is not IncomingState.VERIFIED or self._device is None:
            raise VmStateError(f"incoming copy of {self.vm} is {self.state.value}, not verified")
        self.state = IncomingState.ACTIVATED
        return Vm.restore(self.vm, self.memory, self._device)

    def discard(self) -> None:
        """Drop the copy."""
        self.state = IncomingState.DISCARDED
