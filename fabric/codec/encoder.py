"""The sending side of the codec: a batch of pages in, an Arrow batch of encoded rows out.

Per batch, in this order:
  1. zero pages become ZERO rows (always);
  2. a page whose content the destination holds becomes a REF row (profile.dedup):
     content sent earlier in this migration, an earlier row of this batch, or
     an advertised holding of the destination node;
  3. a page whose last-sent copy is in the delta cache becomes a DELTA row
     when its delta is smaller than what the page would cost otherwise
     (profile.delta), judged by the selector's measured ratio;
  4. the rest goes in zstd frames at the level the selector picks, or raw; a
     frame that does not shrink goes raw. On some batches the selector
     measures another choice on a slice of these pages (see selector.py).
Rows are ordered ZERO, REF, DELTA, frames, RAW. The encoder's state (content
index, delta cache) is updated in that row order, the order the decoder
applies, so both ends agree on what the destination holds.

Content is indexed by its xxh3-64 checksum, which every row carries anyway;
the 16-byte xxh3-128 key a REF travels with is computed only for REF rows
(and for every page while the destination advertises holdings). A checksum
that collides is harmless: the decoder verifies the key and reports the page
missing.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import zstandard

from fabric.codec.content_index import CONTENT_INDEX_ENTRIES_MAX, ContentIndex
from fabric.codec.delta_cache import DeltaCache
from fabric.codec.frames import FrameCompressor, train_dictionary
from fabric.codec.keys import keys_of_rows, split_keys
from fabric.codec.profiles import CodecProfile
from fabric.codec.selector import RAW, FrameChoice, Prediction, Selector
from fabric.codec.xbzrle import DeltaPlan, emit_deltas, plan_deltas
from fabric.errors import ConfigError
from fabric.memory.hashing import ZERO_PAGE_HASH
from fabric.memory.layout import PAGE_SIZE, PAGES_MAX
from fabric.wire import (
    BATCH_PAGES_MAX,
    CONTENT_KEY_BYTES,
    DELTA_PAYLOAD_BYTES_MAX,
    BatchHeader,
    Encoding,
    build_batch,
    wire_bytes,
)

# What one row costs on the wire besides its payload: page u32, encoding u8,
# payload offset i32, round u32, checksum u64.
ROW_OVERHEAD_BYTES = 21
HOLDINGS_KEYS_MAX = 1 << 21  # 8 GiB of other VMs' pages; ~100 bytes of Python objects per key
DELTA_CACHE_BYTES_MAX = 16 << 30  # QEMU's default is 64 MiB; a budget above this is a mistake
# A frame must save at least 1/32 of its bytes, else its pages go raw: decoding
# raw is a copy, and the structural check refuses frames that do not shrink.
FRAME_KEEP_FRACTION = 31 / 32
# The share of a batch's frame pages on which another choice is measured (at
# least one frame): enough for a ratio and a speed, little enough to cost little
# (jobs/bench_codec.py, real captures at 1 Gbit/s, against a fixed zstd-1: a share
# of 1/8 cost 3-5% of the ratio, 1/32 cost 1-1.5%).
PROBE_SHARE = 1 / 32
DICTIONARY_FRAME_PAGES_MIN = 16  # fewer pages than this are not worth training on
DICTIONARY_ID = 1  # one dictionary per migration


@dataclass(frozen=True)
class EncodedBatch:
    """One encoded batch and what it cost."""

    batch: pa.RecordBatch
    raw_bytes: int  # guest bytes the batch carries
    wire_bytes: int  # its size on the wire (Arrow IPC body plus schema metadata)
    encode_s: float  # wall seconds spent encoding it
    pages_by_encoding: dict[str, int]


@dataclass
class _EncodingStats:
    pages: int = 0
    raw_bytes: int = 0
    wire_bytes: int = 0
    seconds: float = 0.0


@dataclass
class _Dictionary:
    dict_id: int
    data: bytes
    shipped: bool = False


@dataclass(frozen=True, eq=False)
class _Layout:
    """Which rows of a batch travel how, when frame pages cost `wire_per_raw`."""

    ref_rows: np.ndarray
    delta_pick: np.ndarray  # bool over the delta candidates
    delta_rows: np.ndarray
    frame_rows: np.ndarray
    fixed_wire_bytes: int  # payload and row overhead of everything but the frame rows


@dataclass(frozen=True, eq=False)
class _Framed:
    """The frame pages of a batch after compression."""

    frames: list[bytes]
    frame_pages: list[int]  # pages in each frame
    frame_dict: list[bool]  # whether each frame uses the dictionary
    frame_rows: np.ndarray  # rows in frames, frame by frame
    raw_rows: np.ndarray  # rows that go raw (the raw choice, or frames that did not shrink)
    raw_parts: list[np.ndarray]  # their contents, part by part (views where rows are consecutive)


def _rows_of(contents: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """contents[rows]: a view when the rows are consecutive (the usual case), else a copy."""
    if rows.size and int(rows[-1]) - int(rows[0]) == rows.size - 1:
        return contents[int(rows[0]):int(rows[-1]) + 1]
    return contents[rows]


class _StageClock:
    """CPU seconds per stage of one encode, accumulated by name."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._last = clock()
        self.seconds: dict[str, float] = {}

    def lap(self, stage: str) -> float:
        """Seconds since the previous lap, added to `stage`."""
        now = self._clock()
        took, self._last = now - self._last, now
        self.seconds[stage] = self.seconds.get(stage, 0.0) + took
        return took


@dataclass
class _Totals:
    batches: int = 0
    raw_bytes: int = 0
    wire_bytes: int = 0
    encode_s: float = 0.0
    by_encoding: dict[str, _EncodingStats] = field(default_factory=dict)
    stage_s: dict[str, float] = field(default_factory=dict)


class PageEncoder:
    """Encodes the batches of one outgoing migration; keeps what the destination holds, bounded."""

    def __init__(self, *, pages: int, profile: CodecProfile, delta_cache_bytes_max: int = 64 << 20,
                 seed: int = 0, index_entries_max: int = CONTENT_INDEX_ENTRIES_MAX,
                 holdings_keys_max: int = HOLDINGS_KEYS_MAX, frame_choice: FrameChoice | None = None,
                 cpu_clock: Callable[[], float] = time.thread_time) -> None:
        if not 1 <= pages <= PAGES_MAX:
            raise ConfigError(f"pages = {pages}; use 1..{PAGES_MAX}")
        if not 0 <= delta_cache_bytes_max <= DELTA_CACHE_BYTES_MAX:
            raise ConfigError(f"delta_cache_bytes_max = {delta_cache_bytes_max}; "
                              f"use 0..{DELTA_CACHE_BYTES_MAX}")
        if not 0 <= index_entries_max <= CONTENT_INDEX_ENTRIES_MAX:
            raise ConfigError(f"index_entries_max = {index_entries_max}; use 0..{CONTENT_INDEX_ENTRIES_MAX}")
        if not 0 <= holdings_keys_max <= HOLDINGS_KEYS_MAX:
            raise ConfigError(f"holdings_keys_max = {holdings_keys_max}; use 0..{HOLDINGS_KEYS_MAX}")
        if frame_choice is not None and frame_choice.level and frame_choice.level not in profile.zstd_levels:
            raise ConfigError(f"frame_choice {frame_choice.name} uses a level the profile lacks")
        self.pages = pages
        self.profile = profile
        # A fixed choice instead of the selector's, for benchmarks and tests that measure one encoding.
        self.frame_choice = frame_choice
        self._cpu = cpu_clock
        self._rng = np.random.default_rng([seed, 0xC0DEC])
        self._selector = Selector(alpha=profile.ewma_alpha, explore_fraction=profile.explore_fraction,
                                  rng=np.random.default_rng([seed, 0x5E1EC7]))
        self._sent = ContentIndex(pages=pages, entries_max=index_entries_max)  # at the destination
        self._holdings: set[bytes] = set()
        self._holdings_keys_max = holdings_keys_max
        self._holdings_dropped = 0
        self._ref_of_page: dict[int, tuple[int, bytes]] = {}  # page -> (checksum, key) while last sent as REF
        self._cache = DeltaCache(pages=pages, bytes_max=delta_cache_bytes_max)
        self._compressors: dict[FrameChoice, FrameCompressor] = {}
        self._dictionary: _Dictionary | None = None
        self._dictionary_note = ""
        self._totals = _Totals()

    # -- inputs ---------------------------------------------------------------

    def set_profile(self, profile: CodecProfile) -> None:
        """Switch to another profile (the link changed mode); state and measurements carry over."""
        self.profile = profile
        self._selector.alpha = profile.ewma_alpha
        self._selector.explore_fraction = profile.explore_fraction

    def add_destination_holdings(self, keys: np.ndarray) -> None:
        """Content keys ((n, 16) uint8) the destination node holds already; beyond the bound, ignored."""
        if keys.ndim != 2 or keys.shape[1] != CONTENT_KEY_BYTES or keys.dtype != np.uint8:
            raise ValueError(f"holdings must be uint8 (n, {CONTENT_KEY_BYTES}), "
                             f"not {keys.dtype} {keys.shape}")
        for key in split_keys(np.ascontiguousarray(keys)):
            if len(self._holdings) < self._holdings_keys_max:
                self._holdings.add(key)
            elif key not in self._holdings:
                self._holdings_dropped += 1

    def forget(self, idx: np.ndarray) -> None:
        """The destination reported these pages missing: never reference or delta them as sent."""
        pages = np.asarray(idx, dtype=np.int64)
        if pages.size and (int(pages.min()) < 0 or int(pages.max()) >= self.pages):
            raise ValueError(f"page numbers out of range 0..{self.pages - 1}")
        self._sent.forget_pages(pages)
        self._cache.drop(pages)
        for page in pages.tolist():
            # The content it was referenced by could not be resolved: do not offer it again.
            ref = self._ref_of_page.pop(page, None)
            if ref is not None:
                self._sent.forget_key(ref[0])
                self._holdings.discard(ref[1])

    # -- encoding -------------------------------------------------------------

    def encode(self, header: BatchHeader, idx: np.ndarray, contents: np.ndarray, hashes: np.ndarray, *,
               link_bytes_per_s: float | None) -> EncodedBatch:
        """Encode one batch of distinct pages; `hashes` must be the xxh3-64 of `contents` (as
        PageStore.snapshot_for_send gives them). link_bytes_per_s None: unknown or unbounded."""
        wall0, cpu0 = time.perf_counter(), self._cpu()
        n = int(idx.size)
        assert 1 <= n <= BATCH_PAGES_MAX, n
        assert contents.shape == (n, PAGE_SIZE) and contents.dtype == np.uint8
        assert hashes.shape == (n,) and hashes.dtype == np.uint64
        pages = idx.astype(np.int64)
        ordered = np.sort(pages)
        assert int(ordered[0]) >= 0 and int(ordered[-1]) < self.pages
        assert bool(np.all(ordered[1:] != ordered[:-1])), "page numbers of a batch must be distinct"
        if link_bytes_per_s is not None and not link_bytes_per_s > 0:
            raise ValueError(f"link_bytes_per_s = {link_bytes_per_s}; use a positive rate or None")
        contents = np.ascontiguousarray(contents)
        clock = _StageClock(self._cpu)

        # Zero pages by their checksum, confirmed on their bytes: no scan of the whole batch.
        zero = hashes == np.uint64(ZERO_PAGE_HASH)
        maybe = np.flatnonzero(zero)
        zero[maybe[contents[maybe].view(np.uint64).any(axis=1)]] = False
        zero_rows = np.flatnonzero(zero)
        nonzero_rows = np.flatnonzero(~zero)
        checksums = hashes.tolist()
        clock.lap("zero")
        ref, keys = self._find_references(contents, nonzero_rows, checksums)
        clock.lap("ref")
        candidates, plan, candidate_contents = self._plan_deltas(pages, contents, nonzero_rows)
        clock.lap("delta")

        choice, probe, layout = self._select(n, nonzero_rows, ref, candidates, plan, self._cpu() - cpu0,
                                             link_bytes_per_s)
        clock.lap("select")
        if plan is not None and layout.delta_rows.size:
            delta_offsets, delta_data = emit_deltas(plan, candidate_contents, layout.delta_pick)
        else:
            delta_offsets, delta_data = np.zeros(1, np.int64), np.empty(0, np.uint8)
        clock.lap("delta")
        framed = self._frame(choice, probe, contents, layout.frame_rows, clock)

        need = [r for r in layout.ref_rows.tolist() if r not in keys]
        keys.update(zip(need, keys_of_rows(contents, np.array(need, dtype=np.int64)), strict=True))
        batch, order = self._assemble(header, pages, hashes, zero_rows, layout, keys, delta_offsets,
                                      delta_data, framed)
        clock.lap("assemble")
        self._update_state(pages, contents, order, zero, hashes, checksums, layout.ref_rows, keys,
                           header.round, candidates, plan, candidate_contents)
        clock.lap("state")
        if self.profile.dictionary and self._dictionary is None and not self._dictionary_note:
            self._train_dictionary(contents, layout.frame_rows)
            clock.lap("dictionary")

        counts = {
            "zero": int(zero_rows.size), "ref": int(layout.ref_rows.size),
            "delta": int(layout.delta_rows.size), "zstd": int(framed.frame_rows.size),
            "raw": int(framed.raw_rows.size),
        }
        assert sum(counts.values()) == n
        wire = {
            "zero": 0, "ref": CONTENT_KEY_BYTES * counts["ref"], "delta": int(delta_data.size),
            "zstd": sum(len(f) for f in framed.frames), "raw": PAGE_SIZE * counts["raw"],
        }
        size = wire_bytes(batch)
        encode_s = time.perf_counter() - wall0
        self._account(counts, wire, clock.seconds, n, size, encode_s)
        return EncodedBatch(batch=batch, raw_bytes=n * PAGE_SIZE, wire_bytes=size, encode_s=encode_s,
                            pages_by_encoding=counts)

    def _find_references(self, contents: np.ndarray, nonzero_rows: np.ndarray,
                         checksums: list[int]) -> tuple[np.ndarray, dict[int, bytes]]:
        """Rows whose content the destination holds before this batch, or gets from an earlier row;
        and the keys computed on the way (row -> key)."""
        ref = np.zeros(len(checksums), dtype=bool)
        keys: dict[int, bytes] = {}
        if not self.profile.dedup:
            return ref, keys
        cs = np.asarray(checksums, dtype=np.uint64)[nonzero_rows]
        # A later row with an earlier row's checksum refers to it.
        _, first = np.unique(cs, return_index=True)
        hit = np.ones(cs.size, dtype=bool)
        hit[first] = False
        hit |= np.array(self._sent.known(cs.tolist()), dtype=bool)
        if self._holdings:
            # Holdings are named by key: every page needs its key to be looked up.
            keys = dict(zip(nonzero_rows.tolist(), keys_of_rows(contents, nonzero_rows), strict=True))
            holdings = self._holdings
            hit |= np.array([keys[r] in holdings for r in nonzero_rows.tolist()], dtype=bool)
        ref[nonzero_rows[hit]] = True
        return ref, keys

    def _plan_deltas(self, pages: np.ndarray, contents: np.ndarray,
                     nonzero_rows: np.ndarray) -> tuple[np.ndarray, DeltaPlan | None, np.ndarray]:
        """Rows with a cached last-sent copy, the delta plan against it, and those rows' contents."""
        none = np.empty(0, dtype=np.int64), None, np.empty((0, PAGE_SIZE), np.uint8)
        if not self.profile.delta or self._cache.slots_max == 0 or nonzero_rows.size == 0:
            return none
        slots = self._cache.slots(pages[nonzero_rows])
        cached = slots >= 0
        rows = nonzero_rows[cached]
        if rows.size == 0:
            return none
        # Later rounds are mostly cached pages: then the batch itself is the array to compare.
        new = contents if rows.size == contents.shape[0] else contents[rows]
        return rows, plan_deltas(new, self._cache.contents(slots[cached])), new

    def _choices(self) -> list[FrameChoice]:
        """Raw, then each level of the profile, then each level with the dictionary once trained."""
        levels = self.profile.zstd_levels
        choices = [RAW, *(FrameChoice(level=lv) for lv in levels)]
        if self.profile.dictionary and self._dictionary is not None:
            choices += [FrameChoice(level=lv, dictionary=True) for lv in levels]
        return choices

    def _select(self, n: int, nonzero_rows: np.ndarray, ref: np.ndarray, candidates: np.ndarray,
                plan: DeltaPlan | None, sunk_s: float,
                link_bytes_per_s: float | None) -> tuple[FrameChoice, FrameChoice | None, _Layout]:
        """The choice for this batch's frame pages, a choice to probe on a slice of them, and the layout."""
        # With frame pages costing a raw page each, deltas are taken most freely: if no page is
        # left for frames even then, there is nothing to choose.
        loosest = self._layout(1.0, n, nonzero_rows, ref, candidates, plan)
        if loosest.frame_rows.size == 0:
            return RAW, None, loosest
        if self.frame_choice is not None:
            fixed = self.frame_choice
            if fixed.dictionary and self._dictionary is None:
                fixed = FrameChoice(level=fixed.level)  # until the dictionary is trained
            estimate = self._selector.estimate(fixed)
            return fixed, None, self._layout(estimate.wire_per_raw if estimate else 1.0, n, nonzero_rows, ref,
                                             candidates, plan)
        predictions = {c: self._predict(c, n, nonzero_rows, ref, candidates, plan, sunk_s)
                       for c in self._choices()}
        default = FrameChoice(level=self.profile.zstd_levels[0])  # before anything is measured
        choice, probe = self._selector.pick(predictions, link_bytes_per_s, default=default)
        estimate = self._selector.estimate(choice)
        layout = self._layout(estimate.wire_per_raw if estimate else 1.0, n, nonzero_rows, ref,
                              candidates, plan)
        return choice, probe, layout

    def _layout(self, wire_per_raw: float, n: int, nonzero_rows: np.ndarray, ref: np.ndarray,
                candidates: np.ndarray, plan: DeltaPlan | None) -> _Layout:
        """Where rows go when frame pages cost `wire_per_raw` wire bytes per raw byte."""
        if plan is not None:
            # A delta must beat what the page costs otherwise: a reference, or its share of a frame.
            threshold = np.where(ref[candidates], CONTENT_KEY_BYTES, PAGE_SIZE * wire_per_raw)
            pick = (plan.sizes < threshold) & (plan.sizes <= DELTA_PAYLOAD_BYTES_MAX)
            delta_rows = candidates[pick]
            delta_bytes = int(plan.sizes[pick].sum())
        else:
            pick, delta_rows, delta_bytes = np.zeros(0, bool), np.empty(0, np.int64), 0
        is_delta = np.zeros(n, dtype=bool)
        is_delta[delta_rows] = True
        ref_rows = np.flatnonzero(ref & ~is_delta)
        rest = np.zeros(n, dtype=bool)
        rest[nonzero_rows] = True
        rest &= ~ref & ~is_delta
        fixed = CONTENT_KEY_BYTES * ref_rows.size + delta_bytes + ROW_OVERHEAD_BYTES * n
        return _Layout(ref_rows=ref_rows, delta_pick=pick, delta_rows=delta_rows,
                       frame_rows=np.flatnonzero(rest), fixed_wire_bytes=fixed)

    def _predict(self, choice: FrameChoice, n: int, nonzero_rows: np.ndarray, ref: np.ndarray,
                 candidates: np.ndarray, plan: DeltaPlan | None, sunk_s: float) -> Prediction | None:
        """The batch's cost under `choice` from its measured estimate; None if never measured."""
        est = self._selector.estimate(choice)
        if est is None:
            return None
        layout = self._layout(est.wire_per_raw, n, nonzero_rows, ref, candidates, plan)
        frame_raw = layout.frame_rows.size * PAGE_SIZE
        return Prediction(raw_bytes=n * PAGE_SIZE,
                          wire_bytes=layout.fixed_wire_bytes + frame_raw * est.wire_per_raw,
                          cpu_s=sunk_s + frame_raw * est.s_per_raw)

    def _frame(self, choice: FrameChoice, probe: FrameChoice | None, contents: np.ndarray,
               rows: np.ndarray, clock: _StageClock) -> _Framed:
        """Encode the frame pages: a slice under `probe` (if any), the rest under `choice`; each part
        is measured and fed to the selector. Frames that do not shrink go raw."""
        parts: list[tuple[FrameChoice, np.ndarray]] = []
        if probe is not None and rows.size:
            cut = min(rows.size, max(self.profile.frame_pages, int(np.ceil(rows.size * PROBE_SHARE))))
            # A consecutive slice at a seeded place, so probes do not always see the batch's start.
            at = int(self._rng.integers(0, rows.size - cut + 1))
            parts.append((probe, rows[at:at + cut]))
            rows = np.concatenate([rows[:at], rows[at + cut:]])
        if rows.size:
            parts.append((choice, rows))
        frames: list[bytes] = []
        frame_dict: list[bool] = []
        framed: list[np.ndarray] = []
        raw: list[tuple[np.ndarray, np.ndarray]] = []  # rows and their contents
        for part_choice, part_rows in parts:
            wire = 0
            if part_choice.level == 0:
                raw.append((part_rows, _rows_of(contents, part_rows)))
                wire = part_rows.size * PAGE_SIZE
            else:
                compressor = self._compressor(part_choice)
                nframes = -(-part_rows.size // self.profile.frame_pages)
                # Even frames (35 + 35 pages, not 64 + 6): a small last frame compresses worse.
                bounds = np.linspace(0, part_rows.size, nframes + 1).round().astype(np.int64).tolist()
                for a, b in itertools.pairwise(bounds):
                    f_rows = part_rows[a:b]
                    f_pages = _rows_of(contents, f_rows)
                    frame = compressor.compress(f_pages)
                    if len(frame) < FRAME_KEEP_FRACTION * f_rows.size * PAGE_SIZE:
                        frames.append(frame)
                        frame_dict.append(part_choice.dictionary)
                        framed.append(f_rows)
                        wire += len(frame)
                    else:
                        raw.append((f_rows, f_pages))
                        wire += f_rows.size * PAGE_SIZE
            secs = clock.lap("zstd" if part_choice.level else "raw")
            self._selector.observe(part_choice, raw_bytes=part_rows.size * PAGE_SIZE, wire_bytes=wire,
                                   cpu_s=secs)
        empty = np.empty(0, np.int64)
        return _Framed(frames=frames, frame_pages=[f.size for f in framed], frame_dict=frame_dict,
                       frame_rows=np.concatenate(framed) if framed else empty,
                       raw_rows=np.concatenate([r for r, _ in raw]) if raw else empty,
                       raw_parts=[c for _, c in raw])

    def _compressor(self, choice: FrameChoice) -> FrameCompressor:
        c = self._compressors.get(choice)
        if c is None:
            data = None
            if choice.dictionary:
                assert self._dictionary is not None
                data = self._dictionary.data
            c = self._compressors[choice] = FrameCompressor(choice.level, data)
        return c

    def _assemble(self, header: BatchHeader, pages: np.ndarray, hashes: np.ndarray, zero_rows: np.ndarray,
                  layout: _Layout, keys: dict[int, bytes], delta_offsets: np.ndarray, delta_data: np.ndarray,
                  framed: _Framed) -> tuple[pa.RecordBatch, np.ndarray]:
        """The Arrow batch, rows ordered ZERO, REF, DELTA, frames, RAW; and that row order."""
        ref_keys = b"".join([keys[r] for r in layout.ref_rows.tolist()])
        nframed = framed.frame_rows.size
        frame_sizes = np.zeros(nframed, dtype=np.int64)
        frame_enc = np.full(nframed, Encoding.ZSTD_CONT, dtype=np.uint8)
        starts = np.cumsum([0, *framed.frame_pages])[:-1].astype(np.int64)
        frame_sizes[starts] = [len(f) for f in framed.frames]
        frame_enc[starts] = Encoding.ZSTD
        raw_rows = framed.raw_rows
        order = np.concatenate([zero_rows, layout.ref_rows, layout.delta_rows, framed.frame_rows, raw_rows])
        runs = ((zero_rows.size, Encoding.ZERO), (layout.ref_rows.size, Encoding.REF),
                (layout.delta_rows.size, Encoding.DELTA))
        encoding = np.concatenate([*(np.full(k, e, np.uint8) for k, e in runs), frame_enc,
                                   np.full(raw_rows.size, Encoding.RAW, np.uint8)])
        sizes = np.concatenate([
            np.zeros(zero_rows.size, np.int64), np.full(layout.ref_rows.size, CONTENT_KEY_BYTES, np.int64),
            np.diff(delta_offsets), frame_sizes, np.full(raw_rows.size, PAGE_SIZE, np.int64)])
        offsets = np.zeros(order.size + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        data = np.empty(int(offsets[-1]), dtype=np.uint8)
        at = 0
        for part in (np.frombuffer(ref_keys, np.uint8), delta_data,
                     *(np.frombuffer(f, np.uint8) for f in framed.frames)):
            data[at:at + part.size] = part
            at += part.size
        for raw_part in framed.raw_parts:
            data[at:at + raw_part.size].reshape(raw_part.shape)[...] = raw_part
            at += raw_part.size
        assert at == data.size
        dict_id = dictionary = None
        if any(framed.frame_dict):
            assert self._dictionary is not None
            dict_id = self._dictionary.dict_id
            if not self._dictionary.shipped:
                dictionary = self._dictionary.data
                self._dictionary.shipped = True
        batch = build_batch(header, pages[order], encoding, offsets, data, hashes[order],
                            dict_id=dict_id, dictionary=dictionary)
        return batch, order

    def _update_state(self, pages: np.ndarray, contents: np.ndarray, order: np.ndarray, zero: np.ndarray,
                      hashes: np.ndarray, checksums: list[int], ref_rows: np.ndarray, keys: dict[int, bytes],
                      round_index: int, candidates: np.ndarray, plan: DeltaPlan | None,
                      candidate_contents: np.ndarray) -> None:
        """Record, in row order, what the destination holds once it applies this batch."""
        ordered = pages[order]
        self._sent.record(ordered, hashes[order], ~zero[order])
        ordered_pages = ordered.tolist()
        # Pages last sent as REF: remember what they referenced until they are sent otherwise (see forget).
        refs = self._ref_of_page
        ref_pages = pages[ref_rows].tolist()
        if refs:
            for page in set(ordered_pages).difference(ref_pages).intersection(refs):
                del refs[page]
        for r, page in zip(ref_rows.tolist(), ref_pages, strict=True):
            refs[page] = (checksums[r], keys[r])
        # Like QEMU, cache from round 1 on: a page sent again after round 0 is one the guest
        # writes, likely to be sent again; caching all of round 0 would cost a copy of the
        # whole memory for pages mostly never re-sent. Without deltas, only drop stale copies.
        sent = order[~zero[order]]
        if round_index >= 1 and self.profile.delta:
            current = None
            if plan is not None:
                # Cached pages were compared with their copy already: patch in just what changed.
                self._cache.patch(self._cache.slots(pages[candidates]), plan, candidate_contents)
                patched = np.zeros(zero.size, dtype=bool)
                patched[candidates] = True
                current = patched[sent]
            self._cache.put(pages[sent], contents, sent, current)
        else:
            self._cache.drop(pages[sent])
        self._cache.drop(pages[zero])

    def _train_dictionary(self, contents: np.ndarray, frame_rows: np.ndarray) -> None:
        """Train the dictionary on a seeded sample of this batch's frame pages, once per encoder."""
        if frame_rows.size < DICTIONARY_FRAME_PAGES_MIN:
            return
        take = min(frame_rows.size, self.profile.dictionary_sample_pages)
        sample = np.sort(self._rng.choice(frame_rows, size=take, replace=False))
        try:
            data = train_dictionary(contents[sample], dict_bytes=self.profile.dictionary_bytes,
                                    dict_id=DICTIONARY_ID, level=max(self.profile.zstd_levels))
        except zstandard.ZstdError as e:
            self._dictionary_note = f"training failed: {e}"  # frames simply go without one
            return
        self._dictionary = _Dictionary(dict_id=DICTIONARY_ID, data=data)
        self._dictionary_note = f"trained on {take} pages, {len(data)} bytes"

    # -- reporting ------------------------------------------------------------

    def _account(self, counts: dict[str, int], wire: dict[str, int], seconds: dict[str, float], n: int,
                 size: int, encode_s: float) -> None:
        t = self._totals
        t.batches += 1
        t.raw_bytes += n * PAGE_SIZE
        t.wire_bytes += size
        t.encode_s += encode_s
        for name, pages in counts.items():
            s = t.by_encoding.setdefault(name, _EncodingStats())
            s.pages += pages
            s.raw_bytes += pages * PAGE_SIZE
            s.wire_bytes += wire[name] + ROW_OVERHEAD_BYTES * pages
            s.seconds += seconds.get(name, 0.0)
        for stage, secs in seconds.items():
            t.stage_s[stage] = t.stage_s.get(stage, 0.0) + secs

    def stats(self) -> dict[str, Any]:
        """Per encoding: pages, raw bytes, wire bytes (payload + row overhead), CPU seconds of its
        stage; CPU seconds per stage; the selector's picks, probes and estimates; totals. JSON-ready."""
        t = self._totals
        sel = self._selector
        est = {c.name: {"ratio": e.ratio, "mb_per_s": e.bytes_per_s / 1e6, "samples": e.samples}
               for c, e in sel.estimates.items()}
        return {
            "profile": self.profile.name,
            "batches": t.batches, "raw_bytes": t.raw_bytes, "wire_bytes": t.wire_bytes,
            "encode_s": t.encode_s,
            "encodings": {k: vars(v).copy() for k, v in t.by_encoding.items()},
            "stage_cpu_s": dict(t.stage_s),
            "selector": {"picks": dict(sel.picks), "probes": dict(sel.probes), "estimates": est},
            "delta_cache": {"pages": self._cache.pages_cached, "bytes": self._cache.bytes_used,
                            "bytes_max": self._cache.bytes_max},
            "content_index_entries": len(self._sent),
            "holdings": {"keys": len(self._holdings), "dropped": self._holdings_dropped},
            "dictionary": self._dictionary_note or None,
        }
