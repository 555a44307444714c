"""Structural checks of a batch from a peer, and the raw-only decode built on them.

`check_batch` enforces everything the wire format alone can say: schema,
types, nulls, ranges, duplicates, payload sizes per encoding, frame
structure and dictionary metadata. It never decodes content: what a REF,
DELTA or ZSTD payload means is `fabric.codec`'s job, which starts from a
`WireBatch`. Every check runs before the caller writes anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute  # validate(full=True) imports it lazily: ~1 s on a first batch

from fabric.errors import CorruptPageError, MalformedBatchError
from fabric.memory.hashing import page_hashes
from fabric.memory.layout import PAGE_SIZE
from fabric.wire.batch import (
    BATCH_PAGES_MAX,
    CONTENT_KEY_BYTES,
    DELTA_PAYLOAD_BYTES_MAX,
    DICTIONARY_BYTES_MAX,
    FRAME_PAGES_MAX,
    META_DICT,
    META_DICT_ID,
    SCHEMA,
    BatchHeader,
    Encoding,
)

DICT_ID_MAX = 2**32 - 1  # zstd stores dictionary ids as uint32; 0 means "no dictionary"
DELTA_PAYLOAD_BYTES_MIN = 2  # the run count alone


@dataclass(frozen=True, eq=False)
class WireBatch:
    """A structurally valid batch: its columns as numpy views, frames located, nothing decoded."""

    header: BatchHeader
    idx: np.ndarray  # uint32 page numbers, unique, in range
    encoding: np.ndarray  # uint8 Encoding values
    checksums: np.ndarray  # uint64 xxh3-64 of each decoded page
    payload_starts: np.ndarray  # int64 offsets into `data`
    payload_ends: np.ndarray
    data: np.ndarray  # uint8: the payload column's data buffer
    frame_starts: np.ndarray  # int64 rows that start a zstd frame
    frame_rows: np.ndarray  # int64 pages in each frame (its ZSTD row and the ZSTD_CONT rows after it)
    dict_id: int | None  # the dictionary the frames of this batch use
    dictionary: bytes | None  # its bytes, when this batch is the first to use it

    @property
    def rows(self) -> int:
        """Number of rows (pages)."""
        return int(self.idx.size)

    def rows_of(self, encoding: Encoding) -> np.ndarray:
        """Row numbers with this encoding, in order."""
        return np.flatnonzero(self.encoding == encoding)

    def payload(self, row: int) -> np.ndarray:
        """The payload of one row, a view."""
        return self.data[self.payload_starts[row]:self.payload_ends[row]]


def check_batch(batch: object, *, page_count: int) -> WireBatch:
    """Check a batch from a peer against the wire format; raise MalformedBatchError if it breaks it."""
    if not isinstance(batch, pa.RecordBatch):
        raise MalformedBatchError(f"expected an Arrow RecordBatch, got {type(batch).__name__}")
    meta = batch.schema.metadata
    header = BatchHeader.from_metadata(meta)
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
    ordered = np.sort(idx)
    if np.any(ordered[1:] == ordered[:-1]):
        raise MalformedBatchError("duplicated page numbers in one batch")
    starts, ends, data = _payload_views(batch.column("payload"), n)
    frame_starts, frame_rows = _check_frames(encoding)
    _check_payload_sizes(encoding, ends - starts, frame_starts, frame_rows)
    dict_id, dictionary = _check_dictionary_metadata(meta, has_frames=frame_starts.size > 0)
    return WireBatch(header=header, idx=idx, encoding=encoding, checksums=batch.column("checksum").to_numpy(),
                     payload_starts=starts, payload_ends=ends, data=data, frame_starts=frame_starts,
                     frame_rows=frame_rows, dict_id=dict_id, dictionary=dictionary)


def _payload_views(payload: pa.Array, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Start and end offsets of each row's payload, and the data buffer they index (zero-copy)."""
    _, offsets_buf, data_buf = payload.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int32)[payload.offset:payload.offset + n + 1]
    offsets = offsets.astype(np.int64)
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.empty(0, np.uint8)
    return offsets[:-1], offsets[1:], data


def _check_frames(encoding: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows that start a zstd frame and each frame's page count; a CONT row must continue a frame."""
    is_start = encoding == Encoding.ZSTD
    is_cont = encoding == Encoding.ZSTD_CONT
    in_frame = is_start | is_cont
    orphan = is_cont & ~np.concatenate(([False], in_frame[:-1]))
    if orphan.any():
        raise MalformedBatchError(f"ZSTD_CONT row {int(np.flatnonzero(orphan)[0])} does not follow "
                                  f"a ZSTD or ZSTD_CONT row")
    starts = np.flatnonzero(is_start)
    not_cont = np.flatnonzero(~is_cont)
    # A frame runs from its ZSTD row up to the next row that is not a CONT row.
    after = np.searchsorted(not_cont, starts, side="right")
    ends = np.where(after < not_cont.size, not_cont[np.minimum(after, not_cont.size - 1)], encoding.size)
    rows = (ends - starts).astype(np.int64)
    if rows.size and int(rows.max()) > FRAME_PAGES_MAX:
        bad = int(np.argmax(rows))
        raise MalformedBatchError(f"the frame at row {int(starts[bad])} spans {int(rows[bad])} pages, "
                                  f"at most {FRAME_PAGES_MAX} allowed")
    return starts.astype(np.int64), rows


def _check_payload_sizes(encoding: np.ndarray, sizes: np.ndarray, frame_starts: np.ndarray,
                         frame_rows: np.ndarray) -> None:
    """Each encoding's payload size is fixed or bounded; raise on the first row that breaks it."""
    exact = {Encoding.RAW: PAGE_SIZE, Encoding.ZERO: 0, Encoding.REF: CONTENT_KEY_BYTES,
             Encoding.ZSTD_CONT: 0}
    for enc, size in exact.items():
        bad = np.flatnonzero((encoding == enc) & (sizes != size))
        if bad.size:
            r = int(bad[0])
            expected = f"the page size {PAGE_SIZE}" if enc is Encoding.RAW else str(size)
            raise MalformedBatchError(f"{enc.name} payload of row {r} is {int(sizes[r])} bytes, "
                                      f"expected {expected}")
    delta = encoding == Encoding.DELTA
    bad = np.flatnonzero(delta & ((sizes < DELTA_PAYLOAD_BYTES_MIN) | (sizes > DELTA_PAYLOAD_BYTES_MAX)))
    if bad.size:
        r = int(bad[0])
        raise MalformedBatchError(f"DELTA payload of row {r} is {int(sizes[r])} bytes, expected "
                                  f"{DELTA_PAYLOAD_BYTES_MIN}..{DELTA_PAYLOAD_BYTES_MAX}")
    # A frame must be smaller than its pages: one that does not shrink is sent raw instead.
    frame_sizes = sizes[frame_starts]
    bad = np.flatnonzero((frame_sizes < 1) | (frame_sizes >= frame_rows * PAGE_SIZE))
    if bad.size:
        f = int(bad[0])
        rows = int(frame_rows[f])
        raise MalformedBatchError(f"ZSTD frame at row {int(frame_starts[f])} is {int(frame_sizes[f])} bytes "
                                  f"for {rows} pages, expected 1..{rows * PAGE_SIZE - 1}")


def _check_dictionary_metadata(meta: dict[bytes, bytes] | None, *,
                               has_frames: bool) -> tuple[int | None, bytes | None]:
    """The dictionary id and bytes the batch's metadata names, checked for form (not content)."""
    meta = meta or {}
    raw_id, dictionary = meta.get(META_DICT_ID), meta.get(META_DICT)
    if raw_id is None:
        if dictionary is not None:
            raise MalformedBatchError("batch ships a dictionary without naming its id")
        return None, None
    try:
        dict_id = int(raw_id.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as e:
        raise MalformedBatchError(f"bad dictionary id metadata {raw_id[:32]!r}") from e
    if not 1 <= dict_id <= DICT_ID_MAX:
        raise MalformedBatchError(f"dictionary id {dict_id} outside 1..{DICT_ID_MAX}")
    if not has_frames:
        raise MalformedBatchError(f"batch names dictionary {dict_id} but holds no zstd frame")
    if dictionary is not None and not 1 <= len(dictionary) <= DICTIONARY_BYTES_MAX:
        raise MalformedBatchError(f"shipped dictionary is {len(dictionary)} bytes, "
                                  f"expected 1..{DICTIONARY_BYTES_MAX}")
    return dict_id, dictionary


@dataclass(frozen=True)
class DecodedBatch:
    """A checked raw batch: page numbers, their contents (a read-only view) and hashes."""

    header: BatchHeader
    idx: np.ndarray
    pages: np.ndarray
    hashes: np.ndarray

    @property
    def raw_bytes(self) -> int:
        """Guest bytes this batch carries."""
        return self.idx.size * PAGE_SIZE


def decode(batch: object, *, page_count: int) -> DecodedBatch:
    """Check a batch of RAW rows from a peer and view its pages; raise MalformedBatchError or
    CorruptPageError. Batches with other encodings need `fabric.codec.PageDecoder`.

    Every check runs before the caller writes anything, so a bad batch changes no memory.
    """
    wb = check_batch(batch, page_count=page_count)
    other = np.flatnonzero(wb.encoding != Encoding.RAW)
    if other.size:
        enc = Encoding(int(wb.encoding[other[0]])).name
        raise MalformedBatchError(f"row {int(other[0])} is {enc}: only RAW rows decode without the codec "
                                  f"(use fabric.codec.PageDecoder)")
    n = wb.rows
    start = int(wb.payload_starts[0])
    # RAW payloads are PAGE_SIZE each (checked); contiguous when the offsets step evenly.
    if np.array_equal(wb.payload_starts, start + np.arange(n, dtype=np.int64) * PAGE_SIZE):
        pages = wb.data[start:start + n * PAGE_SIZE].reshape(n, PAGE_SIZE)
    else:
        pages = np.stack([wb.payload(r) for r in range(n)])
    actual = page_hashes(pages)
    bad = np.flatnonzero(actual != wb.checksums)
    if bad.size:
        raise CorruptPageError(f"{bad.size} page(s) fail their checksum, first page {int(wb.idx[bad[0]])}")
    return DecodedBatch(header=wb.header, idx=wb.idx, pages=pages, hashes=wb.checksums)
