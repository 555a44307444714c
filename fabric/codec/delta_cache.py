"""The sender's XBZRLE cache: the content last sent of recently sent pages, LRU, bounded in bytes.

A slab of fixed 4 KiB slots, so "bytes" and "pages" bound the same thing and
nothing is allocated per page. What a slot holds is exactly what the
destination holds for that page; a page whose destination copy is unknown
(zero, forgotten) has no slot.
"""

from __future__ import annotations

import numpy as np

from fabric.codec.xbzrle import DeltaPlan, patch_pages
from fabric.memory.layout import PAGE_SIZE


class DeltaCache:
    """Last-sent content per page for up to `bytes_max` bytes, evicting the least recently sent."""

    def __init__(self, *, pages: int, bytes_max: int) -> None:
        assert pages >= 1 and bytes_max >= 0
        self.bytes_max = bytes_max
        self.slots_max = min(bytes_max // PAGE_SIZE, pages)
        self._slot_of_page = np.full(pages, -1, dtype=np.int64)
        self._page_of_slot = np.full(self.slots_max, -1, dtype=np.int64)
        self._last_sent = np.zeros(self.slots_max, dtype=np.int64)  # LRU clock per slot
        self._clock = 0
        # np.empty reserves address space; the OS backs a slot only once it is written.
        self._data = np.empty((self.slots_max, PAGE_SIZE), dtype=np.uint8)
        assert self._data.nbytes <= bytes_max

    @property
    def pages_cached(self) -> int:
        """Pages with a slot."""
        return int(np.count_nonzero(self._page_of_slot >= 0))

    @property
    def bytes_used(self) -> int:
        """Bytes of page content held."""
        return self.pages_cached * PAGE_SIZE

    def slots(self, idx: np.ndarray) -> np.ndarray:
        """Slot of each page, -1 where the page is not cached."""
        return self._slot_of_page[idx]

    def contents(self, slots: np.ndarray) -> np.ndarray:
        """A copy of what the given (valid) slots hold."""
        assert slots.size == 0 or int(slots.min()) >= 0
        return self._data[slots]

    def patch(self, slots: np.ndarray, plan: DeltaPlan, new: np.ndarray) -> None:
        """Bring the given slots to `new` ((k, 4096), one page per slot) by copying only the bytes
        `plan` says changed; the pages must then be `put` with current=True to count as sent."""
        assert slots.size == 0 or int(slots.min()) >= 0
        patch_pages(plan, new, self._data, slots)

    def put(self, idx: np.ndarray, contents: np.ndarray, rows: np.ndarray,
            current: np.ndarray | None = None) -> None:
        """Pages `idx` (distinct) were just sent with contents[rows], in this order; where
        `current` is set, the page's slot already holds that content (see patch)."""
        assert rows.shape == idx.shape and contents.ndim == 2 and contents.shape[1] == PAGE_SIZE
        if self.slots_max == 0 or idx.size == 0:
            return
        slots = self._slot_of_page[idx]
        have = slots >= 0
        copy = have if current is None else have & ~current
        assert current is None or not np.any(current & ~have)
        self._data[slots[copy]] = contents[rows[copy]]
        ticks = self._clock + np.arange(idx.size, dtype=np.int64)
        self._last_sent[slots[have]] = ticks[have]
        new = np.flatnonzero(~have)
        # Only the most recent pages fit when a put alone exceeds the free and evictable slots.
        room = self.slots_max - int(np.count_nonzero(have))
        new = new[max(0, new.size - room):]
        free = np.flatnonzero(self._page_of_slot < 0)
        short = new.size - free.size
        if short > 0:
            occupied = np.flatnonzero(self._page_of_slot >= 0)
            evictable = occupied[self._last_sent[occupied] < self._clock]
            order = np.argsort(self._last_sent[evictable], kind="stable")
            victims = evictable[order[:short]]
            assert victims.size == short
            self._slot_of_page[self._page_of_slot[victims]] = -1
            self._page_of_slot[victims] = -1
            free = np.sort(np.concatenate([free, victims]))
        target = free[:new.size]
        self._slot_of_page[idx[new]] = target
        self._page_of_slot[target] = idx[new]
        self._data[target] = contents[rows[new]]
        self._last_sent[target] = ticks[new]
        self._clock += idx.size

    def drop(self, idx: np.ndarray) -> None:
        """Pages whose destination copy is no longer what was sent (zero now, or unknown)."""
        slots = self._slot_of_page[idx]
        slots = slots[slots >= 0]
        self._page_of_slot[slots] = -1
        self._slot_of_page[idx] = -1
