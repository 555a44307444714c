"""Associated data from batch metadata: one canonical byte string for the same metadata."""

from __future__ import annotations

from collections.abc import Mapping

from fabric.secure.errors import SecureUsageError
from fabric.secure.frame import AAD_BYTES_MAX


def metadata_aad(metadata: Mapping[bytes, bytes]) -> bytes:
    """Sorted, length-prefixed key/value pairs (e.g. BatchHeader.to_metadata()), so order never matters."""
    out = bytearray(b"novacron-aad")
    for key in sorted(metadata):
        value = metadata[key]
        if not isinstance(key, bytes) or not isinstance(value, bytes):
            raise SecureUsageError(f"metadata keys and values must be bytes, got {key!r}: {value!r}")
        # Length prefixes: no two different mappings give the same bytes.
        out += len(key).to_bytes(4, "big") + key + len(value).to_bytes(4, "big") + value
    if len(out) > AAD_BYTES_MAX:
        raise SecureUsageError(f"metadata is {len(out)} bytes as aad, over {AAD_BYTES_MAX}")
    return bytes(out)
