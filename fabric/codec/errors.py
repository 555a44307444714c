"""The codec's error classes: precise kinds of a malformed batch, all raised before any write.

Each subclasses the fabric's `MalformedBatchError` (or `CorruptPageError`), so a
caller that handles those handles these; the subclass says which part of the
content the peer got wrong.
"""

from __future__ import annotations

from fabric.errors import MalformedBatchError


class FrameError(MalformedBatchError):
    """A zstd frame does not decompress to exactly its rows' pages: truncated, oversized (a
    decompression bomb), trailing bytes, an unbounded window, or the wrong dictionary."""


class DeltaError(MalformedBatchError):
    """A DELTA payload does not parse as runs, or its runs overrun the page or the payload."""


class DictionaryError(MalformedBatchError):
    """A frame names a dictionary the decoder does not hold, or a shipped dictionary is refused
    (redefined, malformed, or beyond the decoder's bound)."""


class SequenceError(MalformedBatchError):
    """A batch reached a stateful decoder out of order or from another migration; REF and DELTA
    rows are only meaningful after every earlier batch of the same migration."""
