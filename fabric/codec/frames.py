"""zstd frames over many pages, compressed and decompressed with every size bounded.

A frame holds the pages of one ZSTD row and the ZSTD_CONT rows after it,
concatenated. The compressor writes the content size into the frame header;
the decompressor refuses a frame unless that size is exactly the frame's
pages, its window is bounded, it names the expected dictionary and nothing
trails it. python-zstandard allocates what a frame header claims, so the
header is checked before decompressing: that is what stops a bomb.
"""

from __future__ import annotations

import numpy as np
import zstandard

from fabric.codec.errors import DictionaryError, FrameError
from fabric.memory.layout import PAGE_SIZE
from fabric.wire import DICTIONARY_BYTES_MAX, FRAME_PAGES_MAX

FRAME_BYTES_MAX = FRAME_PAGES_MAX * PAGE_SIZE
# A frame never needs a window beyond its own size; 2x leaves room for how zstd rounds it.
WINDOW_BYTES_MAX = 2 * FRAME_BYTES_MAX
LEVEL_MIN, LEVEL_MAX = 1, 19  # zstd's normal levels; 20..22 ("ultra") need windows we refuse
DICTIONARY_BYTES_MIN = 8  # a zstd dictionary's magic number and id
UNKNOWN_SIZE = zstandard.CONTENTSIZE_UNKNOWN


class FrameCompressor:
    """Compresses frames at one level, with or without a dictionary; reuses its zstd context."""

    def __init__(self, level: int, dictionary: bytes | None = None) -> None:
        assert LEVEL_MIN <= level <= LEVEL_MAX, level
        self.level = level
        zdict = None
        if dictionary is not None:
            # A dictionary object holds one precomputed table, for one level: each compressor
            # gets its own, or a second level would free the table the first still uses.
            zdict = zstandard.ZstdCompressionDict(dictionary, dict_type=zstandard.DICT_TYPE_FULLDICT)
            zdict.precompute_compress(level=level)
        self.dict_id = zdict.dict_id() if zdict is not None else None
        self._zdict = zdict  # kept alive as long as the context that uses it
        self._cctx = zstandard.ZstdCompressor(level=level, dict_data=zdict, write_content_size=True,
                                              write_checksum=False, write_dict_id=True)

    def compress(self, pages: np.ndarray) -> bytes:
        """One frame holding (k, 4096) contiguous pages, 1 <= k <= FRAME_PAGES_MAX."""
        assert pages.ndim == 2 and pages.shape[1] == PAGE_SIZE and 1 <= pages.shape[0] <= FRAME_PAGES_MAX
        assert pages.flags.c_contiguous
        return self._cctx.compress(pages)


class FrameDecompressor:
    """Decompresses frames into pages, checking each frame's header against what the batch says.

    With a dictionary, a frame may use it or none (a batch can mix both, e.g. while the
    selector probes); without one, frames must use none.
    """

    def __init__(self, dictionary: zstandard.ZstdCompressionDict | None = None) -> None:
        self.dict_id = dictionary.dict_id() if dictionary is not None else None
        self._dctx = {0: zstandard.ZstdDecompressor(max_window_size=WINDOW_BYTES_MAX)}
        if dictionary is not None:
            self._dctx[dictionary.dict_id()] = zstandard.ZstdDecompressor(
                dict_data=dictionary, max_window_size=WINDOW_BYTES_MAX)

    def decompress_into(self, frame: np.ndarray, out: np.ndarray) -> None:
        """Decompress one frame into `out` ((k, 4096) uint8); FrameError unless it is exactly k pages."""
        k = out.shape[0]
        assert out.shape == (k, PAGE_SIZE) and 1 <= k <= FRAME_PAGES_MAX
        expected = k * PAGE_SIZE
        try:
            params = zstandard.get_frame_parameters(frame)
        except zstandard.ZstdError as e:
            raise FrameError(f"not a zstd frame: {e}") from e
        if params.content_size == UNKNOWN_SIZE or params.content_size != expected:
            claimed = "no size" if params.content_size == UNKNOWN_SIZE else f"{params.content_size} bytes"
            raise FrameError(f"frame header claims {claimed}, its {k} rows hold {expected} bytes")
        if params.window_size > WINDOW_BYTES_MAX:
            raise FrameError(f"frame window of {params.window_size} bytes, at most {WINDOW_BYTES_MAX}")
        dctx = self._dctx.get(params.dict_id)
        if dctx is None:
            raise FrameError(f"frame uses dictionary {params.dict_id}, "
                             f"the batch names {self.dict_id or 'none'}")
        try:
            data = dctx.decompress(frame, max_output_size=expected, allow_extra_data=False)
        except zstandard.ZstdError as e:
            raise FrameError(f"frame does not decompress: {e}") from e
        if len(data) != expected:
            raise FrameError(f"frame decompressed to {len(data)} bytes, expected {expected}")
        out.reshape(-1)[:] = np.frombuffer(data, dtype=np.uint8)


def train_dictionary(samples: np.ndarray, *, dict_bytes: int, dict_id: int, level: int) -> bytes:
    """A zstd dictionary trained on (n, 4096) sample pages; its header carries `dict_id`."""
    assert 1 << 10 <= dict_bytes <= DICTIONARY_BYTES_MAX
    assert samples.ndim == 2 and samples.shape[1] == PAGE_SIZE
    trained = zstandard.train_dictionary(dict_bytes, [row.tobytes() for row in samples], dict_id=dict_id,
                                         level=level)
    data = trained.as_bytes()
    assert len(data) <= DICTIONARY_BYTES_MAX
    return data


def load_dictionary(data: bytes, *, dict_id: int) -> zstandard.ZstdCompressionDict:
    """A dictionary from a peer's bytes; DictionaryError unless it is a zstd dictionary with that id."""
    if not DICTIONARY_BYTES_MIN <= len(data) <= DICTIONARY_BYTES_MAX:
        raise DictionaryError(f"dictionary of {len(data)} bytes, expected "
                              f"{DICTIONARY_BYTES_MIN}..{DICTIONARY_BYTES_MAX}")
    try:
        probe = zstandard.ZstdCompressionDict(data, dict_type=zstandard.DICT_TYPE_FULLDICT)
        probe.precompute_compress(level=LEVEL_MIN)  # parses the tables: a corrupt header fails here
    except zstandard.ZstdError as e:
        raise DictionaryError(f"shipped dictionary {dict_id} is not a zstd dictionary: {e}") from e
    if probe.dict_id() != dict_id:
        raise DictionaryError(f"shipped dictionary has id {probe.dict_id()}, the batch names {dict_id}")
    return zstandard.ZstdCompressionDict(data, dict_type=zstandard.DICT_TYPE_FULLDICT)
