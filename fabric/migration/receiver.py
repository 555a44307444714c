"""The destination side of a migration: authenticate, reassemble, decode and write batches.

Bytes arrive as transport chunks; the transport receiver puts whole sealed
messages back together in order; the secure channel opens each one; the codec
decodes its pages and writes them only once every check has passed.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Any

import numpy as np
import pyarrow as pa

from fabric.codec import PageDecoder
from fabric.errors import MalformedBatchError, VmStateError
from fabric.memory.pagestore import PageStore
from fabric.memory.vm import DeviceState, Vm
from fabric.migration.framing import open_batch
from fabric.secure import HandshakeResponder, NodeIdentity, SecureChannel
from fabric.transport import Ack, Chunk, TransportConfig, TransportReceiver
from fabric.wire import BatchHeader


class IncomingState(StrEnum):
    """Life of an incoming copy."""

    RECEIVING = "receiving"
    VERIFIED = "verified"
    ACTIVATED = "activated"
    DISCARDED = "discarded"


class IncomingMigration:
    """An empty memory that fills with checked batches of one migration (one VM, one epoch)."""

    def __init__(self, *, vm: str, epoch: int, pages: int, source: str,
                 holdings: list[PageStore] | None = None) -> None:
        self.vm = vm
        self.epoch = epoch
        self.source = source
        self.memory = PageStore(pages)
        self._holdings = holdings
        self.decoder = PageDecoder(memory=self.memory, holdings=holdings)
        self.state = IncomingState.RECEIVING
        self.batches = 0
        self.pages_received = 0
        self._round = 0
        self._device: DeviceState | None = None
        self.postcopy = False  # the VM may run here while its last pages still arrive
        self._responder: HandshakeResponder | None = None
        self._channel: SecureChannel | None = None
        self._transport: TransportReceiver | None = None

    # -- the secure path ---------------------------------------------------------------

    def respond(self, identity: NodeIdentity, source_public: bytes, context: bytes,
                hello: bytes) -> bytes:
        """Answer the source's handshake hello; keys exist only once `confirm` verifies it."""
        self._require_accepting()
        if self._channel is None and self.batches and not self.postcopy:
            raise VmStateError(f"incoming copy of {self.vm} already took batches in the clear")
        self._responder = HandshakeResponder(identity, source_public, context)
        return self._responder.respond(hello)

    def confirm(self, finished: bytes, transport: TransportConfig) -> None:
        """Finish the handshake; from now on only sealed messages through the transport are taken."""
        if self._responder is None:
            raise VmStateError(f"incoming copy of {self.vm} has no handshake under way")
        self._channel = SecureChannel(self._responder.finish(finished), role="responder")
        self._responder = None
        self._transport = TransportReceiver(transport.validate())

    def receive(self, chunks: list[Chunk], now: float) -> tuple[Ack, list[bytes]]:
        """Take transport chunks; the ack, and the sealed messages they completed, in order."""
        self._require_accepting()
        if self._transport is None or self._channel is None:
            raise VmStateError(f"incoming copy of {self.vm} has no secure channel yet")
        ack, messages = self._transport.on_chunks(chunks, now)
        return ack, [m for _, m in messages]

    def apply_message(self, message: bytes | memoryview) -> dict[str, Any]:
        """Authenticate, decrypt, decode and write one sealed batch message (see `apply`)."""
        if self._channel is None:
            raise VmStateError(f"incoming copy of {self.vm} has no secure channel yet")
        _, batch = open_batch(self._channel, message)
        return self.apply(batch)

    # -- batches --------------------------------------------------------------------------

    def apply(self, batch: object) -> dict[str, Any]:
        """Decode one batch and write its pages; nothing is written if any check fails."""
        self._require_accepting()
        if not isinstance(batch, pa.RecordBatch):
            raise MalformedBatchError(f"expected an Arrow RecordBatch, got {type(batch).__name__}")
        h = BatchHeader.from_metadata(batch.schema.metadata)
        if h.vm != self.vm or h.epoch != self.epoch:
            # Checked before the decoder sees it: a foreign batch must not move its stream on.
            raise MalformedBatchError(f"batch for {h.vm}@{h.epoch} sent to the migration of "
                                      f"{self.vm}@{self.epoch}")
        if h.round < self._round:
            # Rounds only move forward: an older round's page would overwrite a newer one.
            raise MalformedBatchError(f"batch of round {h.round} after round {self._round} began")
        applied = self.decoder.apply(batch)
        self._round = h.round
        self.batches += 1
        self.pages_received += applied.pages
        return {"seq": applied.header.seq, "pages": applied.pages, "raw_bytes": applied.raw_bytes,
                "missing": applied.missing.astype(np.uint32).tolist()}

    def finish(self, device_state: dict[str, Any], *, full: bool) -> str:
        """Take the device state and return the digest of the received memory."""
        self._require(IncomingState.RECEIVING)
        self._device = DeviceState.from_dict(device_state)
        self.state = IncomingState.VERIFIED
        return self.memory.full_digest() if full else self.memory.digest()

    def activate(self) -> Vm:
        """The VM, paused, ready to resume here (only after the ledger commit)."""
        self._require(IncomingState.VERIFIED)
        assert self._device is not None
        self.state = IncomingState.ACTIVATED
        return Vm.restore(self.vm, self.memory, self._device)

    def discard(self) -> None:
        """Drop the copy."""
        self.state = IncomingState.DISCARDED

    # -- post-copy ------------------------------------------------------------------------

    def begin_postcopy(self, device_state: dict[str, Any], missing: Any,
                       fault_handler: Callable[[np.ndarray], None]) -> None:
        """The source hands over: the VM may start here; pages `missing` will fault in."""
        self._require(IncomingState.RECEIVING)
        self._device = DeviceState.from_dict(device_state)
        missing = np.asarray(missing, dtype=np.int64)
        if missing.ndim != 1 or (missing.size and (missing.min() < 0 or missing.max() >= self.memory.pages)):
            raise MalformedBatchError("post-copy missing pages out of range")
        self.memory.begin_postcopy(missing, fault_handler)
        self.postcopy = True
        self.state = IncomingState.VERIFIED

    def end_postcopy(self) -> str:
        """Every page is here: the digest of memory as the source sent it."""
        if not self.postcopy or self.memory.missing_count:
            raise VmStateError(f"incoming copy of {self.vm} still lacks {self.memory.missing_count} pages")
        digest = self.memory.received_digest()
        self.memory.end_postcopy()
        self.postcopy = False
        return digest

    def reset_stream(self) -> None:
        """After the source reconnected: a new channel follows, and a fresh decoder (seq from 0)."""
        self.decoder = PageDecoder(memory=self.memory, holdings=self._holdings)
        self._channel = None
        self._transport = None
        self._responder = None
        self._round = 0

    def _require_accepting(self) -> None:
        # Batches come while receiving, and in post-copy also after the handoff and activation.
        if self.state is IncomingState.RECEIVING or (
                self.postcopy and self.state in (IncomingState.VERIFIED, IncomingState.ACTIVATED)):
            return
        raise VmStateError(f"incoming copy of {self.vm} is {self.state.value} and takes no batches")

    def _require(self, state: IncomingState) -> None:
        if self.state is not state:
            raise VmStateError(f"incoming copy of {self.vm} is {self.state.value}, not {state.value}")
