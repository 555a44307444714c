"""`PageStore`: guest memory as 4 KiB pages with dirty tracking, generations and a digest."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from fabric.errors import ConfigError
from fabric.memory.hashing import ZERO_PAGE_HASH, memory_digest, page_hashes
from fabric.memory.layout import PAGE_SIZE, PAGES_MAX


class PageStore:
    """Guest memory of one VM.

    Every write path, under one lock, writes the content, then sets the page's
    dirty bit, bumps its generation and marks its cached hash stale. Readers
    that clear the dirty bitmap (`take_dirty`) therefore never lose an update:
    a write that lands after the clear sets the bit again.

    The digest is incremental: a per-page xxh3 array, refreshed only for pages
    written since it was last computed, then hashed as a whole.
    """

    def __init__(self, pages: int) -> None:
        if not 1 <= pages <= PAGES_MAX:
            raise ConfigError(f"a PageStore holds 1..{PAGES_MAX} pages, not {pages}")
        self._data = np.zeros((pages, PAGE_SIZE), dtype=np.uint8)
        self._dirty = np.zeros(pages, dtype=bool)
        self._generation = np.zeros(pages, dtype=np.uint64)
        self._hash = np.full(pages, ZERO_PAGE_HASH, dtype=np.uint64)
        self._hash_stale = np.zeros(pages, dtype=bool)
        self._lock = threading.Lock()
        # Post-copy: pages still at the source. A write to one first faults it in.
        self._missing: np.ndarray | None = None
        self._missing_count = 0
        self._present = threading.Condition(self._lock)
        self._fault_handler: Callable[[np.ndarray], None] | None = None
        # Post-copy: each page's hash as the source sent it (guest writes do not touch it).
        self._received_hash: np.ndarray | None = None

    # -- geometry -------------------------------------------------------------

    @property
    def pages(self) -> int:
        """Number of pages."""
        return self._data.shape[0]

    @property
    def nbytes(self) -> int:
        """Size of the memory in bytes."""
        return self._data.nbytes

    # -- write paths (all set dirty, generation and hash staleness) -----------

    def write_pages(self, idx: np.ndarray, contents: np.ndarray) -> None:
        """Overwrite whole pages `idx` with `contents` (shape (len(idx), PAGE_SIZE))."""
        idx = self._check_idx(idx)
        if contents.shape != (idx.size, PAGE_SIZE) or contents.dtype != np.uint8:
            raise ValueError(f"contents must be uint8 ({idx.size}, {PAGE_SIZE}), "
                             f"not {contents.dtype} {contents.shape}")
        self._fault_in(idx)
        with self._lock:
            self._data[idx] = contents
            self._mark_written(idx)

    def write_records(self, idx: np.ndarray, offsets: np.ndarray, records: np.ndarray) -> None:
        """Write record `records[k]` at byte `offsets[k]` of page `idx[k]` (same-size records)."""
        idx = self._check_idx(idx)
        n, size = records.shape
        if offsets.shape != (n,) or idx.size != n or records.dtype != np.uint8:
            raise ValueError("idx, offsets and records must agree in length; records uint8")
        if n and (int(offsets.min()) < 0 or int(offsets.max()) + size > PAGE_SIZE):
            raise ValueError("a record would cross its page boundary")
        flat = idx.astype(np.int64) * PAGE_SIZE + offsets.astype(np.int64)
        positions = flat[:, None] + np.arange(size, dtype=np.int64)[None, :]
        self._fault_in(idx)
        with self._lock:
            self._data.reshape(-1)[positions] = records
            self._mark_written(idx)

    def write_bytes(self, address: int, data: bytes) -> None:
        """Write `data` at guest-physical byte `address` (may span pages)."""
        end = address + len(data)
        if address < 0 or end > self.nbytes:
            raise ValueError(f"write [{address}, {end}) outside memory of {self.nbytes} bytes")
        if not data:
            return
        touched = np.arange(address // PAGE_SIZE, (end - 1) // PAGE_SIZE + 1)
        self._fault_in(touched)
        with self._lock:
            self._data.reshape(-1)[address:end] = np.frombuffer(data, dtype=np.uint8)
            self._mark_written(touched)

    def load_image(self, image: np.ndarray) -> None:
        """Replace the whole memory with `image` (a boot image); every page becomes dirty."""
        if image.shape != self._data.shape or image.dtype != np.uint8:
            raise ValueError(f"image must be uint8 {self._data.shape}, not {image.dtype} {image.shape}")
        with self._lock:
            self._data[...] = image
            self._dirty[:] = True
            self._generation += np.uint64(1)
            self._hash_stale[:] = True

    def _mark_written(self, idx: np.ndarray) -> None:
        # Caller holds the lock and has already written the content.
        self._dirty[idx] = True
        np.add.at(self._generation, idx, np.uint64(1))
        self._hash_stale[idx] = True

    # -- the receiving side of a migration ------------------------------------

    def apply_received(self, idx: np.ndarray, contents: np.ndarray, hashes: np.ndarray) -> None:
        """Write pages that arrived with verified hashes; keeps those hashes (no rehash).

        In post-copy only pages still missing are written: a page that is already
        here may have been written by the guest since, and that write is newer.
        """
        idx = self._check_idx(idx)
        with self._lock:
            if self._missing is not None:
                take = self._missing[idx]
                idx, contents, hashes = idx[take], contents[take], hashes[take]
                self._missing[idx] = False
                self._missing_count -= int(idx.size)
                assert self._received_hash is not None
                self._received_hash[idx] = hashes
            self._data[idx] = contents
            self._generation[idx] += np.uint64(1)
            self._hash[idx] = hashes
            self._hash_stale[idx] = False
            if self._missing is not None and idx.size:
                self._present.notify_all()

    # -- post-copy ----------------------------------------------------------------

    def begin_postcopy(self, missing: np.ndarray, fault_handler: Callable[[np.ndarray], None]) -> None:
        """Pages `missing` are still at the source; `fault_handler(pages)` must bring them before a write.

        The handler runs on the writing thread, outside the lock, and returns
        once the pages are present (or raises, and the write does not happen).
        """
        missing = self._check_idx(missing)
        self.digest()  # every cached hash fresh: they are the received image of the pages here
        with self._lock:
            self._missing = np.zeros(self.pages, dtype=bool)
            self._missing[missing] = True
            self._missing_count = int(np.count_nonzero(self._missing))
            self._received_hash = self._hash.copy()
            self._fault_handler = fault_handler

    def end_postcopy(self) -> None:
        """Every page is here; writes no longer fault."""
        with self._lock:
            assert self._missing_count == 0, "post-copy ended with pages missing"
            self._missing = None
            self._fault_handler = None

    @property
    def missing_count(self) -> int:
        """Pages still at the source (0 outside post-copy)."""
        return self._missing_count

    def missing_of(self, idx: np.ndarray) -> np.ndarray:
        """Those of pages `idx` still missing."""
        with self._lock:
            if self._missing is None:
                return idx[:0]
            return idx[self._missing[idx]]

    def wait_present(self, idx: np.ndarray, timeout_s: float) -> bool:
        """Block until pages `idx` are present; False if `timeout_s` passed first."""
        with self._present:
            return self._present.wait_for(
                lambda: self._missing is None or not self._missing[idx].any(), timeout_s)

    def received_digest(self) -> str:
        """Digest of the memory as the source sent it (post-copy), whatever the guest wrote since."""
        with self._lock:
            assert self._received_hash is not None, "not in post-copy"
            return memory_digest(self._received_hash.copy())

    def _fault_in(self, idx: np.ndarray) -> None:
        # Read without the lock: missing bits only ever clear, so a stale True just
        # sends the page to the handler, which finds it present.
        missing = self._missing
        if missing is None or self._missing_count == 0:
            return
        miss = np.unique(idx[missing[idx]])
        if miss.size:
            handler = self._fault_handler
            assert handler is not None
            handler(miss)

    # -- readers --------------------------------------------------------------

    def read(self, idx: np.ndarray) -> np.ndarray:
        """A copy of pages `idx`."""
        idx = self._check_idx(idx)
        with self._lock:
            return self._data[idx]

    def view(self) -> np.ndarray:
        """A read-only view of the whole memory (for checks; not a snapshot)."""
        v = self._data.view()
        v.flags.writeable = False
        return v

    def take_dirty(self) -> np.ndarray:
        """Page numbers dirtied since the last call, in order; clears the bitmap atomically."""
        with self._lock:
            idx = np.flatnonzero(self._dirty).astype(np.uint32)
            self._dirty[idx] = False
        return idx

    def dirty_count(self) -> int:
        """Number of pages dirtied since the last `take_dirty` (does not clear)."""
        return int(np.count_nonzero(self._dirty))

    def nonzero_pages(self) -> np.ndarray:
        """Page numbers whose content is not all zero; caches the hash of the zero ones.

        Scans without the lock; a page written during the scan keeps its stale
        hash (its generation moved), so the cache never claims a stale zero.
        """
        with self._lock:
            generation = self._generation.copy()
        zero = ~self._data.view(np.uint64).any(axis=1)
        with self._lock:
            settled = zero & (self._generation == generation)
            self._hash[settled] = ZERO_PAGE_HASH
            self._hash_stale[settled] = False
        return np.flatnonzero(~zero).astype(np.uint32)

    def generations(self, idx: np.ndarray) -> np.ndarray:
        """Write counters of pages `idx`."""
        return self._generation[self._check_idx(idx)].copy()

    def snapshot_for_send(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Copies of pages `idx` and their xxh3 hashes, consistent page by page."""
        return self._copy_and_hash(self._check_idx(idx))

    def digest(self) -> str:
        """Digest of the whole memory; rehashes only pages written since it was last computed."""
        with self._lock:
            stale = np.flatnonzero(self._hash_stale)
        _, hashes = self._copy_and_hash(stale)
        with self._lock:
            current = self._hash.copy()
        # A page written while we hashed it keeps its fresh hash out of the cache,
        # but this digest still describes the copy we hashed.
        current[stale] = hashes
        return memory_digest(current)

    def _copy_and_hash(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Copy pages under the lock (none torn), hash them outside it, and cache the
        hashes of pages not written since the copy."""
        with self._lock:
            contents = self._data[idx]
            generation = self._generation[idx]
        hashes = page_hashes(contents)
        with self._lock:
            unchanged = self._generation[idx] == generation
            keep = idx[unchanged]
            self._hash[keep] = hashes[unchanged]
            self._hash_stale[keep] = False
        return contents, hashes

    def full_digest(self) -> str:
        """Digest recomputed from every page, ignoring the cache (slow; for verification)."""
        with self._lock:
            data = self._data.copy()
        return memory_digest(page_hashes(data))

    def _check_idx(self, idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError("page numbers must be a 1-d integer array")
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= self.pages):
            raise IndexError(f"page number out of range 0..{self.pages - 1}")
        return idx
