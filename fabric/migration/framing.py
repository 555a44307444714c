"""A page batch as one sealed message: a small clear header, then the sealed Arrow IPC bytes.

The clear header (VM, epoch, round, sequence number) lets the receiver compute
the associated data before it decrypts; it is authenticated as that associated
data, and the batch inside must carry the same header. Nothing in a message
is used before the AEAD tag has verified.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pyarrow as pa

from fabric.errors import MalformedBatchError
from fabric.secure import SecureChannel, metadata_aad, sealed_bytes
from fabric.wire import BatchHeader

_LEN = struct.Struct("<I")
CLEAR_HEADER_BYTES_MAX = 1024  # four short fields; anything longer is not ours


def _clear_header(header: BatchHeader) -> bytes:
    return json.dumps({"vm": header.vm, "epoch": header.epoch, "round": header.round,
                       "seq": header.seq}, separators=(",", ":"), sort_keys=True).encode()


def batch_ipc_bytes(batch: pa.RecordBatch) -> pa.Buffer:
    """The batch (with its schema and metadata) as one Arrow IPC stream."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue()


def seal_batch(channel: SecureChannel, header: BatchHeader, batch: pa.RecordBatch) -> np.ndarray:
    """The message carrying `batch`: clear header, then the sealed IPC bytes (a uint8 array)."""
    clear = _clear_header(header)
    plaintext = batch_ipc_bytes(batch)
    start = _LEN.size + len(clear)
    out = np.empty(start + sealed_bytes(plaintext.size), dtype=np.uint8)
    _LEN.pack_into(out, 0, len(clear))
    out[_LEN.size:start] = np.frombuffer(clear, dtype=np.uint8)
    n = channel.seal_into(plaintext, metadata_aad(header.to_metadata()), memoryview(out)[start:])
    assert n == out.size - start
    return out


def open_batch(channel: SecureChannel, message: bytes | memoryview) -> tuple[BatchHeader, pa.RecordBatch]:
    """Authenticate and decrypt a message; the header and the batch it carries (typed errors)."""
    view = memoryview(message).cast("B")
    if view.nbytes < _LEN.size:
        raise MalformedBatchError(f"message of {view.nbytes} bytes has no header")
    (clear_len,) = _LEN.unpack_from(view, 0)
    if not 2 <= clear_len <= CLEAR_HEADER_BYTES_MAX or _LEN.size + clear_len > view.nbytes:
        raise MalformedBatchError(f"clear header length {clear_len} is out of range")
    try:
        raw = json.loads(bytes(view[_LEN.size:_LEN.size + clear_len]))
        header = BatchHeader(vm=str(raw["vm"]), epoch=int(raw["epoch"]), round=int(raw["round"]),
                             seq=int(raw["seq"]))
    except (ValueError, KeyError, TypeError) as e:
        raise MalformedBatchError(f"unreadable clear header: {e}") from e
    # Authenticates the clear header too: it is the associated data.
    plaintext = channel.open(view[_LEN.size + clear_len:], metadata_aad(header.to_metadata()))
    try:
        batch = pa.ipc.open_stream(plaintext).read_next_batch()
    except (pa.ArrowInvalid, StopIteration) as e:
        raise MalformedBatchError(f"sealed payload is not an Arrow batch: {e}") from e
    inner = BatchHeader.from_metadata(batch.schema.metadata)
    if inner != header:
        raise MalformedBatchError(f"batch header {inner} differs from the authenticated {header}")
    return header, batch
