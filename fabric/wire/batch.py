"""The Arrow schema of a page batch, how to build one, and how to check one from a peer.

A batch is an Arrow RecordBatch, a row per page. Its schema metadata carries
the header (VM, epoch, round, sequence number). Ray moves it through the
object store: the receiver reads the payload buffers in place, zero-copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import pyarrow as pa

from fabric.errors import CorruptPageError, MalformedBatchError
from fabric.memory.hashing import page_hashes
from fabric.memory.layout import PAGE_SIZE

WIRE_VERSION = "1"
# 16 MiB of raw pages: both ends hold at most a window of these at a time.
BATCH_PAGES_MAX = 4096


class Encoding(IntEnum):
    """How a row's payload encodes its page."""

    RAW = 0  # the page's 4096 bytes


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


@dataclass(frozen=True)
class DecodedBatch:
    """A checked batch: page numbers, their contents (a read-only view) and hashes."""

    header: BatchHeader
    idx: np.ndarray
    pages: np.ndarray
    hashes: np.ndarray

    @property
    def raw_bytes(self) -> int:
        """Guest bytes this batch carries."""
        return self.idx.size * PAGE_SIZE


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


def wire_bytes(batch: pa.RecordBatch) -> int:
    """Size of the batch as an Arrow IPC message: what crosses the network."""
    return pa.ipc.get_record_batch_size(batch)


def decode(batch: object, *, page_count: int) -> DecodedBatch:
    """Check a batch from a peer and view its pages; raise MalformedBatchError or CorruptPageError.

    Every check runs before the caller writes anything, so a bad batch changes no memory.
    """
    if not isinstance(batch, pa.RecordBatch):
        raise MalformedBatchError(f"expected an Arrow RecordBatch, got {type(batch).__name__}")
    header = BatchHeader.from_metadata(batch.schema.metadata)
    if batch.schema.names != SCHEMA.names:
        raise MalformedBatchError(f"columns {batch.schema.names}, expected {SCHEMA.names}")
    for got, want in zip(batch.schema, SCHEMA, strict=True):
        if got.type != want.type:
            raise MalformedBatchError(f"column {want.name!r} has type {got.type}, expected {want.type}")
    n = batch.num_rows
    if not 1 <= n <= BATCH_PAGES_MAX:
        raise MalformedBatchError(f"batch of {n} pages, expected 1..{BATCH_PAGES_MAX}")
    try:
        batch.validate(full=True)
    except pa.ArrowInvalid as e:
        raise MalformedBatchError(f"batch is not valid Arrow: {e}") from e
    for name in SCHEMA.names:
        if batch.column(name).null_count:
            raise MalformedBatchError(f"column {name!r} has nulls")
    encoding = batch.column("encoding").to_numpy()
    unknown = set(np.unique(encoding).tolist()) - {int(e) for e in Encoding}
    if unknown:
        raise MalformedBatchError(f"unknown page encodings {sorted(unknown)}")
    rounds = batch.column("round").to_numpy()
    if np.any(rounds != header.round):
        raise MalformedBatchError(f"round column disagrees with header round {header.round}")
    idx = batch.column("page").to_numpy()
    if int(idx.max()) >= page_count:
        raise MalformedBatchError(f"page number {int(idx.max())} out of range 0..{page_count - 1}")
    if np.unique(idx).size != n:
        raise MalformedBatchError("duplicated page numbers in one batch")
    pages = _raw_payload(batch.column("payload"), n)
    hashes = batch.column("checksum").to_numpy()
    actual = page_hashes(pages)
    bad = np.flatnonzero(actual != hashes)
    if bad.size:
        raise CorruptPageError(f"{bad.size} page(s) fail their checksum, first page {int(idx[bad[0]])}")
    return DecodedBatch(header=header, idx=idx, pages=pages, hashes=hashes)


def _raw_payload(payload: pa.Array, n: int) -> np.ndarray:
    """View a binary column of n PAGE_SIZE payloads as an (n, PAGE_SIZE) array, zero-copy."""
    _, offsets_buf, data_buf = payload.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int32)[payload.offset:payload.offset + n + 1]
    if np.any(np.diff(offsets) != PAGE_SIZE):
        bad = int(np.flatnonzero(np.diff(offsets) != PAGE_SIZE)[0])
        raise MalformedBatchError(
            f"raw payload of row {bad} is {int(offsets[bad + 1] - offsets[bad])} bytes, "
            f"expected the page size {PAGE_SIZE}")
    start = int(offsets[0])
    data = np.frombuffer(data_buf, dtype=np.uint8)[start:start + n * PAGE_SIZE]
    return data.reshape(n, PAGE_SIZE)
