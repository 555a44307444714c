"""Codec profiles: what the codec may use in each link mode, checked when built."""

from __future__ import annotations

from dataclasses import dataclass

from fabric.codec.frames import FRAME_BYTES_MAX, LEVEL_MAX, LEVEL_MIN
from fabric.errors import ConfigError
from fabric.memory.layout import PAGE_SIZE
from fabric.wire import DICTIONARY_BYTES_MAX

FRAME_BYTES_MIN = 64 << 10  # below this zstd finds too few matches across pages
DICTIONARY_SAMPLE_PAGES_MAX = 4096  # training time grows with the sample; 16 MiB is plenty


@dataclass(frozen=True, kw_only=True)
class CodecProfile:
    """Which encodings the codec may use and how the selector explores; one per link mode.

    Zero elision is always on. The selector picks, per batch, raw or one of
    `zstd_levels` (with or without the trained dictionary) for the pages that
    are neither zero, referenced nor delta-encoded.
    """

    name: str
    zstd_levels: tuple[int, ...]  # levels the selector may pick, besides raw
    delta: bool  # XBZRLE deltas of re-sent pages
    dedup: bool  # REF rows for content the destination holds
    dictionary: bool  # train a dictionary on the VM's pages and offer it to the selector
    frame_bytes: int  # target uncompressed size of a zstd frame
    explore_fraction: float = 1 / 16  # batches on which the selector tries a choice not its best
    ewma_alpha: float = 0.25  # weight of the newest measurement in the selector's estimates
    dictionary_bytes: int = 64 << 10
    dictionary_sample_pages: int = 1024  # pages of the first batch with frames the dictionary learns from

    def __post_init__(self) -> None:
        def bad(field: str, fix: str) -> ConfigError:
            return ConfigError(f"codec profile {self.name!r}: {field} = {getattr(self, field)!r}; {fix}")

        if not self.name:
            raise bad("name", "give the profile a name")
        if not self.zstd_levels or len(set(self.zstd_levels)) != len(self.zstd_levels) or \
                not all(LEVEL_MIN <= lv <= LEVEL_MAX for lv in self.zstd_levels):
            raise bad("zstd_levels", f"use distinct levels in {LEVEL_MIN}..{LEVEL_MAX}")
        if not FRAME_BYTES_MIN <= self.frame_bytes <= FRAME_BYTES_MAX or self.frame_bytes % PAGE_SIZE:
            raise bad("frame_bytes", f"use a multiple of {PAGE_SIZE} in {FRAME_BYTES_MIN}..{FRAME_BYTES_MAX}")
        if not 0.0 <= self.explore_fraction <= 0.5:
            raise bad("explore_fraction", "use 0..0.5")
        if not 0.0 < self.ewma_alpha <= 1.0:
            raise bad("ewma_alpha", "use a weight in (0, 1]")
        if not 1 << 10 <= self.dictionary_bytes <= DICTIONARY_BYTES_MAX:
            raise bad("dictionary_bytes", f"use 1024..{DICTIONARY_BYTES_MAX}")
        if not 16 <= self.dictionary_sample_pages <= DICTIONARY_SAMPLE_PAGES_MAX:
            raise bad("dictionary_sample_pages", f"use 16..{DICTIONARY_SAMPLE_PAGES_MAX}")

    @property
    def frame_pages(self) -> int:
        """Pages in a full frame."""
        return self.frame_bytes // PAGE_SIZE


PROFILES: dict[str, CodecProfile] = {
    # Fast links: the CPU is the bottleneck; zstd-1 only, frames sized for speed.
    "datacenter": CodecProfile(name="datacenter", zstd_levels=(1,), delta=True, dedup=True,
                               dictionary=False, frame_bytes=256 << 10),
    "hybrid": CodecProfile(name="hybrid", zstd_levels=(1, 3), delta=True, dedup=True,
                           dictionary=False, frame_bytes=512 << 10),
    # Long-haul links: bigger frames, higher levels. Level 1 stays on offer:
    # "internet" means RTT > 50 ms OR < 1 Gbit/s, so a 2 Gbit/s link across an ocean
    # is internet, and there the 2-core CPU, not the link, is the bottleneck; the
    # selector picks by measured effective rate. No dictionary by default: training
    # one took 0.59 s of CPU on the idle capture's first batch and gave no better
    # ratio at 1 MiB frames (jobs/bench_codec.py); MigrationConfig.zstd_dictionary
    # turns it on.
    "internet": CodecProfile(name="internet", zstd_levels=(1, 3, 9), delta=True, dedup=True,
                             dictionary=False, frame_bytes=1 << 20),
}
