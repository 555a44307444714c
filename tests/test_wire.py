"""The wire format: valid batches round-trip; malformed ones raise typed errors and write nothing."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fabric.errors import CorruptPageError, MalformedBatchError, VmStateError
from fabric.memory import PAGE_SIZE, page_hashes
from fabric.migration import IncomingMigration
from fabric.wire import (
    BATCH_PAGES_MAX,
    CONTENT_KEY_BYTES,
    DICTIONARY_BYTES_MAX,
    FRAME_PAGES_MAX,
    META_DICT,
    META_DICT_ID,
    SCHEMA,
    BatchHeader,
    Encoding,
    build_batch,
    check_batch,
    decode,
    encode_raw,
    wire_bytes,
)

PAGES = 64


def header(seq: int = 0, round: int = 0, vm: str = "vm", epoch: int = 2) -> BatchHeader:
    return BatchHeader(vm=vm, epoch=epoch, round=round, seq=seq)


def good_batch(idx=(1, 5, 9), seed: int = 0, **h) -> pa.RecordBatch:
    idx = np.asarray(idx, dtype=np.uint32)
    pages = np.random.default_rng(seed).integers(0, 256, (idx.size, PAGE_SIZE), dtype=np.uint8)
    return encode_raw(header(**h), idx, pages, page_hashes(pages))


def with_column(batch: pa.RecordBatch, name: str, array: pa.Array, field=None) -> pa.RecordBatch:
    i = batch.schema.get_field_index(name)
    arrays = [array if j == i else batch.column(j) for j in range(batch.num_columns)]
    fields = [field or pa.field(name, array.type) if j == i else batch.schema.field(j)
              for j in range(batch.num_columns)]
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields, metadata=batch.schema.metadata))


def test_round_trip_is_zero_copy_and_exact() -> None:
    batch = good_batch()
    d = decode(batch, page_count=PAGES)
    assert d.idx.tolist() == [1, 5, 9] and d.header == header()
    assert np.shares_memory(d.pages, np.frombuffer(batch.column("payload").buffers()[2], np.uint8))
    assert d.raw_bytes == 3 * PAGE_SIZE


def _malformed_cases() -> dict[str, tuple[pa.RecordBatch, str]]:
    b = good_batch()
    n = b.num_rows
    short = pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(np.array([0, 4000, 8096, 12192],
                                                                              np.int32)),
                                                  pa.py_buffer(np.zeros(12192, np.uint8))])
    return {
        "wrong page size": (with_column(b, "payload", short), "4000 bytes, expected the page size"),
        "page number out of range": (with_column(b, "page", pa.array([1, 5, PAGES], pa.uint32())),
                                     "out of range"),
        "duplicated pages": (with_column(b, "page", pa.array([1, 5, 5], pa.uint32())), "duplicated"),
        "wrong column type": (with_column(b, "page", pa.array([1, 5, 9], pa.int64())),
                              "type int64, expected uint32"),
        "unknown encoding": (with_column(b, "encoding", pa.array([0, 7, 0], pa.uint8())),
                             "unknown page encodings"),
        "round disagrees": (with_column(b, "round", pa.array([0, 1, 0], pa.uint32())),
                            "round column disagrees"),
        "null page": (with_column(b, "page", pa.array([1, None, 9], pa.uint32()),
                                  pa.field("page", pa.uint32())), "has nulls"),
        "missing column": (pa.RecordBatch.from_arrays(
            [b.column(i) for i in range(4)],
            schema=pa.schema(list(SCHEMA)[:4], metadata=b.schema.metadata)), "columns"),
        "no header": (b.replace_schema_metadata(None), "lacks wire version"),
        "bad header": (b.replace_schema_metadata({**b.schema.metadata, b"epoch": b"two"}),
                       "bad batch header"),
    }


@pytest.mark.parametrize("case", sorted(_malformed_cases()))
def test_malformed_batches_are_rejected_and_write_nothing(case: str) -> None:
    inc = IncomingMigration(vm="vm", epoch=2, pages=PAGES, source="a")
    inc.apply(good_batch(idx=(2,), seed=5))
    before = inc.memory.full_digest()
    batch, reason = _malformed_cases()[case]
    with pytest.raises(MalformedBatchError, match=reason):
        inc.apply(batch)
    assert inc.memory.full_digest() == before
    assert inc.memory.digest() == before


def test_not_a_batch_at_all() -> None:
    with pytest.raises(MalformedBatchError, match="RecordBatch"):
        decode({"pages": b"\0" * PAGE_SIZE}, page_count=PAGES)


def test_corrupt_page_fails_its_checksum_and_writes_nothing() -> None:
    b = good_batch()
    payload = np.frombuffer(b.column("payload").buffers()[2], np.uint8).copy()
    payload[PAGE_SIZE + 17] ^= 0x01  # one bit of the second page
    corrupt = with_column(b, "payload", pa.Array.from_buffers(
        pa.binary(), 3, [None, b.column("payload").buffers()[1], pa.py_buffer(payload)]))
    inc = IncomingMigration(vm="vm", epoch=2, pages=PAGES, source="a")
    before = inc.memory.full_digest()
    with pytest.raises(CorruptPageError, match="first page 5"):
        inc.apply(corrupt)
    assert inc.memory.full_digest() == before


def test_receiver_takes_only_the_next_batch_of_its_own_migration() -> None:
    """The transport delivers in order; anything else is a broken or hostile peer."""
    inc = IncomingMigration(vm="vm", epoch=2, pages=PAGES, source="a")
    with pytest.raises(MalformedBatchError, match="sent to the migration"):
        inc.apply(good_batch(epoch=3))
    with pytest.raises(MalformedBatchError, match="sent to the migration"):
        inc.apply(good_batch(vm="other"))
    with pytest.raises(MalformedBatchError, match="out of order"):
        inc.apply(good_batch(seq=1))
    inc.apply(good_batch(seq=0))
    with pytest.raises(MalformedBatchError, match="out of order"):
        inc.apply(good_batch(seq=0))  # a replay
    inc.apply(good_batch(seq=1, round=1))
    with pytest.raises(MalformedBatchError, match="round 0 after round 1"):
        inc.apply(good_batch(seq=2, round=0))
    inc.finish({"guest_time_s": 1.0, "workload": {"kind": "synthetic", "memory_mib": 1}}, full=False)
    with pytest.raises(VmStateError):
        inc.apply(good_batch(seq=2, round=1))


def test_batches_are_bounded() -> None:
    idx = np.arange(BATCH_PAGES_MAX + 1, dtype=np.uint32)
    pages = np.zeros((idx.size, PAGE_SIZE), np.uint8)
    with pytest.raises(AssertionError):
        encode_raw(header(), idx, pages, page_hashes(pages))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(idx=st.lists(st.integers(0, PAGES - 1), min_size=1, max_size=24, unique=True),
       seed=st.integers(0, 2**32 - 1), round=st.integers(0, 40), seq=st.integers(0, 10**6))
def test_any_valid_batch_round_trips_through_arrow_ipc(idx, seed, round, seq) -> None:
    rng = np.random.default_rng(seed)
    # a mix of zero, sparse and random pages, as guests hold
    pages = rng.integers(0, 256, (len(idx), PAGE_SIZE), dtype=np.uint8)
    pages[rng.random(len(idx)) < 0.3] = 0
    h = header(seq=seq, round=round)
    batch = encode_raw(h, np.array(idx, np.uint32), pages, page_hashes(pages))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as w:
        w.write_batch(batch)
    received = pa.ipc.open_stream(sink.getvalue()).read_next_batch()
    d = decode(received, page_count=PAGES)
    assert d.header == h and d.idx.tolist() == idx and np.array_equal(d.pages, pages)


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), flips=st.integers(1, 3))
def test_any_bit_flip_in_a_payload_is_caught(seed: int, flips: int) -> None:
    b = good_batch(seed=seed % 1000)
    payload = np.frombuffer(b.column("payload").buffers()[2], np.uint8).copy()
    rng = np.random.default_rng(seed)
    for bit in rng.choice(payload.size * 8, size=flips, replace=False):
        payload[bit // 8] ^= np.uint8(1 << (bit % 8))
    corrupt = with_column(b, "payload", pa.Array.from_buffers(
        pa.binary(), 3, [None, b.column("payload").buffers()[1], pa.py_buffer(payload)]))
    with pytest.raises(CorruptPageError):
        decode(corrupt, page_count=PAGES)


# -- the codec's encodings: structure only (content is fabric.codec's job) ----------------------

ROW_SIZES = {Encoding.RAW: PAGE_SIZE, Encoding.ZERO: 0, Encoding.REF: CONTENT_KEY_BYTES, Encoding.DELTA: 9,
             Encoding.ZSTD: 100, Encoding.ZSTD_CONT: 0}


def rows_batch(rows: list[tuple[int, int]], *, meta: dict[bytes, bytes] | None = None,
               h: BatchHeader | None = None) -> pa.RecordBatch:
    """A batch of (encoding, payload size) rows with filler payloads, pages 0..n-1."""
    n = len(rows)
    sizes = np.array([size for _, size in rows], dtype=np.int64)
    offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
    encodings = np.array([e for e, _ in rows], np.uint8)
    batch = build_batch(h or header(), np.arange(n, dtype=np.uint32), encodings, offsets,
                        np.full(int(offsets[-1]), 7, np.uint8), np.zeros(n, np.uint64))
    if meta:
        batch = batch.replace_schema_metadata({**batch.schema.metadata, **meta})
    return batch


def structurally_valid(rows: list[tuple[int, int]]) -> bool:
    """A plain reference model of the framing rules, written independently of check_batch."""
    frame_rows, frame_size = 0, 0
    frames: list[tuple[int, int]] = []
    for enc, size in rows:
        if enc == Encoding.ZSTD_CONT:
            if frame_rows == 0 or size != 0:
                return False
            frame_rows += 1
            continue
        if frame_rows:
            frames.append((frame_rows, frame_size))
            frame_rows = 0
        if enc == Encoding.ZSTD:
            frame_rows, frame_size = 1, size
        elif enc == Encoding.DELTA:
            if not 2 <= size <= PAGE_SIZE - 1:
                return False
        elif size != ROW_SIZES[Encoding(enc)]:
            return False
    if frame_rows:
        frames.append((frame_rows, frame_size))
    return all(rows_ <= FRAME_PAGES_MAX and 1 <= size < rows_ * PAGE_SIZE for rows_, size in frames)


@pytest.mark.parametrize(("rows", "reason"), [
    ([(Encoding.ZSTD_CONT, 0)], "does not follow"),
    ([(Encoding.RAW, PAGE_SIZE), (Encoding.ZSTD_CONT, 0)], "does not follow"),
    ([(Encoding.ZSTD, 100), (Encoding.ZERO, 0), (Encoding.ZSTD_CONT, 0)], "does not follow"),
    ([(Encoding.ZSTD, 100)] + [(Encoding.ZSTD_CONT, 0)] * FRAME_PAGES_MAX, "at most 256"),
    ([(Encoding.ZSTD, PAGE_SIZE)], "expected 1..4095"),
    ([(Encoding.ZSTD, 0), (Encoding.ZSTD_CONT, 0)], "expected 1..8191"),
    ([(Encoding.ZSTD, 100), (Encoding.ZSTD_CONT, 5)], "ZSTD_CONT payload of row 1 is 5 bytes"),
    ([(Encoding.REF, 15)], "REF payload of row 0 is 15 bytes, expected 16"),
    ([(Encoding.ZERO, 1)], "ZERO payload"),
    ([(Encoding.DELTA, 1)], "DELTA payload of row 0 is 1 bytes"),
    ([(Encoding.DELTA, PAGE_SIZE)], "expected 2..4095"),
    ([(Encoding.RAW, 4000)], "4000 bytes, expected the page size"),
])
def test_codec_rows_that_break_the_framing_are_rejected(rows, reason) -> None:
    with pytest.raises(MalformedBatchError, match=reason):
        check_batch(rows_batch(rows), page_count=PAGES + FRAME_PAGES_MAX)


def test_frames_at_the_size_bound_are_accepted() -> None:
    conts = [(Encoding.ZSTD_CONT, 0)] * (FRAME_PAGES_MAX - 1)
    rows = [(Encoding.ZSTD, FRAME_PAGES_MAX * PAGE_SIZE - 1), *conts, (Encoding.ZSTD, 1)]
    wb = check_batch(rows_batch(rows), page_count=PAGES + FRAME_PAGES_MAX)
    assert wb.frame_starts.tolist() == [0, FRAME_PAGES_MAX]
    assert wb.frame_rows.tolist() == [FRAME_PAGES_MAX, 1]


@pytest.mark.parametrize(("meta", "reason"), [
    ({META_DICT: b"d" * 100}, "without naming its id"),
    ({META_DICT_ID: b"seven"}, "bad dictionary id"),
    ({META_DICT_ID: b"0"}, "outside 1.."),
    ({META_DICT_ID: str(2**32).encode()}, "outside 1.."),
    ({META_DICT_ID: b"3", META_DICT: b"d" * (DICTIONARY_BYTES_MAX + 1)}, "shipped dictionary is"),
])
def test_bad_dictionary_metadata_is_rejected(meta, reason) -> None:
    with pytest.raises(MalformedBatchError, match=reason):
        check_batch(rows_batch([(Encoding.ZSTD, 100)], meta=meta), page_count=PAGES)


def test_a_dictionary_id_needs_a_frame() -> None:
    with pytest.raises(MalformedBatchError, match="holds no zstd frame"):
        check_batch(rows_batch([(Encoding.RAW, PAGE_SIZE)], meta={META_DICT_ID: b"1"}), page_count=PAGES)


def test_dictionary_bytes_survive_arrow_ipc() -> None:
    dictionary = bytes(range(256)) * 40
    batch = rows_batch([(Encoding.ZSTD, 100), (Encoding.ZSTD_CONT, 0)],
                       meta={META_DICT_ID: b"1", META_DICT: dictionary})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as w:
        w.write_batch(batch)
    wb = check_batch(pa.ipc.open_stream(sink.getvalue()).read_next_batch(), page_count=PAGES)
    assert wb.dict_id == 1 and wb.dictionary == dictionary
    assert wire_bytes(batch) > len(dictionary)  # the metadata counts on the wire


def test_raw_decode_refuses_codec_rows_with_a_typed_error() -> None:
    batch = rows_batch([(Encoding.RAW, PAGE_SIZE), (Encoding.ZERO, 0)])
    with pytest.raises(MalformedBatchError, match="only RAW rows decode without the codec"):
        decode(batch, page_count=PAGES)
    # the receiver decodes with the codec, which refuses this batch too, writing nothing
    inc = IncomingMigration(vm="vm", epoch=2, pages=PAGES, source="a")
    before = inc.memory.full_digest()
    with pytest.raises(MalformedBatchError):
        inc.apply(batch)
    assert inc.memory.full_digest() == before


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(st.tuples(st.sampled_from(list(Encoding)),
                               st.sampled_from([0, 1, 2, 9, 15, 16, 100, PAGE_SIZE - 1, PAGE_SIZE,
                                                PAGE_SIZE + 1])), min_size=1, max_size=40))
def test_framing_accepts_exactly_the_valid_row_sequences(rows) -> None:
    """check_batch agrees with an independent model of the rules on any sequence of rows."""
    batch = rows_batch(rows)
    if structurally_valid(rows):
        wb = check_batch(batch, page_count=PAGES)
        assert int(wb.frame_rows.sum()) == sum(1 for e, _ in rows if e in (Encoding.ZSTD, Encoding.ZSTD_CONT))
    else:
        with pytest.raises(MalformedBatchError):
            check_batch(batch, page_count=PAGES)


@settings(max_examples=50, deadline=None)
@given(rows=st.lists(st.tuples(st.sampled_from([Encoding.RAW, Encoding.ZERO, Encoding.REF]),
                               st.just(0)), min_size=1, max_size=30), cut=st.integers(0, 30))
def test_a_batch_sliced_by_arrow_keeps_its_payloads(rows, cut) -> None:
    """Arrow slices share buffers with an offset; the payload views must honour it."""
    rows = [(e, ROW_SIZES[e]) for e, _ in rows]
    batch = rows_batch(rows)
    part = batch.slice(min(cut, len(rows) - 1))
    wb = check_batch(part, page_count=PAGES)
    for r in range(wb.rows):
        assert wb.payload(r).size == rows[r + min(cut, len(rows) - 1)][1]
