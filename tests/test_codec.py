"""The codec round-trips byte-exactly: every encoding, real and adversarial pages, whole sessions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_codec_helpers import Session, adversarial_pages, encodings_of, mutate, profile

from fabric.codec import PROFILES, FrameChoice, PageDecoder, content_keys
from fabric.memory import PAGE_SIZE, PageStore, page_hashes
from fabric.traces import GuestCapture
from fabric.wire import FRAME_PAGES_MAX, BatchHeader, Encoding, build_batch, check_batch

RAW, Z1, Z3 = FrameChoice(level=0), FrameChoice(level=1), FrameChoice(level=3)

# name -> (profile, fixed frame choice or None for the selector, the encoding it must exercise)
FORCED = {
    "zero": (profile(delta=False, dedup=False), RAW, "zero"),
    "ref": (profile(delta=False, dedup=True), RAW, "ref"),
    "delta": (profile(delta=True, dedup=False), RAW, "delta"),
    "zstd-1": (profile(delta=False, dedup=False), Z1, "zstd"),
    "zstd-3": (profile(delta=False, dedup=False, levels=(3,), frame_bytes=1 << 20), Z3, "zstd"),
    "zstd-3+dict": (profile(levels=(3,), dictionary=True, dictionary_sample_pages=256),
                    FrameChoice(level=3, dictionary=True), "zstd"),
    "selector": (profile(levels=(1, 3), explore_fraction=0.25), None, "zstd"),
}


def _real_rounds(path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(page numbers, contents) per round of a capture: round 0 its base, then its deltas."""
    cap = GuestCapture(path)
    base = cap.read_base()
    rounds = [(np.arange(cap.meta.pages, dtype=np.uint32), base)]
    rounds += [cap.read_delta(k) for k in range(1, cap.meta.deltas + 1)]
    return rounds


@pytest.fixture(scope="module")
def kv_rounds(kv_slice: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    return _real_rounds(kv_slice)


@pytest.mark.parametrize("name", sorted(FORCED))
def test_every_encoding_round_trips_real_guest_pages(name: str, kv_rounds) -> None:
    prof, choice, must_use = FORCED[name]
    pages = kv_rounds[0][1].shape[0]
    s = Session.new(pages, prof, frame_choice=choice)
    for k, (idx, contents) in enumerate(kv_rounds):
        if k:
            s.next_round()
        s.source.write_pages(idx, contents)
        send = s.source.nonzero_pages() if k == 0 else idx
        s.send(send, link=1e6 if choice is None else None, batch_pages=512)
        assert s.in_sync(), f"{name}: destination differs after round {k}"
    # A last round as guests also write: real pages copied elsewhere, and pages freed (zeroed).
    s.next_round()
    s.source.write_pages(np.arange(64), s.source.read(np.arange(1000, 1064)))
    s.source.write_pages(np.arange(64, 80), np.zeros((16, PAGE_SIZE), np.uint8))
    s.send(np.arange(80), link=1e6 if choice is None else None)
    assert s.in_sync()
    used: dict[str, int] = {}
    for b in s.sent:
        for e, n in b.pages_by_encoding.items():
            used[e] = used.get(e, 0) + n
    assert used[must_use] > 0, used
    assert s.decoder.memory.full_digest() == s.source.full_digest()


def test_the_real_capture_compresses_and_deltas_pay(kv_rounds) -> None:
    """On real pages the full pipeline beats raw rows by a wide margin, and later rounds use deltas."""
    s = Session.new(kv_rounds[0][1].shape[0], profile(), frame_choice=Z1)
    raw = wire = 0
    for k, (idx, contents) in enumerate(kv_rounds):
        s.round = k
        s.source.write_pages(idx, contents)
        s.send(s.source.nonzero_pages() if k == 0 else idx)
    for e in s.sent:
        raw += e.raw_bytes
        wire += e.wire_bytes
    assert raw / wire > 3
    late = [e for e in s.sent if check_batch(e.batch, page_count=1 << 20).header.round >= 2]
    assert sum(e.pages_by_encoding["delta"] for e in late) > 0.5 * sum(e.raw_bytes for e in late) / PAGE_SIZE


@pytest.mark.parametrize("name", sorted(FORCED))
def test_adversarial_and_random_pages_round_trip_over_rounds(name: str) -> None:
    prof, choice, _ = FORCED[name]
    rng = np.random.default_rng(7)
    adversarial = adversarial_pages(rng)
    n = 160
    s = Session.new(n, prof, frame_choice=choice)
    idx = np.arange(n, dtype=np.uint32)
    start = np.concatenate([np.tile(adversarial, (n // len(adversarial) + 1, 1))[:n - 40],
                            rng.integers(0, 256, (40, PAGE_SIZE), dtype=np.uint8)])
    s.source.write_pages(idx, start)
    s.send(s.source.nonzero_pages(), batch_pages=64)
    assert s.in_sync()
    for rnd in range(1, 4):
        s.next_round()
        chosen = np.sort(rng.choice(n, size=90, replace=False)).astype(np.uint32)
        current = s.source.read(chosen)
        new = np.stack([mutate(rng, current[i], int(rng.integers(0, 5))) for i in range(chosen.size)])
        new[:5] = 0  # pages that become zero
        new[5:10] = current[10:15]  # pages that take another page's content
        s.source.write_pages(chosen, new)
        s.send(chosen, batch_pages=37)
        assert s.in_sync(), f"round {rnd}"


def test_frames_at_their_size_bounds_round_trip() -> None:
    """One frame of exactly FRAME_PAGES_MAX pages, then one page more (two frames), then the minimum."""
    rng = np.random.default_rng(3)
    biggest = FRAME_PAGES_MAX * PAGE_SIZE
    for frame_bytes, count in ((biggest, FRAME_PAGES_MAX), (biggest, FRAME_PAGES_MAX + 1), (64 << 10, 16),
                               (64 << 10, 1)):
        prof = profile(delta=False, dedup=False, frame_bytes=frame_bytes)
        s = Session.new(count + 1, prof, frame_choice=Z1)
        pages = np.zeros((count, PAGE_SIZE), np.uint8)
        pages[:, ::64] = rng.integers(1, 4, (count, PAGE_SIZE // 64))  # compressible, distinct
        s.source.write_pages(np.arange(count), pages)
        s.send(np.arange(count))
        wb = check_batch(s.sent[-1].batch, page_count=count + 1)
        expected = [count] if count <= frame_bytes // PAGE_SIZE else [(count + 1) // 2, count // 2]
        assert sorted(wb.frame_rows.tolist(), reverse=True) == expected
        assert s.in_sync()


def test_a_page_resent_with_its_own_content_is_a_tiny_delta() -> None:
    s = Session.new(8, profile(dedup=False), frame_choice=Z1)
    s.source.write_bytes(0, bytes(range(256)) * 16)
    s.next_round()  # like QEMU, pages enter the delta cache from round 1 on
    s.send([0])
    s.next_round()
    s.source.write_bytes(0, bytes(range(256)) * 16)  # dirty, same bytes
    s.send([0])
    assert encodings_of(s.sent[-1]) == {0: "DELTA"}
    assert s.sent[-1].batch.column("payload")[0].as_py() == b"\x00\x00"  # no runs
    assert s.in_sync()


def test_deltas_follow_a_page_rewritten_over_many_rounds() -> None:
    rng = np.random.default_rng(11)
    s = Session.new(32, profile(dedup=False), frame_choice=Z1)
    s.source.write_pages(np.arange(32), rng.integers(0, 256, (32, PAGE_SIZE), dtype=np.uint8))
    s.send(np.arange(32))
    for _ in range(5):
        s.next_round()
        for p in range(32):
            s.source.write_bytes(p * PAGE_SIZE + int(rng.integers(0, PAGE_SIZE - 16)), rng.bytes(16))
        s.send(np.arange(32))
        assert s.in_sync()
    assert s.sent[-1].pages_by_encoding["delta"] == 32


def test_references_to_earlier_content_and_within_a_batch() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.integers(0, 256, (2, PAGE_SIZE), dtype=np.uint8)
    s = Session.new(16, profile(delta=False), frame_choice=Z1)
    s.source.write_pages(np.array([0, 1, 2]), np.stack([a, b, a]))
    s.send([0, 1, 2])
    assert encodings_of(s.sent[-1])[2] == "REF"  # same content as an earlier row of the batch
    s.next_round()
    s.source.write_pages(np.array([5]), b[None])
    s.send([5])
    assert encodings_of(s.sent[-1]) == {5: "REF"}  # content sent in an earlier batch
    assert s.in_sync()


def test_content_overwritten_at_the_destination_is_not_referenced_again() -> None:
    rng = np.random.default_rng(6)
    a, b = rng.integers(0, 256, (2, PAGE_SIZE), dtype=np.uint8)
    s = Session.new(16, profile(delta=False), frame_choice=Z1)
    s.source.write_pages(np.array([0]), a[None])
    s.send([0])
    s.next_round()
    s.source.write_pages(np.array([0]), b[None])  # page 0 no longer holds a
    s.send([0])
    s.next_round()
    s.source.write_pages(np.array([9]), a[None])
    s.send([9])
    assert encodings_of(s.sent[-1]) == {9: "RAW"}, "the old content of page 0 must not be referenced"
    assert s.in_sync()


def test_a_stale_reference_is_reported_missing_not_applied() -> None:
    """A REF naming content the destination no longer holds: missing, the rest of the batch applied."""
    rng = np.random.default_rng(8)
    a, b, c = rng.integers(0, 256, (3, PAGE_SIZE), dtype=np.uint8)
    s = Session.new(16, profile(delta=False), frame_choice=RAW)
    s.source.write_pages(np.array([0, 1]), np.stack([a, c]))
    s.send([0, 1])
    s.source.write_pages(np.array([0]), b[None])
    s.send([0])  # the destination's page 0 now holds b, not a
    # A sender that (wrongly) still believes a is there: REF rows for a and c.
    refs = np.stack([a, c])
    keys = content_keys(refs)
    stale = build_batch(BatchHeader(vm="vm", epoch=1, round=0, seq=s.seq), np.array([7, 8], np.uint32),
                        np.full(2, Encoding.REF, np.uint8), np.array([0, 16, 32]), keys.reshape(-1),
                        page_hashes(refs))
    applied = s.decoder.apply(stale)
    assert applied.missing.tolist() == [7] and applied.pages == 1
    assert np.array_equal(s.decoder.memory.read(np.array([8]))[0], c)
    assert not s.decoder.memory.read(np.array([7])).any()


def test_holdings_of_other_vms_are_referenced_and_verified() -> None:
    rng = np.random.default_rng(9)
    other = PageStore(32)
    held = rng.integers(0, 256, (4, PAGE_SIZE), dtype=np.uint8)
    other.write_pages(np.array([3, 4, 5, 6]), held)
    s = Session.new(16, profile(delta=False), holdings=[other], frame_choice=Z1)
    s.encoder.add_destination_holdings(s.decoder.holdings_keys())
    s.source.write_pages(np.array([0, 1, 2]), np.stack([held[0], held[2], rng.integers(0, 256, PAGE_SIZE,
                                                                                        dtype=np.uint8)]))
    s.send([0, 1, 2])
    assert [encodings_of(s.sent[-1])[p] for p in (0, 1)] == ["REF", "REF"]
    assert s.in_sync()


def test_unresolved_holding_is_missing_then_resent_in_full() -> None:
    rng = np.random.default_rng(10)
    other = PageStore(8)
    held = rng.integers(0, 256, (2, PAGE_SIZE), dtype=np.uint8)
    other.write_pages(np.array([0, 1]), held)
    s = Session.new(8, profile(delta=True), holdings=[other], frame_choice=Z1)
    s.encoder.add_destination_holdings(content_keys(held))
    s.source.write_pages(np.array([2, 3, 4]), np.stack([held[0], held[1], held[1] ^ 1]))
    other.write_bytes(0, b"\x01")  # the other VM writes its page: held[0] is gone
    before = s.decoder.memory.full_digest()
    applied = s.decoder.apply(s.encode(np.array([2, 3, 4])).batch)
    assert applied.missing.tolist() == [2] and applied.pages == 2
    assert s.decoder.memory.full_digest() != before
    s.encoder.forget(applied.missing)
    s.next_round()
    s.send(applied.missing)
    assert encodings_of(s.sent[-1]) == {2: "RAW"}  # random content: the frame did not shrink
    assert s.in_sync()


def test_content_keys_are_xxh3_128_of_each_page() -> None:
    pages = np.random.default_rng(1).integers(0, 256, (3, PAGE_SIZE), dtype=np.uint8)
    keys = content_keys(pages)
    assert keys.shape == (3, 16) and keys.dtype == np.uint8
    assert [k.tobytes() for k in keys] == [xxhash.xxh3_128_digest(p) for p in pages]


def test_stats_are_json_ready_and_account_for_every_page() -> None:
    rng = np.random.default_rng(2)
    s = Session.new(64, PROFILES["hybrid"])
    s.source.write_pages(np.arange(40), rng.integers(0, 4, (40, PAGE_SIZE), dtype=np.uint8))
    s.send(np.arange(64), link=125e6)
    stats = json.loads(json.dumps(s.encoder.stats()))
    assert sum(v["pages"] for v in stats["encodings"].values()) == 64
    assert stats["encodings"]["zero"]["pages"] == 24
    assert stats["raw_bytes"] == 64 * PAGE_SIZE and stats["wire_bytes"] == s.sent[0].wire_bytes


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), rounds=st.integers(1, 4), batch_pages=st.integers(1, 70),
       name=st.sampled_from(sorted(FORCED)))
def test_any_session_keeps_the_destination_equal_to_the_source(seed: int, rounds: int, batch_pages: int,
                                                                name: str) -> None:
    prof, choice, _ = FORCED[name]
    rng = np.random.default_rng(seed)
    n = 96
    s = Session.new(n, prof, frame_choice=choice)
    pool = np.concatenate([adversarial_pages(rng), rng.integers(0, 3, (8, PAGE_SIZE), dtype=np.uint8)])
    s.source.write_pages(np.arange(n), pool[rng.integers(0, len(pool), n)])
    s.send(s.source.nonzero_pages(), batch_pages=batch_pages)
    for _ in range(rounds):
        s.next_round()
        for _ in range(int(rng.integers(1, 60))):
            p = int(rng.integers(0, n))
            kind = int(rng.integers(0, 4))
            if kind == 0:
                s.source.write_bytes(p * PAGE_SIZE + int(rng.integers(0, PAGE_SIZE)), rng.bytes(1))
            elif kind == 1:
                s.source.write_pages(np.array([p]), s.source.read(np.array([int(rng.integers(0, n))])))
            elif kind == 2:
                s.source.write_pages(np.array([p]), np.zeros((1, PAGE_SIZE), np.uint8))
            else:
                s.source.write_pages(np.array([p]), pool[int(rng.integers(0, len(pool)))][None])
        s.send(s.source.take_dirty(), batch_pages=batch_pages, link=float(rng.choice([1e5, 1e9])))
        assert s.in_sync()


def test_a_decoder_can_start_from_holdings_without_any_batch() -> None:
    store = PageStore(4)
    store.write_bytes(0, b"x" * PAGE_SIZE)
    d = PageDecoder(memory=PageStore(4), holdings=[store])
    assert d.holdings_keys().tolist() == content_keys(store.read(np.array([0]))).tolist()


def test_the_public_names_stay_importable() -> None:
    import fabric.codec
    import fabric.wire

    for module in (fabric.codec, fabric.wire):
        for name in module.__all__:
            assert getattr(module, name) is not None, f"{module.__name__}.{name}"
