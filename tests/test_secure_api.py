"""fabric.secure's public surface, its error hierarchy, and a real wire batch through a channel."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import fabric.secure as secure
from fabric.errors import FabricError, MalformedBatchError
from fabric.memory import PAGE_SIZE, page_hashes
from fabric.secure import (
    PLAINTEXT_BYTES_MAX,
    FrameRejectedError,
    HandshakeInitiator,
    HandshakeResponder,
    NodeIdentity,
    SecureChannel,
    SecureChannelError,
    SecureUsageError,
    TamperedFrameError,
    metadata_aad,
    migration_context,
)
from fabric.wire import BATCH_PAGES_MAX, BatchHeader, decode, encode_raw


def test_public_names_are_importable_and_errors_form_one_hierarchy() -> None:
    for name in secure.__all__:
        assert getattr(secure, name) is not None, name
    errors = [getattr(secure, n) for n in secure.__all__ if n.endswith("Error")]
    assert len(errors) == 12  # the channel's 11 and the VRF's VrfProofError
    assert all(issubclass(e, SecureChannelError) and issubclass(e, FabricError) for e in errors)
    refused = [e for e in errors if issubclass(e, FrameRejectedError)]
    assert len(refused) == 6 and all(issubclass(e, MalformedBatchError) for e in refused)


def channel_pair() -> tuple[SecureChannel, SecureChannel]:
    a, b = NodeIdentity.generate(), NodeIdentity.generate()
    context = migration_context(vm="web-1", epoch=4, source="us-east-1", destination="eu-west-1")
    init = HandshakeInitiator(a, b.public_bytes, context)
    resp = HandshakeResponder(b, a.public_bytes, context)
    finished, keys = init.finish(resp.respond(init.hello()))
    return SecureChannel(keys, role="initiator"), SecureChannel(resp.finish(finished), role="responder")


def ipc_bytes(batch: pa.RecordBatch) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def full_batch(seq: int) -> tuple[BatchHeader, np.ndarray, pa.RecordBatch]:
    header = BatchHeader(vm="web-1", epoch=4, round=0, seq=seq)
    pages = np.random.default_rng(seq).integers(0, 256, (BATCH_PAGES_MAX, PAGE_SIZE), dtype=np.uint8)
    idx = np.arange(BATCH_PAGES_MAX, dtype=np.uint32)
    return header, pages, encode_raw(header, idx, pages, page_hashes(pages))


def test_a_full_wire_batch_fits_a_frame_and_round_trips() -> None:
    source, destination = channel_pair()
    header, pages, batch = full_batch(seq=0)
    wire = ipc_bytes(batch)
    assert len(wire) <= PLAINTEXT_BYTES_MAX, "a full batch must fit one frame"
    aad = metadata_aad(header.to_metadata())
    frame = source.seal(wire, aad)
    received = pa.ipc.open_stream(destination.open(frame, aad)).read_next_batch()
    decoded = decode(received, page_count=BATCH_PAGES_MAX)
    assert decoded.header == header
    assert np.array_equal(decoded.pages, pages)

    # The same bytes presented under another batch's metadata (say seq 1) are refused.
    other = metadata_aad(BatchHeader(vm="web-1", epoch=4, round=0, seq=1).to_metadata())
    frame = source.seal(wire, aad)
    with pytest.raises(TamperedFrameError):
        destination.open(frame, other)


def test_metadata_with_a_trained_dictionary_fits_the_aad() -> None:
    meta = BatchHeader(vm="web-1", epoch=4, round=2, seq=9).to_metadata()
    # The codec ships a dictionary of up to 128 KiB in the metadata of the first batch using it.
    meta[b"novacron.codec.dict"] = bytes(128 << 10)
    source, destination = channel_pair()
    aad = metadata_aad(meta)
    assert destination.open(source.seal(b"batch", aad), aad) == b"batch"


def test_metadata_aad_is_canonical() -> None:
    meta = BatchHeader(vm="web-1", epoch=4, round=2, seq=9).to_metadata()
    assert metadata_aad(meta) == metadata_aad(dict(reversed(list(meta.items()))))
    assert metadata_aad({b"ab": b"c"}) != metadata_aad({b"a": b"bc"})
    with pytest.raises(SecureUsageError):
        metadata_aad({b"k": "not bytes"})  # type: ignore[dict-item]
