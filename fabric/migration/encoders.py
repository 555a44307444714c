"""Page encoders the engine may use: the HDE codec, or raw pages for comparison."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from fabric.codec import PROFILES, CodecProfile, PageEncoder
from fabric.memory.layout import PAGE_SIZE
from fabric.migration.config import MigrationConfig
from fabric.wire import BatchHeader, encode_raw, wire_bytes


class EncodedPages(Protocol):
    """What an encoder hands back for one batch."""

    batch: pa.RecordBatch
    raw_bytes: int
    wire_bytes: int


class BatchEncoder(Protocol):
    """Turns a batch of pages into a wire batch; may keep state across batches."""

    def encode(self, header: BatchHeader, idx: np.ndarray, contents: np.ndarray, hashes: np.ndarray, *,
               link_bytes_per_s: float | None) -> EncodedPages:
        """Encode one batch of pages."""
        ...

    def forget(self, idx: np.ndarray) -> None:
        """The destination lacks these pages: never refer to them as already sent."""
        ...

    def stats(self) -> dict[str, Any]:
        """What the encoder did, JSON-ready."""
        ...

    def set_profile(self, profile: CodecProfile) -> None:
        """Switch codec profile (the link's mode changed)."""
        ...

    def add_destination_holdings(self, keys: np.ndarray) -> None:
        """Content keys the destination node already holds."""
        ...


@dataclass(frozen=True)
class _RawEncoded:
    batch: pa.RecordBatch
    raw_bytes: int
    wire_bytes: int


class RawBatchEncoder:
    """Every page as its raw 4 KiB: no compression, no references."""

    def __init__(self) -> None:
        self._pages = self._raw = self._wire = 0

    def encode(self, header: BatchHeader, idx: np.ndarray, contents: np.ndarray, hashes: np.ndarray, *,
               link_bytes_per_s: float | None) -> _RawEncoded:
        """One raw batch."""
        batch = encode_raw(header, idx, contents, hashes)
        encoded = _RawEncoded(batch=batch, raw_bytes=int(idx.size) * PAGE_SIZE, wire_bytes=wire_bytes(batch))
        self._pages += int(idx.size)
        self._raw += encoded.raw_bytes
        self._wire += encoded.wire_bytes
        return encoded

    def forget(self, idx: np.ndarray) -> None:
        """Nothing to forget: raw pages never refer to earlier ones."""

    def set_profile(self, profile: CodecProfile) -> None:
        """Raw pages have no profile."""

    def add_destination_holdings(self, keys: np.ndarray) -> None:
        """Raw pages never refer to what the destination holds."""

    def stats(self) -> dict[str, Any]:
        """Pages and bytes sent."""
        return {"encoder": "raw", "pages": self._pages, "raw_bytes": self._raw, "wire_bytes": self._wire}


def profile_for(mode: str, config: MigrationConfig) -> CodecProfile:
    """The codec profile of link mode `mode`, with a trained dictionary if the config asks for one."""
    profile = PROFILES[mode]
    return replace(profile, dictionary=True) if config.zstd_dictionary else profile


def make_encoder(config: MigrationConfig, pages: int, mode: str) -> BatchEncoder:
    """The encoder a migration's config asks for, with the codec profile of link mode `mode`."""
    if config.codec == "raw":
        return RawBatchEncoder()
    return PageEncoder(pages=pages, profile=profile_for(mode, config))
