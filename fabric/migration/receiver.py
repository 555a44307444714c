"""The destination side of a migration: authenticate, reassemble, decode and write batches.

Bytes arrive as transport chunks; the transport receiver puts whole sealed
messages back together in order; the secure channel opens each one; the codec
decodes its pages and writes them only once every check has passed.
"""

from __future__ import annotations

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

    HANDSHAKE = "handshake"
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
        self.decoder = PageDecoder(memory=self.memory, holdings=holdings)
        self.state = IncomingState.RECEIVING
        self.batches = 0
        self.pages_received = 0
        self._round = 0
        self._device: DeviceState | None = None
        self._responder: HandshakeResponder | None = None
        self._channel: SecureChannel | None = None
        self._transport: TransportReceiver | None = None

    # -- the secure path ---------------------------------------------------------------

    def respond(self, identity: NodeIdentity, source_public: bytes, context: bytes,
                hello: bytes) -> bytes:
        """Answer the source's handshake hello; keys exist only once `confirm` verifies it."""
        self._require(IncomingState.RECEIVING)
        if self.batches:
            raise VmStateError(f"incoming copy of {self.vm} already took batches in the clear")
        self._responder = HandshakeResponder(identity, source_public, context)
        reply = self._responder.respond(hello)
        self.state = IncomingState.HANDSHAKE
        return reply

    def confirm(self, finished: bytes, transport: TransportConfig) -> None:
        """Finish the handshake; from now on only sealed messages through the transport are taken."""
        self._require(IncomingState.HANDSHAKE)
        assert self._responder is not None
        self._channel = SecureChannel(self._responder.finish(finished), role="responder")
        self._responder = None
        self._transport = TransportReceiver(transport.validate())
        self.state = IncomingState.RECEIVING

    def receive(self, chunks: list[Chunk], now: float) -> tuple[Ack, list[bytes]]:
        """Take transport chunks; the ack, and the sealed messages they completed, in order."""
        self._require(IncomingState.RECEIVING)
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
        self._require(IncomingState.RECEIVING)
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

    def _require(self, state: IncomingState) -> None:
        if self.state is not state:
            raise VmStateError(f"incoming copy of {self.vm} is {self.state.value}, not {state.value}")
