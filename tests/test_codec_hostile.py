"""Hostile or corrupt batches raise typed errors and leave the destination memory untouched."""

from __future__ import annotations

import numpy as np
import pytest
import xxhash
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_codec_helpers import Session, profile, rebuild

from fabric.codec import DeltaError, DictionaryError, FrameChoice, FrameError, SequenceError
from fabric.errors import CorruptPageError, MalformedBatchError
from fabric.memory import PAGE_SIZE, PageStore
from fabric.wire import META_DICT, META_DICT_ID, Encoding, check_batch
from fabric.wire.batch import BatchHeader

PAGES = 64
Z1 = FrameChoice(level=1)


def _compressible(rng: np.random.Generator, n: int) -> np.ndarray:
    pages = np.zeros((n, PAGE_SIZE), np.uint8)
    pages[:, ::16] = rng.integers(1, 9, (n, PAGE_SIZE // 16))
    return pages


@pytest.fixture
def session() -> Session:
    """A session with pages 0..7 applied, the next batch (pages 8..23) not yet sent."""
    rng = np.random.default_rng(4)
    s = Session.new(PAGES, profile(frame_bytes=64 << 10), frame_choice=Z1)
    s.source.write_pages(np.arange(32), _compressible(rng, 32))
    s.send(np.arange(8))
    return s


def _rows(batch, encoding: Encoding) -> list[int]:
    return check_batch(batch, page_count=PAGES).rows_of(encoding).tolist()


def _same(s: Session, idx: np.ndarray) -> bool:
    """The destination holds the source's pages `idx`."""
    return bool(np.array_equal(s.decoder.memory.read(idx), s.source.read(idx)))


def _rejected(s: Session, batch, error: type[Exception], match: str) -> None:
    """The batch raises `error` and the destination memory and decoder are as before."""
    before = s.decoder.memory.full_digest()
    with pytest.raises(error, match=match):
        s.decoder.apply(batch)
    assert s.decoder.memory.full_digest() == before
    assert s.decoder.memory.digest() == before


def _frame_batch(s: Session) -> tuple[object, int]:
    batch = s.encode(np.arange(8, 24)).batch
    starts = _rows(batch, Encoding.ZSTD)
    assert starts
    return batch, starts[0]


def test_the_untouched_batch_applies(session: Session) -> None:
    batch, _ = _frame_batch(session)
    session.decoder.apply(batch)
    assert _same(session, np.arange(24))


def test_truncated_frame(session: Session) -> None:
    batch, r = _frame_batch(session)
    frame = check_batch(batch, page_count=PAGES).payload(r).tobytes()
    _rejected(session, rebuild(batch, payloads={r: frame[:-7]}), FrameError, "decompress")


def test_frame_with_trailing_bytes(session: Session) -> None:
    batch, r = _frame_batch(session)
    frame = check_batch(batch, page_count=PAGES).payload(r).tobytes()
    _rejected(session, rebuild(batch, payloads={r: frame + b"\0\0\0"}), FrameError, "unused data|decompress")


def test_frame_of_the_wrong_decompressed_size(session: Session) -> None:
    batch, r = _frame_batch(session)
    wb = check_batch(batch, page_count=PAGES)
    rows = int(wb.frame_rows[list(wb.frame_starts).index(r)])
    short = zstandard.ZstdCompressor(level=1).compress(bytes((rows - 1) * PAGE_SIZE))
    _rejected(session, rebuild(batch, payloads={r: short}), FrameError, "claims")


def test_zstd_bomb_is_refused_before_decompressing(session: Session) -> None:
    batch, r = _frame_batch(session)
    bomb = zstandard.ZstdCompressor(level=3).compress(bytes(64 << 20))  # 64 MiB of zeros in a few KiB
    assert len(bomb) < 16 * PAGE_SIZE
    _rejected(session, rebuild(batch, payloads={r: bomb}), FrameError, "claims 67108864 bytes")


def test_frame_without_a_content_size_is_refused(session: Session) -> None:
    batch, r = _frame_batch(session)
    wb = check_batch(batch, page_count=PAGES)
    rows = int(wb.frame_rows[list(wb.frame_starts).index(r)])
    unsized = zstandard.ZstdCompressor(level=1, write_content_size=False).compressobj()
    frame = unsized.compress(bytes(rows * PAGE_SIZE)) + unsized.flush()
    _rejected(session, rebuild(batch, payloads={r: frame}), FrameError, "no size")


def test_cont_without_a_start(session: Session) -> None:
    batch, r = _frame_batch(session)
    _rejected(session, rebuild(batch, encodings={r: Encoding.ZSTD_CONT}, payloads={r: b""}),
              MalformedBatchError, "does not follow")


def test_ref_with_a_wrong_key_length(session: Session) -> None:
    session.source.write_pages(np.array([30]), session.source.read(np.array([0])))
    batch = session.encode(np.array([30]))
    (r,) = _rows(batch.batch, Encoding.REF)
    _rejected(session, rebuild(batch.batch, payloads={r: b"k" * 15}), MalformedBatchError, "REF payload")


def test_ref_whose_key_and_checksum_disagree_is_never_applied(session: Session) -> None:
    session.source.write_pages(np.array([30]), session.source.read(np.array([0])))
    batch = session.encode(np.array([30])).batch
    (r,) = _rows(batch, Encoding.REF)
    other = session.source.read(np.array([1]))[0]
    # The key of page 0's content with the checksum of page 1's: no candidate passes both.
    before = session.decoder.memory.full_digest()
    applied = session.decoder.apply(rebuild(batch, checksums={r: xxhash.xxh3_64_intdigest(other)}))
    assert applied.missing.tolist() == [30] and applied.pages == 0
    assert session.decoder.memory.full_digest() == before


def test_holding_named_by_key_with_a_contradicting_checksum_is_corrupt() -> None:
    rng = np.random.default_rng(12)
    other = PageStore(4)
    other.write_pages(np.array([1]), _compressible(rng, 1))
    s = Session.new(8, profile(delta=False), holdings=[other], frame_choice=Z1)
    s.encoder.add_destination_holdings(s.decoder.holdings_keys())
    s.source.write_pages(np.array([2]), other.read(np.array([1])))
    batch = s.encode(np.array([2])).batch
    (r,) = _rows(batch, Encoding.REF)
    _rejected(s, rebuild(batch, checksums={r: 12345}), CorruptPageError, "does not match its checksum")


def _delta_batch(s: Session) -> tuple[object, int]:
    s.next_round()
    s.send(np.arange(8, 12))  # round 1: into the delta cache
    s.next_round()
    s.source.write_bytes(9 * PAGE_SIZE + 100, b"hello")
    batch = s.encode(np.array([9])).batch
    (r,) = _rows(batch, Encoding.DELTA)
    return batch, r


@pytest.mark.parametrize(("payload", "match"), [
    (b"\x01\x00" + bytes([0x10, 0x10]) + b"x" * 15, "account"),  # data shorter than the run says
    (b"\x01\x00" + bytes([0xF0, 0x1F, 0x20]) + b"x" * 32, "overruns its page"),  # 4080 + 32 > 4096
    (b"\x01\x00" + bytes([0x80, 0x80, 0x01, 0x04]) + b"x" * 4, "more than 2 bytes"),
    (b"\x02\x00" + bytes([0x00, 0x01]) + b"x", "ends inside"),  # two runs announced, one given
    (b"\xff\x7f" + b"\x00" * 8, "claims"),  # 32767 runs
    (b"\x01\x00" + bytes([0x00, 0x00]), "changes no byte"),
    (b"\x01\x00" + bytes([0x81, 0x20, 0x01]) + b"x", "exceeds the page"),  # unchanged = 4097
])
def test_delta_that_does_not_parse_or_overruns(session: Session, payload: bytes, match: str) -> None:
    batch, r = _delta_batch(session)
    _rejected(session, rebuild(batch, payloads={r: payload}), DeltaError, match)


def test_delta_against_the_wrong_base_fails_its_checksum(session: Session) -> None:
    batch, r = _delta_batch(session)
    _rejected(session, rebuild(batch, payloads={r: b"\x01\x00" + bytes([0x00, 0x01]) + b"\x7f"}),
              CorruptPageError, "fail their checksum")


def test_unknown_dictionary_id(session: Session) -> None:
    batch, _ = _frame_batch(session)
    _rejected(session, rebuild(batch, meta={META_DICT_ID: b"7"}), DictionaryError, "never shipped")


def test_bad_checksum_after_decoding_a_frame(session: Session) -> None:
    batch, r = _frame_batch(session)
    wb = check_batch(batch, page_count=PAGES)
    _rejected(session, rebuild(batch, checksums={r + 1: int(wb.checksums[r + 1]) ^ 1}), CorruptPageError,
              "fail their checksum")


def test_zero_row_with_a_nonzero_checksum(session: Session) -> None:
    session.source.write_pages(np.array([40]), np.zeros((1, PAGE_SIZE), np.uint8))
    batch = session.encode(np.array([40, 41])).batch
    (r,) = _rows(batch, Encoding.ZERO)[:1]
    _rejected(session, rebuild(batch, checksums={r: 1}), CorruptPageError, "non-zero checksum")


def test_batches_out_of_order_or_from_another_migration(session: Session) -> None:
    batch, _ = _frame_batch(session)
    wb = check_batch(batch, page_count=PAGES)
    for bad, match in ((BatchHeader(vm="vm", epoch=1, round=0, seq=wb.header.seq + 1), "out of order"),
                       (BatchHeader(vm="vm", epoch=1, round=0, seq=0), "out of order"),
                       (BatchHeader(vm="vm", epoch=2, round=0, seq=wb.header.seq), "sent to the decoder"),
                       (BatchHeader(vm="xx", epoch=1, round=0, seq=wb.header.seq), "sent to the decoder")):
        meta = {**batch.schema.metadata, **bad.to_metadata()}
        _rejected(session, batch.replace_schema_metadata(meta), SequenceError, match)
    session.decoder.apply(batch)
    assert _same(session, np.arange(24))


def test_dictionary_redefined_or_beyond_the_bound() -> None:
    rng = np.random.default_rng(2)
    prof = profile(levels=(3,), dictionary=True, dictionary_sample_pages=16, dictionary_bytes=4096)
    s = Session.new(PAGES, prof, frame_choice=FrameChoice(level=3, dictionary=True))
    s.decoder.dictionaries_max = 1
    s.source.write_pages(np.arange(PAGES), _compressible(rng, PAGES))
    s.send(np.arange(20))  # trains the dictionary
    batch = s.encode(np.arange(20, 40)).batch  # ships it
    shipped = batch.schema.metadata[META_DICT]
    other = zstandard.train_dictionary(2048, [bytes(p) for p in _compressible(rng, 64)], dict_id=2).as_bytes()
    _rejected(s, rebuild(batch, meta={META_DICT: other}), DictionaryError, "has id 2")
    s.decoder.apply(batch)
    again = s.encode(np.arange(40, 50)).batch
    _rejected(s, rebuild(again, meta={META_DICT: shipped[:-1] + bytes([shipped[-1] ^ 1])}), DictionaryError,
              "different bytes")
    _rejected(s, rebuild(again, meta={META_DICT_ID: b"2", META_DICT: other}), DictionaryError,
              "exceed the decoder's 1")
    s.decoder.apply(again)
    assert _same(s, np.arange(50))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_corruption_is_caught_or_harmless(data: st.DataObject) -> None:
    """Flip bytes in or truncate any payload of a mixed batch (ZERO, REF, DELTA, ZSTD, RAW): either a
    typed error and nothing written, or the pages decode exactly (unresolved REFs left as they were)."""
    rng = np.random.default_rng(4)
    s = Session.new(PAGES, profile(frame_bytes=64 << 10), frame_choice=Z1)
    s.source.write_pages(np.arange(32), _compressible(rng, 32))
    s.source.write_pages(np.arange(48, 64), rng.integers(0, 256, (16, PAGE_SIZE), dtype=np.uint8))
    s.send(np.arange(8))
    s.next_round()
    s.send(np.arange(8, 12))
    s.next_round()
    s.source.write_pages(np.array([40, 41]), s.source.read(np.array([0, 1])))
    s.source.write_pages(np.array([42]), np.zeros((1, PAGE_SIZE), np.uint8))
    s.source.write_bytes(10 * PAGE_SIZE + 7, b"xyz")
    idx = np.array([10, 11, *range(48, 64), 40, 41, 42, *range(12, 28)])  # noise: a frame that goes raw
    batch = s.encode(idx).batch
    wb = check_batch(batch, page_count=PAGES)
    assert set(wb.encoding.tolist()) >= {Encoding.ZERO, Encoding.REF, Encoding.DELTA, Encoding.ZSTD,
                                         Encoding.RAW}
    row = data.draw(st.integers(0, wb.rows - 1))
    payload = bytearray(wb.payload(row).tobytes())
    if payload and data.draw(st.booleans()):
        for _ in range(data.draw(st.integers(1, 3))):
            payload[data.draw(st.integers(0, len(payload) - 1))] ^= data.draw(st.integers(1, 255))
    else:
        payload = payload[:data.draw(st.integers(0, len(payload)))]
    before = s.decoder.memory.view().copy()
    try:
        applied = s.decoder.apply(rebuild(batch, payloads={row: bytes(payload)}))
    except MalformedBatchError:
        assert np.array_equal(s.decoder.memory.view(), before)
        return
    missing = set(applied.missing.tolist())
    for p in idx.tolist():
        want = before[p] if p in missing else s.source.read(np.array([p]))[0]
        assert np.array_equal(s.decoder.memory.read(np.array([p]))[0], want), p
