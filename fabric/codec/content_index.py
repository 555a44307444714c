"""Which page holds which content, so a page can travel as a reference to it.

Both ends keep one, keyed by the page's xxh3-64 checksum and updated by the
same rules in the same row order: a page that receives new content points its
checksum at itself (the latest holder wins), and its old checksum is dropped if
it still pointed at that page. The sender's index is therefore never ahead of
the destination's, except for pages the destination reports missing, which
the sender then forgets. A checksum only finds a candidate; the decoder
verifies it against the reference's 128-bit key before using it.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

# 2 Mi distinct contents (8 GiB of guest pages) per index; an entry costs ~150
# bytes of Python objects, so an index stays under ~300 MiB.
CONTENT_INDEX_ENTRIES_MAX = 1 << 21


class ContentIndex:
    """checksum -> page (a dict, bounded by `entries_max`) and page -> checksum (an array per page)."""

    def __init__(self, *, pages: int, entries_max: int) -> None:
        assert pages >= 1 and entries_max >= 0
        self.entries_max = entries_max
        self._page_of_key: dict[int, int] = {}
        self._key_of_page = np.zeros(pages, dtype=np.uint64)
        self._has_key = np.zeros(pages, dtype=bool)

    def __len__(self) -> int:
        return len(self._page_of_key)

    def lookup(self, key: int) -> int | None:
        """The page last known to hold content with checksum `key`, or None."""
        return self._page_of_key.get(key)

    def known(self, keys: Iterable[int]) -> list[bool]:
        """Whether some page is known to hold each checksum."""
        index = self._page_of_key
        return [k in index for k in keys]

    def record(self, pages: np.ndarray, keys: np.ndarray, has_key: np.ndarray) -> None:
        """Pages (distinct) now hold content with checksums `keys` where `has_key`, else zero or
        unknown content.

        First every page's old checksum is dropped if it still pointed at that page, then the new
        ones are added in order (a later page wins a checksum), while room remains. Both ends
        call this with the same rows in the same order, so they agree.
        """
        assert pages.shape == keys.shape == has_key.shape and keys.dtype == np.uint64
        index = self._page_of_key
        had = self._has_key[pages]
        if had.any():
            old_pages = pages[had]
            get = index.get
            for k, p in zip(self._key_of_page[old_pages].tolist(), old_pages.tolist(), strict=True):
                if get(k) == p:
                    del index[k]
            self._has_key[old_pages] = False
        new_pages, new_keys = pages[has_key], keys[has_key]
        if len(index) + new_keys.size <= self.entries_max:
            index.update(zip(new_keys.tolist(), new_pages.tolist(), strict=True))
            self._key_of_page[new_pages] = new_keys
            self._has_key[new_pages] = True
        else:
            for k, p in zip(new_keys.tolist(), new_pages.tolist(), strict=True):
                if k in index or len(index) < self.entries_max:
                    index[k] = p
                    self._key_of_page[p] = k
                    self._has_key[p] = True
        assert len(index) <= self.entries_max

    def forget_pages(self, pages: np.ndarray) -> None:
        """These pages' content is unknown: drop their checksums."""
        self.record(pages, np.zeros(pages.size, np.uint64), np.zeros(pages.size, bool))

    def forget_key(self, key: int) -> None:
        """No page can be trusted to hold content with checksum `key`."""
        page = self._page_of_key.pop(key, None)
        if page is not None and self._has_key[page] and int(self._key_of_page[page]) == key:
            self._has_key[page] = False
