"""The wire format: Arrow batches of pages, and their checks."""

from fabric.wire.batch import (
    BATCH_PAGES_MAX,
    SCHEMA,
    BatchHeader,
    DecodedBatch,
    Encoding,
    decode,
    encode_raw,
    wire_bytes,
)

__all__ = ["BATCH_PAGES_MAX", "SCHEMA", "BatchHeader", "DecodedBatch", "Encoding", "decode",
           "encode_raw", "wire_bytes"]
