"""Content keys: the xxh3-128 of a page, how dedup names content on both ends."""

from __future__ import annotations

import numpy as np
import xxhash

from fabric.memory.layout import PAGE_SIZE
from fabric.wire import CONTENT_KEY_BYTES

_xxh3_128 = xxhash.xxh3_128_digest


def content_keys(pages: np.ndarray) -> np.ndarray:
    """xxh3-128 keys of (n, 4096) uint8 pages, as an (n, 16) uint8 array (the form holdings take)."""
    return np.frombuffer(key_bytes(pages), dtype=np.uint8).reshape(-1, CONTENT_KEY_BYTES).copy()


def key_bytes(pages: np.ndarray) -> bytes:
    """The keys of (n, 4096) pages concatenated, 16 bytes each."""
    assert pages.ndim == 2 and pages.shape[1] == PAGE_SIZE and pages.dtype == np.uint8
    if not pages.flags.c_contiguous:
        pages = np.ascontiguousarray(pages)
    flat = memoryview(pages.reshape(-1))
    return b"".join([_xxh3_128(flat[i:i + PAGE_SIZE]) for i in range(0, flat.nbytes, PAGE_SIZE)])


def keys_of_rows(pages: np.ndarray, rows: np.ndarray) -> list[bytes]:
    """The key of each of `rows` of (n, 4096) contiguous pages, without copying the pages."""
    assert pages.ndim == 2 and pages.shape[1] == PAGE_SIZE and pages.dtype == np.uint8
    assert pages.flags.c_contiguous
    flat = memoryview(pages.reshape(-1))
    return [_xxh3_128(flat[r * PAGE_SIZE:(r + 1) * PAGE_SIZE]) for r in rows.tolist()]


def split_keys(keys: bytes | np.ndarray) -> list[bytes]:
    """Individual 16-byte keys from concatenated bytes or an (n, 16) uint8 array."""
    raw = keys.tobytes() if isinstance(keys, np.ndarray) else keys
    assert len(raw) % CONTENT_KEY_BYTES == 0
    return [raw[i:i + CONTENT_KEY_BYTES] for i in range(0, len(raw), CONTENT_KEY_BYTES)]
