"""Page geometry and the bounds every memory size is checked against."""

from __future__ import annotations

PAGE_SIZE = 4096
# 64 GiB of guest memory: far above what one emulated node holds here, and it
# keeps page numbers well inside the wire format's uint32.
PAGES_MAX = (64 << 30) // PAGE_SIZE
MIB = 1 << 20


def pages_for_mib(memory_mib: int) -> int:
    """Number of 4 KiB pages in `memory_mib` MiB."""
    return memory_mib * MIB // PAGE_SIZE
