"""SecureChannel: frames round-trip; tampered, replayed, stale, foreign and reflected frames are refused."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import fabric.secure.channel as channel_module
from fabric.errors import ConfigError, MalformedBatchError
from fabric.secure import (
    FRAMES_PER_KEY,
    OVERHEAD_BYTES,
    PLAINTEXT_BYTES_MAX,
    ForeignFrameError,
    FrameRejectedError,
    HandshakeInitiator,
    HandshakeResponder,
    MalformedFrameError,
    NodeIdentity,
    OutOfWindowError,
    ReplayedFrameError,
    SecureChannel,
    SecureUsageError,
    SequenceExhaustedError,
    TamperedFrameError,
    migration_context,
    sealed_bytes,
)
from fabric.secure.frame import AAD_BYTES_MAX, HEADER_BYTES, SEQ_MAX, TAG_BYTES

MiB = 1 << 20
SOURCE, DESTINATION = NodeIdentity.generate(), NodeIdentity.generate()


def channel_pair(window: int = 1024, epoch: int = 1, **limits: int) -> tuple[SecureChannel, SecureChannel]:
    """Run a handshake between the two test nodes; the (initiator, responder) channels."""
    context = migration_context(vm="vm-1", epoch=epoch, source="src", destination="dst")
    init = HandshakeInitiator(SOURCE, DESTINATION.public_bytes, context)
    resp = HandshakeResponder(DESTINATION, SOURCE.public_bytes, context)
    finished, init_keys = init.finish(resp.respond(init.hello()))
    resp_keys = resp.finish(finished)
    return (SecureChannel(init_keys, role="initiator", replay_window_frames=window, **limits),
            SecureChannel(resp_keys, role="responder", replay_window_frames=window, **limits))


def payload(size: int, seed: int) -> bytes:
    return np.random.default_rng(seed).bytes(size)


# -- round trips ----------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(size=st.integers(0, 2 * MiB), seed=st.integers(0, 2**32 - 1), aad=st.binary(max_size=256))
@example(size=0, seed=0, aad=b"").via("empty frame")
@example(size=1, seed=1, aad=b"x").via("one byte")
@example(size=2 * MiB, seed=2, aad=b"meta").via("2 MiB")
def test_round_trip_both_directions(size: int, seed: int, aad: bytes) -> None:
    source, destination = channel_pair()
    data = payload(size, seed)
    frame = source.seal(data, aad)
    assert len(frame) == sealed_bytes(size) == size + OVERHEAD_BYTES
    assert destination.open(frame, aad) == data
    back = destination.seal(memoryview(data), aad)
    assert source.open(memoryview(back), aad) == data


def test_a_full_16_mib_frame_and_the_size_limit() -> None:
    source, destination = channel_pair()
    data = payload(16 * MiB, 3)
    assert destination.open(source.seal(data, b"aad"), b"aad") == data
    with pytest.raises(SecureUsageError, match="over the"):
        source.seal(memoryview(bytearray(PLAINTEXT_BYTES_MAX + 1)), b"")


def test_plaintext_may_be_a_numpy_view_and_seal_into_a_given_buffer() -> None:
    source, destination = channel_pair()
    pages = np.random.default_rng(4).integers(0, 256, (8, 4096), dtype=np.uint8)
    out = np.empty(sealed_bytes(pages.nbytes) + 10, dtype=np.uint8)
    size = source.seal_into(memoryview(pages), b"meta", memoryview(out))
    assert size == sealed_bytes(pages.nbytes)
    assert destination.open(memoryview(out)[:size], b"meta") == pages.tobytes()
    with pytest.raises(SecureUsageError, match="at least"):
        source.seal_into(pages.data, b"", bytearray(10))
    with pytest.raises(SecureUsageError, match="contiguous"):
        source.seal(memoryview(pages[:, ::2]), b"")


# -- tampering --------------------------------------------------------------------

def flip(frame: bytes | bytearray, bit: int) -> bytes:
    out = bytearray(frame)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def test_every_single_bit_flip_is_detected_with_the_error_for_its_field() -> None:
    source, destination = channel_pair()
    data = payload(64, 5)
    frame = bytes(source.seal(data, b"meta"))
    for bit in range(len(frame) * 8):
        byte = bit // 8
        with pytest.raises(FrameRejectedError) as info:
            destination.open(flip(frame, bit), b"meta")
        if byte == 0:
            expected: tuple[type, ...] = (MalformedFrameError,)  # version
        elif byte == 1:
            expected = (ForeignFrameError, MalformedFrameError)  # direction: reflected or unknown
        elif byte < 18:
            expected = (ForeignFrameError,)  # channel id
        elif byte < HEADER_BYTES:
            expected = (OutOfWindowError, TamperedFrameError)  # seq: far ahead, or another nonce
        else:
            expected = (TamperedFrameError,)  # ciphertext and tag
        assert isinstance(info.value, expected), (bit, info.value)
    # No refused frame moved the window: the genuine frame still opens, once.
    assert destination.open(frame, b"meta") == data
    assert destination.frames_opened == 1


@settings(max_examples=60, deadline=None)
@given(size=st.integers(0, 4096), seed=st.integers(0, 2**32 - 1), data=st.data())
def test_any_bit_flip_in_a_frame_of_any_size_is_refused(size: int, seed: int, data: st.DataObject) -> None:
    source, destination = channel_pair()
    frame = source.seal(payload(size, seed), b"meta")
    bit = data.draw(st.integers(0, len(frame) * 8 - 1), label="bit")
    with pytest.raises(FrameRejectedError):
        destination.open(flip(frame, bit), b"meta")


def test_a_refused_frame_is_also_a_malformed_batch() -> None:
    source, destination = channel_pair()
    frame = flip(source.seal(b"pages", b""), (HEADER_BYTES + 1) * 8)
    with pytest.raises(MalformedBatchError):
        destination.open(frame, b"")


def test_other_aad_truncation_and_extension_are_detected() -> None:
    source, destination = channel_pair()
    frame = bytes(source.seal(payload(100, 6), b"epoch=3"))
    with pytest.raises(TamperedFrameError):
        destination.open(frame, b"epoch=4")
    with pytest.raises(TamperedFrameError):
        destination.open(frame, b"")
    for cut in range(len(frame)):
        with pytest.raises(TamperedFrameError if cut >= OVERHEAD_BYTES else MalformedFrameError):
            destination.open(frame[:cut], b"epoch=3")
    with pytest.raises(TamperedFrameError):
        destination.open(frame + b"\0", b"epoch=3")
    # Swapping the ciphertext and tag of two frames of the same channel fails too.
    other = bytes(source.seal(payload(100, 7), b"epoch=3"))
    with pytest.raises(TamperedFrameError):
        destination.open(frame[:HEADER_BYTES] + other[HEADER_BYTES:], b"epoch=3")


def test_a_frame_that_is_not_a_byte_buffer_is_malformed() -> None:
    _, destination = channel_pair()
    for junk in (None, "text", 12345, [1, 2, 3], memoryview(bytes(200))[::2]):
        with pytest.raises(MalformedFrameError, match="buffer"):
            destination.open(junk, b"")  # type: ignore[arg-type]
    with pytest.raises(MalformedFrameError, match="aad"):
        destination.open(bytes(100), None)  # type: ignore[arg-type]


def test_receiver_frame_limit_and_aad_limit() -> None:
    source, _ = channel_pair()
    _, small = channel_pair(plaintext_bytes_max=1000)
    with pytest.raises(MalformedFrameError, match="over the 1000-byte"):
        small.open(source.seal(bytes(1001), b""), b"")
    with pytest.raises(SecureUsageError, match="aad"):
        source.seal(b"", bytes(AAD_BYTES_MAX + 1))
    with pytest.raises(MalformedFrameError, match="aad"):
        small.open(bytes(OVERHEAD_BYTES), bytes(AAD_BYTES_MAX + 1))


# -- replay window ---------------------------------------------------------------

def test_a_replayed_frame_is_refused() -> None:
    source, destination = channel_pair()
    frame = source.seal(b"page", b"")
    destination.open(frame, b"")
    with pytest.raises(ReplayedFrameError):
        destination.open(frame, b"")


def test_reordered_frames_within_the_window_are_accepted_once_each() -> None:
    source, destination = channel_pair(window=64)
    frames = [bytes(source.seal(i.to_bytes(4, "big"), b"")) for i in range(200)]
    order = list(range(200))
    # Shuffle within blocks of 32: the sender never has more than the window in flight.
    rng = random.Random(7)
    for start in range(0, 200, 32):
        block = order[start:start + 32]
        rng.shuffle(block)
        order[start:start + 32] = block
    for i in order:
        assert destination.open(frames[i], b"") == i.to_bytes(4, "big")
    for i in rng.sample(range(200 - 64, 200), 20):
        with pytest.raises(ReplayedFrameError):
            destination.open(frames[i], b"")


def test_too_old_and_too_far_ahead_frames_are_refused() -> None:
    source, destination = channel_pair(window=8)
    frames = [source.seal(bytes([i]), b"") for i in range(30)]
    with pytest.raises(OutOfWindowError, match="too far ahead"):
        destination.open(frames[8], b"")  # nothing accepted yet: 0..7 only
    destination.open(frames[7], b"")
    destination.open(frames[15], b"")  # 8 ahead of 7: the edge of the window
    with pytest.raises(OutOfWindowError, match="too old"):
        destination.open(frames[0], b"")  # 15 - 0 = 15 behind
    destination.open(frames[8], b"")  # 15 - 8 = 7 < 8: still inside
    with pytest.raises(OutOfWindowError, match="too far ahead"):
        destination.open(frames[24], b"")
    destination.open(frames[23], b"")
    with pytest.raises(OutOfWindowError, match="too old"):
        destination.open(frames[15], b"")  # 23 - 15 = 8: just outside


# -- foreign and reflected frames ------------------------------------------------

def test_frames_of_another_migration_are_foreign_even_with_a_forged_channel_id() -> None:
    source_a, destination_a = channel_pair(epoch=1)
    source_b, _ = channel_pair(epoch=2)
    frame_b = bytes(source_b.seal(b"page of another vm", b""))
    with pytest.raises(ForeignFrameError, match="channel"):
        destination_a.open(frame_b, b"")
    # Same identities and context, a second handshake: still another channel.
    source_c, _ = channel_pair(epoch=1)
    with pytest.raises(ForeignFrameError):
        destination_a.open(source_c.seal(b"x", b""), b"")
    # Rewriting the header to claim channel A does not help: B's keys are not A's.
    forged = frame_b[:2] + destination_a.channel_id + frame_b[18:]
    with pytest.raises(TamperedFrameError):
        destination_a.open(forged, b"")
    assert source_a.channel_id == destination_a.channel_id != source_b.channel_id


def test_a_frame_reflected_to_its_sender_is_foreign() -> None:
    source, destination = channel_pair()
    own = source.seal(b"to the destination", b"")
    with pytest.raises(ForeignFrameError, match="reflected"):
        source.open(own, b"")
    # Flipping the direction byte to look like the peer's is caught by the tag.
    disguised = bytearray(own)
    disguised[1] ^= 1
    with pytest.raises(TamperedFrameError):
        source.open(disguised, b"")
    assert destination.open(own, b"") == b"to the destination"


# -- sequence numbers and keys ----------------------------------------------------

def test_sealing_stops_after_the_last_sequence_number() -> None:
    source, _ = channel_pair()
    source._send_seq = SEQ_MAX  # reaching it honestly takes 2^64 frames
    frame = source.seal(b"last", b"")
    assert int.from_bytes(frame[18:HEADER_BYTES], "big") == SEQ_MAX
    with pytest.raises(SequenceExhaustedError):
        source.seal(b"one too many", b"")
    with pytest.raises(SequenceExhaustedError):
        source.seal(b"still", b"")


def test_the_key_ratchets_every_frames_per_key_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    derived: list[int] = []
    real = channel_module.epoch_key

    def recording(traffic: bytes, epoch: int) -> bytes:
        derived.append(epoch)
        return real(traffic, epoch)

    monkeypatch.setattr(channel_module, "epoch_key", recording)
    source, destination = channel_pair(window=64)
    frames = [source.seal(b"", b"") for _ in range(FRAMES_PER_KEY + 40)]
    assert derived == [0, 1]  # the sender: epoch 0 for frame 0, epoch 1 at frame FRAMES_PER_KEY
    derived.clear()
    head, tail = frames[:FRAMES_PER_KEY - 20], frames[FRAMES_PER_KEY - 20:]
    for f in head:
        destination.open(f, b"")
    # Across the boundary, out of order: epoch-0 frames after epoch-1 frames still open.
    first = [30, 25, 0, 5, 19, 20]  # tail[20] is frame FRAMES_PER_KEY, the first of epoch 1
    for i in first + sorted(set(range(60)) - set(first)):
        destination.open(tail[i], b"")
    assert derived == [0, 1]
    # A frame of epoch 1 sealed under the epoch-0 key would not open: the keys differ.
    assert real(b"k" * 32, 0) != real(b"k" * 32, 1)


def test_session_keys_feed_one_channel_for_one_role() -> None:
    context = migration_context(vm="vm-1", epoch=9, source="src", destination="dst")
    init = HandshakeInitiator(SOURCE, DESTINATION.public_bytes, context)
    resp = HandshakeResponder(DESTINATION, SOURCE.public_bytes, context)
    finished, keys = init.finish(resp.respond(init.hello()))
    with pytest.raises(SecureUsageError, match="not a responder"):
        SecureChannel(keys, role="responder")
    SecureChannel(keys, role="initiator")
    with pytest.raises(SecureUsageError, match="reuse nonces"):
        SecureChannel(keys, role="initiator")
    responder_keys = resp.finish(finished)
    for bad in (0, 4097):
        with pytest.raises(ConfigError, match="replay_window_frames"):
            SecureChannel(responder_keys, role="responder", replay_window_frames=bad)
    SecureChannel(responder_keys, role="responder")  # a refused config did not use the keys up


def test_same_plaintext_and_sequence_number_give_other_bytes_in_each_direction_and_channel() -> None:
    a_source, a_destination = channel_pair()
    b_source, _ = channel_pair()
    frames = [bytes(c.seal(b"\0" * 64, b""))[HEADER_BYTES:] for c in (a_source, a_destination, b_source)]
    assert len(set(frames)) == 3
    assert all(len(f) == 64 + TAG_BYTES for f in frames)


# -- threads (Ray actors with max_concurrency > 1) ------------------------------------

def test_two_threads_opening_one_frame_at_once_accept_it_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    source, destination = channel_pair()
    frame = bytes(source.seal(b"page", b""))
    both_decrypting = threading.Barrier(2, timeout=10)
    real_key = SecureChannel._receiving_key

    class SlowKey:
        """Holds each thread inside decrypt until both are there: both passed the first window check."""

        def __init__(self, key: object) -> None:
            self.key = key

        def decrypt(self, *args: object) -> bytes:
            both_decrypting.wait()
            return self.key.decrypt(*args)  # type: ignore[attr-defined]

    monkeypatch.setattr(SecureChannel, "_receiving_key", lambda self, epoch: SlowKey(real_key(self, epoch)))

    def open_once(_: int) -> str:
        try:
            destination.open(frame, b"")
            return "opened"
        except ReplayedFrameError:
            return "replay"

    with ThreadPoolExecutor(2) as pool:
        assert sorted(pool.map(open_once, range(2))) == ["opened", "replay"]
    assert destination.frames_opened == 1
