"""Reading trace files: plain or gzipped text, with a typed error when unreadable."""

from __future__ import annotations

import gzip
from pathlib import Path

from policies.errors import TraceFormatError

FILE_BYTES_MAX = 1 << 30  # decompressed; the shipped traces are below 20 MB


def read_lines(path: Path) -> list[str]:
    """The lines of a text file, decompressing `.gz`; TraceFormatError if it cannot be read."""
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
            raw = f.read(FILE_BYTES_MAX + 1)
    except (OSError, EOFError) as e:
        raise TraceFormatError(f"cannot read {path}: {e}") from None
    if len(raw) > FILE_BYTES_MAX:
        raise TraceFormatError(f"{path} is larger than {FILE_BYTES_MAX} bytes")
    try:
        return raw.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise TraceFormatError(f"{path} is not UTF-8 text: {e}") from None
