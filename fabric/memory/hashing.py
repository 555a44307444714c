"""Per-page checksums (xxh3-64) and the whole-memory digest built from them.

xxh3 is not cryptographic: it catches corruption and our own bugs. Frames are
authenticated by the secure channel, not by these checksums.
"""

from __future__ import annotations

import hashlib

import numpy as np
import xxhash

from fabric.memory.layout import PAGE_SIZE

_xxh3 = xxhash.xxh3_64_intdigest

ZERO_PAGE_HASH: int = _xxh3(bytes(PAGE_SIZE))


def page_hashes(pages: np.ndarray) -> np.ndarray:
    """xxh3-64 of each row of a (n, PAGE_SIZE) uint8 array."""
    assert pages.ndim == 2 and pages.shape[1] == PAGE_SIZE and pages.dtype == np.uint8
    out = np.empty(pages.shape[0], dtype=np.uint64)
    for i, row in enumerate(pages):
        out[i] = _xxh3(row)
    return out


def memory_digest(hashes: np.ndarray) -> str:
    """Digest of a whole memory from its page hashes, in page order (BLAKE2b-256, hex)."""
    assert hashes.dtype == np.uint64
    return hashlib.blake2b(np.ascontiguousarray(hashes).tobytes(), digest_size=32).hexdigest()
