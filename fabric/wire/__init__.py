"""The wire format: Arrow batches of pages, their encodings, and their structural checks."""

from fabric.wire.batch import (
    BATCH_PAGES_MAX,
    CONTENT_KEY_BYTES,
    DELTA_PAYLOAD_BYTES_MAX,
    DICTIONARY_BYTES_MAX,
    FRAME_PAGES_MAX,
    META_DICT,
    META_DICT_ID,
    SCHEMA,
    WIRE_VERSION,
    BatchHeader,
    Encoding,
    build_batch,
    encode_raw,
    wire_bytes,
)
from fabric.wire.structure import DecodedBatch, WireBatch, check_batch, decode

__all__ = ["BATCH_PAGES_MAX", "CONTENT_KEY_BYTES", "DELTA_PAYLOAD_BYTES_MAX", "DICTIONARY_BYTES_MAX",
           "FRAME_PAGES_MAX", "META_DICT", "META_DICT_ID", "SCHEMA", "WIRE_VERSION", "BatchHeader",
           "DecodedBatch", "Encoding", "WireBatch", "build_batch", "check_batch", "decode", "encode_raw",
           "wire_bytes"]
