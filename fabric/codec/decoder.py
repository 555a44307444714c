"""The receiving side of the codec: decode and verify a whole batch, then write it.

`PageDecoder.apply` runs in two phases. First it decodes every row into a
staging array and checks it: structure (fabric.wire), frames, deltas against
the current destination pages, every decoded page against its checksum, and
every reference against the candidate page's 128-bit key and checksum. Only then does
it write the pages into memory and update its indexes, in row order. Any typed
error in the first phase leaves memory and decoder state as they were.

A REF the decoder cannot resolve (the content is gone, or was never here) is
not an error: its page is reported in `missing` and not written, so the sender
can send it again in full.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xxhash

from fabric.codec.content_index import CONTENT_INDEX_ENTRIES_MAX, ContentIndex
from fabric.codec.errors import DictionaryError, SequenceError
from fabric.codec.frames import FrameDecompressor, load_dictionary
from fabric.codec.keys import keys_of_rows
from fabric.codec.xbzrle import apply_deltas
from fabric.errors import ConfigError, CorruptPageError
from fabric.memory.hashing import ZERO_PAGE_HASH
from fabric.memory.layout import PAGE_SIZE, PAGES_MAX
from fabric.memory.pagestore import PageStore
from fabric.wire import CONTENT_KEY_BYTES, BatchHeader, Encoding, WireBatch, check_batch

DICTIONARIES_MAX = 64  # the encoder trains one per migration; a peer shipping more is misbehaving
HOLDINGS_PAGES_MAX = 1 << 21  # 8 GiB of other VMs' pages indexed for references
HOLDINGS_READ_PAGES = 1 << 14  # holdings are hashed 64 MiB at a time

_xxh3_64 = xxhash.xxh3_64_intdigest
_xxh3_128 = xxhash.xxh3_128_digest


@dataclass(frozen=True)
class AppliedBatch:
    """What one batch did to the destination memory."""

    header: BatchHeader
    pages: int  # pages written
    raw_bytes: int  # guest bytes written
    missing: np.ndarray  # uint32 page numbers of unresolved REF rows (not written)


class PageDecoder:
    """Decodes the batches of one incoming migration, in order, into `memory`."""

    def __init__(self, *, memory: PageStore, holdings: list[PageStore] | None = None,
                 dictionaries_max: int = 8, index_entries_max: int = CONTENT_INDEX_ENTRIES_MAX,
                 holdings_pages_max: int = HOLDINGS_PAGES_MAX) -> None:
        if not 0 <= dictionaries_max <= DICTIONARIES_MAX:
            raise ConfigError(f"dictionaries_max = {dictionaries_max}; use 0..{DICTIONARIES_MAX}")
        if not 0 <= index_entries_max <= CONTENT_INDEX_ENTRIES_MAX:
            raise ConfigError(f"index_entries_max = {index_entries_max}; use 0..{CONTENT_INDEX_ENTRIES_MAX}")
        if not 0 <= holdings_pages_max <= HOLDINGS_PAGES_MAX:
            raise ConfigError(f"holdings_pages_max = {holdings_pages_max}; use 0..{HOLDINGS_PAGES_MAX}")
        assert memory.pages <= PAGES_MAX
        self.memory = memory
        self.dictionaries_max = dictionaries_max
        self._applied = ContentIndex(pages=memory.pages, entries_max=index_entries_max)
        self._holdings = list(holdings or [])
        self._holdings_index = self._index_holdings(holdings_pages_max)
        self._dictionaries: dict[int, tuple[bytes, FrameDecompressor]] = {}
        self._plain = FrameDecompressor(None)
        self._next_seq = 0
        self._first: BatchHeader | None = None
        self._round = 0
        self.batches = 0
        self.pages_written = 0
        self.pages_missing = 0

    def _index_holdings(self, pages_max: int) -> dict[bytes, tuple[int, int]]:
        """content key -> (holding store, page) over the non-zero pages of the holdings, bounded."""
        index: dict[bytes, tuple[int, int]] = {}
        budget = pages_max
        for s, store in enumerate(self._holdings):
            nonzero = store.nonzero_pages()[:budget]
            budget -= nonzero.size
            for at in range(0, nonzero.size, HOLDINGS_READ_PAGES):
                chunk = nonzero[at:at + HOLDINGS_READ_PAGES]
                keys = keys_of_rows(store.read(chunk), np.arange(chunk.size))
                for page, key in zip(chunk.tolist(), keys, strict=True):
                    index.setdefault(key, (s, page))
        return index

    def holdings_keys(self) -> np.ndarray:
        """The content keys of the holdings ((n, 16) uint8): what the sender may reference."""
        raw = b"".join(self._holdings_index)
        return np.frombuffer(raw, dtype=np.uint8).reshape(-1, CONTENT_KEY_BYTES).copy()

    # -- applying a batch -----------------------------------------------------

    def apply(self, batch: object) -> AppliedBatch:
        """Decode and verify a whole batch, then write it; a typed error writes nothing."""
        wb = check_batch(batch, page_count=self.memory.pages)
        self._check_sequence(wb.header)
        decompressor, new_dictionary = self._frame_decompressor(wb)
        n = wb.rows
        out = np.empty((n, PAGE_SIZE), dtype=np.uint8)
        zero_rows = wb.rows_of(Encoding.ZERO)
        bad = zero_rows[wb.checksums[zero_rows] != np.uint64(ZERO_PAGE_HASH)]
        if bad.size:
            raise CorruptPageError(f"ZERO row of page {int(wb.idx[bad[0]])} carries a non-zero checksum")
        out[zero_rows] = 0
        for r in wb.rows_of(Encoding.RAW).tolist():
            out[r] = wb.payload(r)
        for start, rows in zip(wb.frame_starts.tolist(), wb.frame_rows.tolist(), strict=True):
            decompressor.decompress_into(wb.payload(start), out[start:start + rows])
        delta_rows = wb.rows_of(Encoding.DELTA)
        if delta_rows.size:
            pages = self.memory.read(wb.idx[delta_rows].astype(np.int64))  # a copy: patched below
            apply_deltas(wb.data, wb.payload_starts[delta_rows], wb.payload_ends[delta_rows], pages)
            out[delta_rows] = pages
        decoded = np.flatnonzero((wb.encoding != Encoding.ZERO) & (wb.encoding != Encoding.REF))
        self._verify_checksums(wb, out, decoded)
        missing = self._resolve_references(wb, out, decoded)
        # Everything is decoded and verified: now, and only now, write.
        self._write(wb, out, missing)
        if new_dictionary is not None:
            self._dictionaries[new_dictionary[0]] = new_dictionary[1]
        missing_pages = wb.idx[missing].astype(np.uint32)
        written = n - missing.size
        self.batches += 1
        self.pages_written += written
        self.pages_missing += missing.size
        return AppliedBatch(header=wb.header, pages=written, raw_bytes=written * PAGE_SIZE,
                            missing=missing_pages)

    def _check_sequence(self, h: BatchHeader) -> None:
        """REF and DELTA depend on every earlier batch: only the next batch of this migration may apply."""
        first = self._first
        if first is not None and (h.vm != first.vm or h.epoch != first.epoch):
            raise SequenceError(f"batch for {h.vm}@{h.epoch} sent to the decoder of {first.vm}@{first.epoch}")
        if h.seq != self._next_seq:
            raise SequenceError(f"batch {h.seq} out of order: the decoder expects batch {self._next_seq}")
        if h.round < self._round:
            raise SequenceError(f"batch of round {h.round} after round {self._round} began")

    def _frame_decompressor(self, wb: WireBatch) -> tuple[FrameDecompressor,
                                                          tuple[int, tuple[bytes, FrameDecompressor]] | None]:
        """The decompressor for this batch's frames and a dictionary to keep if the batch succeeds."""
        if wb.dict_id is None:
            return self._plain, None
        known = self._dictionaries.get(wb.dict_id)
        if wb.dictionary is not None:
            if known is not None:
                if known[0] != wb.dictionary:
                    raise DictionaryError(f"dictionary {wb.dict_id} shipped again with different bytes")
                return known[1], None
            if len(self._dictionaries) >= self.dictionaries_max:
                raise DictionaryError(f"dictionary {wb.dict_id} would exceed the decoder's "
                                      f"{self.dictionaries_max} dictionaries")
            d = FrameDecompressor(load_dictionary(wb.dictionary, dict_id=wb.dict_id))
            return d, (wb.dict_id, (wb.dictionary, d))
        if known is None:
            raise DictionaryError(f"frames use dictionary {wb.dict_id}, which was never shipped")
        return known[1], None

    def _verify_checksums(self, wb: WireBatch, out: np.ndarray, rows: np.ndarray) -> None:
        """Every decoded page must match the xxh3-64 it travelled with."""
        flat = memoryview(out.reshape(-1))
        checksums = wb.checksums.tolist()
        bad = [r for r in rows.tolist() if _xxh3_64(flat[r * PAGE_SIZE:(r + 1) * PAGE_SIZE]) != checksums[r]]
        if bad:
            enc = Encoding(int(wb.encoding[bad[0]])).name
            raise CorruptPageError(f"{len(bad)} page(s) fail their checksum after decoding, first page "
                                   f"{int(wb.idx[bad[0]])} ({enc})")

    def _resolve_references(self, wb: WireBatch, out: np.ndarray, decoded: np.ndarray) -> np.ndarray:
        """Fill REF rows from this batch, this migration's pages or the holdings; return unresolved rows."""
        ref_rows = wb.rows_of(Encoding.REF)
        if ref_rows.size == 0:
            return ref_rows
        checksums = wb.checksums.tolist()
        row_of_checksum: dict[int, int] = {}
        for r in decoded.tolist():
            row_of_checksum.setdefault(checksums[r], r)
        missing: list[int] = []
        for r in ref_rows.tolist():
            key = wb.payload(r).tobytes()
            candidate = self._candidate(key, checksums[r], row_of_checksum, out, int(wb.idx[r]))
            if candidate is None:
                missing.append(r)
            else:
                out[r] = candidate
        return np.array(missing, dtype=np.int64)

    def _candidate(self, key: bytes, checksum: int, row_of_checksum: dict[int, int], out: np.ndarray,
                   page: int) -> np.ndarray | None:
        """Content with this key and checksum that this node holds, verified now; None if there is none.

        Candidates: a page decoded earlier in this batch, a page this migration wrote (both found
        by checksum), a page of the holdings (found by key).
        """
        places: list[np.ndarray] = []
        local = row_of_checksum.get(checksum)
        if local is not None:
            places.append(out[local])
        here = self._applied.lookup(checksum)
        if here is not None:
            places.append(self.memory.read(np.array([here]))[0])
        held = self._holdings_index.get(key)
        if held is not None:
            places.append(self._holdings[held[0]].read(np.array([held[1]]))[0])
        for content in places:
            if _xxh3_128(content) != key:
                continue  # a checksum collision, or a page that changed since it was indexed
            if _xxh3_64(content) != checksum:
                raise CorruptPageError(f"REF row of page {page}: the content its key names does not "
                                       f"match its checksum")
            return content
        return None

    def _write(self, wb: WireBatch, out: np.ndarray, missing: np.ndarray) -> None:
        """Write every resolved row, then record in row order what each page now holds."""
        n = wb.rows
        keep = np.ones(n, dtype=bool)
        keep[missing] = False
        rows = np.flatnonzero(keep)
        idx = wb.idx.astype(np.int64)
        if rows.size == n:
            self.memory.apply_received(idx, out, wb.checksums)
        elif rows.size:
            self.memory.apply_received(idx[rows], out[rows], wb.checksums[rows])
        self._applied.record(idx[rows], wb.checksums[rows], wb.encoding[rows] != Encoding.ZERO)
        h = wb.header
        if self._first is None:
            self._first = h
        self._next_seq = h.seq + 1
        self._round = h.round
