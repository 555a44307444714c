"""The sealed frame's layout and the limits every channel checks.

    offset  size  field
    0       1     version (1)
    1       1     direction: 0 initiator -> responder, 1 responder -> initiator
    2       16    channel id (from the key schedule, the same in both directions)
    18      8     sequence number, big-endian, per direction, from 0
    26      n     AES-256-GCM ciphertext of the n-byte plaintext
    26+n    16    GCM tag

The AEAD's associated data is the 26 header bytes followed by the caller's
aad (the batch metadata); the header has a fixed size, so the split is
unambiguous. The nonce is the direction's 4-byte salt and the 8-byte sequence
number. The AES key changes every FRAMES_PER_KEY frames (see `keys`).
"""

from __future__ import annotations

import struct
from enum import IntEnum

VERSION = 1
HEADER = struct.Struct(">BB16sQ")
HEADER_BYTES = HEADER.size
TAG_BYTES = 16
OVERHEAD_BYTES = HEADER_BYTES + TAG_BYTES
CHANNEL_ID_BYTES = 16
SALT_BYTES = 4
AES_KEY_BYTES = 32
# The sequence number is the nonce's last 8 bytes: it may never wrap.
SEQ_MAX = 2**64 - 1

# A frame carries one batch: BATCH_PAGES_MAX (4096) raw 4 KiB pages are 16 MiB,
# plus 1 MiB for the batch's other Arrow columns (21 bytes a row) and metadata.
PLAINTEXT_BYTES_MAX = 17 << 20
# The caller's associated data is the batch metadata: the header, about 100
# bytes, and the first time a batch uses a trained zstd dictionary, its bytes
# (at most 128 KiB, fabric.wire's DICTIONARY_BYTES_MAX); twice that for headroom.
AAD_BYTES_MAX = 256 << 10

# Rekey bound. For AES-GCM, an attacker's advantage in telling the ciphertexts
# from random grows like sigma^2 / 2^128 for sigma 16-byte blocks under one key
# (draft-irtf-cfrg-aead-limits; TLS 1.3 caps records per key for the same
# reason, RFC 8446 5.5, at a 2^-57 margin). At most FRAMES_PER_KEY frames per
# key keep sigma under KEY_BLOCKS_MAX = 2^34 (2^33.1 if every frame is full), so
# the advantage stays under 2^-60. The channel then ratchets to the next key
# instead of stopping, so a guest of any size moves over one handshake.
FRAMES_PER_KEY = 2**13
GCM_BLOCKS_PER_FRAME_MAX = -(-PLAINTEXT_BYTES_MAX // 16) + 1  # + the block that masks the tag
KEY_BLOCKS_MAX = 2**34
assert FRAMES_PER_KEY * GCM_BLOCKS_PER_FRAME_MAX <= KEY_BLOCKS_MAX

# The receiver accepts sequence numbers up to a window behind and ahead of the
# highest it has accepted: 2 windows span at most two key epochs when a window
# is at most half an epoch, so the receiver needs at most two keys at a time.
REPLAY_WINDOW_FRAMES_DEFAULT = 1024
REPLAY_WINDOW_FRAMES_MAX = FRAMES_PER_KEY // 2


class Direction(IntEnum):
    """Which way a frame travels; each direction has its own keys, salt and sequence numbers."""

    INITIATOR_TO_RESPONDER = 0
    RESPONDER_TO_INITIATOR = 1


def sealed_bytes(plaintext_bytes: int) -> int:
    """Size of the frame that seals a plaintext of this size."""
    return plaintext_bytes + OVERHEAD_BYTES


def nonce(salt: bytes, seq: int) -> bytes:
    """The 12-byte GCM nonce of frame `seq`."""
    assert len(salt) == SALT_BYTES and 0 <= seq <= SEQ_MAX
    return salt + seq.to_bytes(8, "big")
