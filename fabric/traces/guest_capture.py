"""Loader for real guest-memory captures (shared/data/guest-memory format).

A capture folder holds `meta.json`, `base.ram.zst` (raw RAM, zstd) and
`delta-NNN.npz` files (`idx` uint32 page numbers, `pages` uint8 [n, 4096]).
Everything read from disk is checked; a bad folder raises CaptureFormatError.
"""

from __future__ import annotations

import itertools
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zstandard

from fabric.errors import CaptureFormatError
from fabric.memory.layout import PAGE_SIZE, PAGES_MAX

_READ_CHUNK = 1 << 22  # 4 MiB per decompression step


@dataclass(frozen=True, kw_only=True)
class CaptureMeta:
    """What meta.json says about a capture, checked."""

    name: str
    pages: int
    dump_times: tuple[float, ...]
    changed_pages: tuple[int, ...]
    workload: str

    @property
    def deltas(self) -> int:
        """Number of deltas after the base image."""
        return len(self.dump_times) - 1

    @property
    def gaps_s(self) -> tuple[float, ...]:
        """Seconds between consecutive dumps (delta k covers gap k-1)."""
        t = self.dump_times
        return tuple(t[i + 1] - t[i] for i in range(len(t) - 1))


class GuestCapture:
    """A capture folder: its metadata, base image and deltas, loaded on demand."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.meta = self._read_meta()

    def _read_meta(self) -> CaptureMeta:
        meta_path = self.path / "meta.json"
        try:
            raw = json.loads(meta_path.read_text())
        except FileNotFoundError:
            raise CaptureFormatError(f"{self.path} is not a capture: no meta.json") from None
        except (OSError, ValueError) as e:
            raise CaptureFormatError(f"{meta_path}: unreadable ({e})") from e
        try:
            pages = int(raw["pages"])
            page_size = int(raw.get("page_size", PAGE_SIZE))
            dump_times = tuple(float(t) for t in raw["dump_times"])
            stats = raw.get("stats", [])
            changed = tuple(int(s.get("changed_pages", 0)) for s in stats if int(s["dump"]) > 0)
        except (KeyError, TypeError, ValueError) as e:
            raise CaptureFormatError(f"{meta_path}: missing or bad field ({e})") from e
        if page_size != PAGE_SIZE:
            raise CaptureFormatError(f"{meta_path}: page_size {page_size}, expected {PAGE_SIZE}")
        if not 1 <= pages <= PAGES_MAX:
            raise CaptureFormatError(f"{meta_path}: pages {pages} outside 1..{PAGES_MAX}")
        if len(dump_times) < 1 or any(b <= a for a, b in itertools.pairwise(dump_times)):
            raise CaptureFormatError(f"{meta_path}: dump_times must be increasing")
        if len(changed) != len(dump_times) - 1:
            raise CaptureFormatError(
                f"{meta_path}: stats give changed_pages for {len(changed)} deltas, "
                f"dump_times imply {len(dump_times) - 1}")
        for k in range(1, len(dump_times)):
            if not (self.path / f"delta-{k:03d}.npz").is_file():
                raise CaptureFormatError(f"{self.path}: delta-{k:03d}.npz listed but missing")
        return CaptureMeta(name=str(raw.get("name", self.path.name)), pages=pages,
                           dump_times=dump_times, changed_pages=changed,
                           workload=str(raw.get("workload", "")))

    def read_base_into(self, out: np.ndarray) -> None:
        """Decompress base.ram.zst into `out` (uint8, shape (pages, PAGE_SIZE)), checking its size."""
        if out.shape != (self.meta.pages, PAGE_SIZE) or out.dtype != np.uint8:
            raise ValueError("output array does not match the capture's geometry")
        target = memoryview(out.reshape(-1))
        filled = 0
        path = self.path / "base.ram.zst"
        try:
            with open(path, "rb") as f, zstandard.ZstdDecompressor().stream_reader(f) as reader:
                while filled < len(target):
                    n = reader.readinto(target[filled:filled + _READ_CHUNK])
                    if n == 0:
                        break
                    filled += n
                extra = reader.read(1)
        except FileNotFoundError:
            raise CaptureFormatError(f"{self.path}: base.ram.zst missing") from None
        except zstandard.ZstdError as e:
            raise CaptureFormatError(f"{path}: not a valid zstd stream ({e})") from e
        if filled != len(target) or extra:
            raise CaptureFormatError(
                f"{path}: holds {'more' if extra else filled} bytes, meta.json says {len(target)}")

    def read_base(self) -> np.ndarray:
        """The base image as a new (pages, PAGE_SIZE) uint8 array."""
        out = np.empty((self.meta.pages, PAGE_SIZE), dtype=np.uint8)
        self.read_base_into(out)
        return out

    def read_delta(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Delta `k` (1-based): page numbers (uint32, unique) and their new contents."""
        if not 1 <= k <= self.meta.deltas:
            raise IndexError(f"delta {k} outside 1..{self.meta.deltas}")
        path = self.path / f"delta-{k:03d}.npz"
        try:
            with np.load(path, allow_pickle=False) as z:
                idx = z["idx"]
                pages = z["pages"]
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
            raise CaptureFormatError(f"{path}: unreadable delta ({e})") from e
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise CaptureFormatError(f"{path}: idx must be 1-d integers")
        if pages.dtype != np.uint8 or pages.shape != (idx.size, PAGE_SIZE):
            raise CaptureFormatError(f"{path}: pages must be uint8 [{idx.size}, {PAGE_SIZE}]")
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= self.meta.pages):
            raise CaptureFormatError(f"{path}: page number outside 0..{self.meta.pages - 1}")
        if idx.size != self.meta.changed_pages[k - 1]:
            raise CaptureFormatError(
                f"{path}: {idx.size} pages, meta.json says {self.meta.changed_pages[k - 1]}")
        if np.unique(idx).size != idx.size:
            raise CaptureFormatError(f"{path}: duplicated page numbers")
        return idx.astype(np.uint32), pages
