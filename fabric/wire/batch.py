"""The Arrow schema of a page batch, its header and encodings, and how to build one.

A batch is an Arrow RecordBatch, a row per page. Its schema metadata carries
the header (VM, epoch, round, sequence number) and, when a zstd frame of the
batch uses a trained dictionary, that dictionary's id (and, the first time,
its bytes). Ray moves it through the object store: the receiver reads the
payload buffers in place, zero-copy.

Each row's `encoding` says what its payload holds (see `Encoding`); the
structural rules every batch obeys are checked by `fabric.wire.structure`,
the content of the codec's encodings is decoded by `fabric.codec`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import pyarrow as pa

from fabric.errors import MalformedBatchError
from fabric.memory.layout import PAGE_SIZE

# 2: the codec's encodings (ZERO..ZSTD_CONT) and the dictionary metadata.
WIRE_VERSION = "2"
# 16 MiB of raw pages: both ends hold at most a window of these at a time.
BATCH_PAGES_MAX = 4096
# A zstd frame spans 1..256 pages (at most 1 MiB): big enough for zstd to find
# matches across pages, small enough to bound what one payload can claim.
FRAME_PAGES_MAX = 256
CONTENT_KEY_BYTES = 16  # xxh3-128 of a page's content: the payload of a REF row
# A DELTA payload of a page's size or more never pays; the encoder sends the page otherwise.
DELTA_PAYLOAD_BYTES_MAX = PAGE_SIZE - 1
# Trained dictionaries are ~64 KiB (zstd's default is 110 KiB); this bounds what a peer may ship.
DICTIONARY_BYTES_MAX = 128 << 10

META_DICT_ID = b"novacron.codec.dict_id"  # decimal id of the dictionary this batch's frames use
META_DICT = b"novacron.codec.dict"  # that dictionary's bytes, in the first batch that uses it


class Encoding(IntEnum):
    """How a row's payload encodes its page."""

    RAW = 0  # the page's 4096 bytes
    ZERO = 1  # empty: the page is all zero
    REF = 2  # the 16-byte content key of a page the destination already holds
    DELTA = 3  # XBZRLE-style runs: where the page differs from the destination's current copy
    ZSTD = 4  # a zstd frame holding this page and those of the ZSTD_CONT rows right after it
    ZSTD_CONT = 5  # empty: the next 4096 bytes of the current frame


SCHEMA = pa.schema([
    pa.field("page", pa.uint32(), nullable=False),
    pa.field("encoding", pa.uint8(), nullable=False),
    pa.field("payload", pa.binary(), nullable=False),
    pa.field("round", pa.uint32(), nullable=False),
    pa.field("checksum", pa.uint64(), nullable=False),  # xxh3-64 of the decoded page
])


@dataclass(frozen=True, kw_only=True)
class BatchHeader:
    """Which migration and round a batch belongs to, and its place in the stream."""

    vm: str
    epoch: int
    round: int
    seq: int

    def __post_init__(self) -> None:
        if not self.vm or self.epoch < 1 or self.round < 0 or self.seq < 0:
            raise ValueError(f"invalid batch header {self}")

    def to_metadata(self) -> dict[bytes, bytes]:
        """Schema metadata form."""
        return {b"novacron.wire": WIRE_VERSION.encode(), b"vm": self.vm.encode(),
                b"epoch": str(self.epoch).encode(), b"round": str(self.round).encode(),
                b"seq": str(self.seq).encode()}

    @classmethod
    def from_metadata(cls, meta: dict[bytes, bytes] | None) -> BatchHeader:
        """Parse schema metadata; MalformedBatchError if absent or wrong."""
        if not meta or meta.get(b"novacron.wire") != WIRE_VERSION.encode():
            raise MalformedBatchError(f"batch lacks wire version {WIRE_VERSION} metadata")
        try:
            return cls(vm=meta[b"vm"].decode(), epoch=int(meta[b"epoch"]),
                       round=int(meta[b"round"]), seq=int(meta[b"seq"]))
        except (KeyError, ValueError, UnicodeDecodeError) as e:
            raise MalformedBatchError(f"bad batch header metadata: {e}") from e


def encode_raw(header: BatchHeader, idx: np.ndarray, pages: np.ndarray,
               hashes: np.ndarray) -> pa.RecordBatch:
    """A batch of raw pages; the payload wraps `pages` without copying."""
    n = idx.size
    assert 1 <= n <= BATCH_PAGES_MAX, n
    assert pages.shape == (n, PAGE_SIZE) and pages.dtype == np.uint8 and pages.flags.c_contiguous
    assert hashes.shape == (n,) and hashes.dtype == np.uint64
    offsets = (np.arange(n + 1, dtype=np.int32) * PAGE_SIZE)
    payload = pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(pages)])
    columns = [
        pa.array(idx.astype(np.uint32, copy=False), type=pa.uint32()),
        pa.array(np.zeros(n, dtype=np.uint8), type=pa.uint8()),
        payload,
        pa.array(np.full(n, header.round, dtype=np.uint32), type=pa.uint32()),
        pa.array(hashes, type=pa.uint64()),
    ]
    return pa.RecordBatch.from_arrays(columns, schema=SCHEMA.with_metadata(header.to_metadata()))


def build_batch(header: BatchHeader, idx: np.ndarray, encoding: np.ndarray, payload_offsets: np.ndarray,
                payload_data: np.ndarray, checksums: np.ndarray, *, dict_id: int | None = None,
                dictionary: bytes | None = None) -> pa.RecordBatch:
    """A batch from its columns; payload k is payload_data[payload_offsets[k]:payload_offsets[k + 1]]."""
    n = idx.size
    assert 1 <= n <= BATCH_PAGES_MAX, n
    assert encoding.shape == (n,) and encoding.dtype == np.uint8
    assert payload_offsets.shape == (n + 1,) and payload_offsets[0] == 0
    assert payload_data.dtype == np.uint8 and payload_data.ndim == 1
    assert int(payload_offsets[-1]) == payload_data.size < 2**31
    assert checksums.shape == (n,) and checksums.dtype == np.uint64
    assert dictionary is None or dict_id is not None
    offsets = pa.py_buffer(payload_offsets.astype(np.int32))
    payload = pa.Array.from_buffers(pa.binary(), n, [None, offsets, pa.py_buffer(payload_data)])
    columns = [
        _numeric(idx.astype(np.uint32, copy=False), pa.uint32()),
        _numeric(encoding, pa.uint8()),
        payload,
        _numeric(np.full(n, header.round, dtype=np.uint32), pa.uint32()),
        _numeric(checksums, pa.uint64()),
    ]
    meta = header.to_metadata()
    if dict_id is not None:
        meta[META_DICT_ID] = str(dict_id).encode()
    if dictionary is not None:
        meta[META_DICT] = dictionary
    return pa.RecordBatch.from_arrays(columns, schema=SCHEMA.with_metadata(meta))


def _numeric(values: np.ndarray, type_: pa.DataType) -> pa.Array:
    """A numeric Arrow array over a numpy array's buffer (no copy, and no pandas import)."""
    values = np.ascontiguousarray(values)
    return pa.Array.from_buffers(type_, values.size, [None, pa.py_buffer(values)])


def wire_bytes(batch: pa.RecordBatch) -> int:
    """Size of the batch as an Arrow IPC message plus its schema metadata: what crosses the network."""
    meta = batch.schema.metadata or {}
    return pa.ipc.get_record_batch_size(batch) + sum(len(k) + len(v) for k, v in meta.items())
