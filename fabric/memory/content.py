"""Realistic synthetic page contents: what guest memory holds, not uniform noise.

Real guest RAM (see the captures in shared/data) is a mix of zero pages,
text (logs, config, JSON), packed structures with small integers and
pointers, code, and a minority of incompressible pages (compressed or
encrypted data). The mix below follows that shape; it is seeded, vectorised
and never claims to be a capture.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from fabric.errors import ConfigError
from fabric.memory.layout import PAGE_SIZE

RECORD_SIZE = 128  # one guest store of a small object (a row, a log line)

_WORDS = (
    b"GET /api/v1/items HTTP/1.1 200 ", b"user=", b"session=", b"INFO ", b"WARN ",
    b"kernel: ", b"eth0: link up ", b"{\"id\":", b",\"name\":\"", b"\",\"balance\":",
    b",\"tier\":\"silver\"}", b",\"tier\":\"gold\"}", b"/usr/lib/x86_64-linux-gnu/",
    b"libc.so.6 ", b"systemd[1]: Started ", b"cron[412]: ", b"status=ok ", b"\n",
    b"2026-11-20T12:00:00Z ", b"PATH=/usr/local/sbin:/usr/local/bin ", b"#include <",
    b"return -EINVAL;", b"SELECT * FROM orders WHERE ", b"key=value ", b"    ",
)


@dataclass(frozen=True, kw_only=True)
class ContentMix:
    """Fractions of each page kind in a freshly booted synthetic guest."""

    zero: float = 0.35
    text: float = 0.25
    structured: float = 0.25
    code: float = 0.07
    random: float = 0.08

    def validate(self) -> None:
        """Raise ConfigError unless fractions are non-negative and sum to 1."""
        parts = (self.zero, self.text, self.structured, self.code, self.random)
        if min(parts) < 0 or abs(sum(parts) - 1.0) > 1e-9:
            raise ConfigError(f"content mix fractions must be >= 0 and sum to 1, got {parts}")


def _text_pool(rng: np.random.Generator, count: int) -> np.ndarray:
    """`count` pages of log- and JSON-like ASCII text."""
    pool = np.empty((count, PAGE_SIZE), dtype=np.uint8)
    for i in range(count):
        parts: list[bytes] = []
        size = 0
        while size < PAGE_SIZE:
            w = _WORDS[int(rng.integers(len(_WORDS)))]
            num = str(int(rng.integers(0, 10 ** int(rng.integers(1, 8))))).encode()
            parts.append(w + num + b" ")
            size += len(w) + len(num) + 1
        pool[i] = np.frombuffer(b"".join(parts)[:PAGE_SIZE], dtype=np.uint8)
    return pool


def _structured(rng: np.random.Generator, n: int) -> np.ndarray:
    """Pages of packed structs: small counters, flags and heap-like pointers."""
    words = np.zeros((n, PAGE_SIZE // 8), dtype=np.uint64)
    kind = rng.integers(0, 4, size=words.shape)
    small = rng.integers(0, 1 << 12, size=words.shape, dtype=np.uint64)
    pointer = np.uint64(0xFFFF888000000000) + (
        rng.integers(0, 1 << 20, size=words.shape, dtype=np.uint64) << np.uint64(6))
    words = np.where(kind == 0, 0, np.where(kind == 1, small, np.where(kind == 2, pointer, small & 1)))
    return np.ascontiguousarray(words.astype(np.uint64)).view(np.uint8).reshape(n, PAGE_SIZE)


def fill_pages(rng: np.random.Generator, n: int, mix: ContentMix = ContentMix()) -> np.ndarray:
    """`n` pages of realistic content, kinds drawn from `mix`."""
    mix.validate()
    pages = np.zeros((n, PAGE_SIZE), dtype=np.uint8)
    kind = rng.choice(5, size=n, p=[mix.zero, mix.text, mix.structured, mix.code, mix.random])
    text = np.flatnonzero(kind == 1)
    if text.size:
        pool = _text_pool(rng, 64)
        pages[text] = pool[rng.integers(0, len(pool), size=text.size)]
        # a few edited bytes per page, so pages are alike but not identical
        cols = rng.integers(0, PAGE_SIZE, size=(text.size, 16))
        pages[text[:, None], cols] = rng.integers(0x30, 0x3A, size=cols.shape, dtype=np.uint8)
    structured = np.flatnonzero(kind == 2)
    if structured.size:
        pool = _structured(rng, 256)
        pages[structured] = pool[rng.integers(0, len(pool), size=structured.size)]
        # each copy of a struct page differs in a few counters
        words = pages.view(np.uint64)
        cols = rng.integers(0, PAGE_SIZE // 8, size=(structured.size, 8))
        words[structured[:, None], cols] = rng.integers(0, 1 << 16, size=cols.shape, dtype=np.uint64)
    code = np.flatnonzero(kind == 3)
    if code.size:
        # a library's pages: a small set of distinct pages, mapped many times
        library = rng.integers(0, 256, size=(32, PAGE_SIZE), dtype=np.uint8)
        library[:, ::3] = 0x48  # REX.W prefixes: code is far from uniform
        pages[code] = library[rng.integers(0, len(library), size=code.size)]
    noise = np.flatnonzero(kind == 4)
    if noise.size:
        pages[noise] = rng.integers(0, 256, size=(noise.size, PAGE_SIZE), dtype=np.uint8)
    return pages


_TEMPLATE_TEXT = b'{"id":0000000,"name":"user0000000","balance":00000,"tier":"silver"}'
_RECORD_TEMPLATE = np.frombuffer(_TEMPLATE_TEXT.ljust(RECORD_SIZE - 32, b" "), dtype=np.uint8)
# (offset in the text, width, field) of each run of digits the guest rewrites
_RECORD_DIGITS = tuple(
    (m.start(), m.end() - m.start(), i) for i, m in enumerate(re.finditer(rb"0+", _TEMPLATE_TEXT)))


def records(rng: np.random.Generator, n: int) -> np.ndarray:
    """`n` RECORD_SIZE-byte records as a guest stores them: a binary header then JSON text."""
    out = np.empty((n, RECORD_SIZE), dtype=np.uint8)
    header = np.empty((n, 4), dtype=np.uint64)
    header[:, 0] = rng.integers(0, 400_000, size=n, dtype=np.uint64)      # key id
    header[:, 1] = rng.integers(0, 1 << 40, size=n, dtype=np.uint64)      # timestamp
    header[:, 2] = rng.integers(0, 100_000, size=n, dtype=np.uint64)      # balance
    header[:, 3] = rng.integers(0, 3, size=n, dtype=np.uint64)            # tier
    out[:, :32] = header.view(np.uint8).reshape(n, 32)
    out[:, 32:] = _RECORD_TEMPLATE
    for start, width, _field in _RECORD_DIGITS:
        out[:, 32 + start : 32 + start + width] = rng.integers(
            0x30, 0x3A, size=(n, width), dtype=np.uint8)
    return out
