"""The secure layer's errors: one root, the peer's faults apart from our own.

A `FrameRejectedError` is also a `MalformedBatchError`: a refused frame is a
batch from the peer that was not applied, and the shells already abort a
migration on that. Which subclass a refused frame gets is read from its
header, which is authenticated only with the rest of the frame: the class is
a diagnosis, and any of them means that nothing of the frame was returned.
"""

from __future__ import annotations

from fabric.errors import FabricError, MalformedBatchError


class SecureChannelError(FabricError):
    """Base class of every error raised by `fabric.secure`."""


class SecureUsageError(SecureChannelError):
    """This node used the secure API wrongly (a bug here, never the peer's fault).

    E.g. a second channel over the same SessionKeys (it would reuse nonces), a
    role that does not match the keys, a plaintext above the frame limit.
    """


class BadSignatureError(SecureChannelError):
    """An Ed25519 signature, or the public key it is checked against, is not valid."""


class HandshakeError(SecureChannelError):
    """The key exchange failed; no keys came out of it.

    The peer's message is malformed, out of turn or replayed, a signature or
    finished MAC is wrong, or the peer is not the expected identity or binds
    another migration context. The handshake object is dead afterwards.
    """


class SequenceExhaustedError(SecureChannelError):
    """The channel has sealed its last sequence number; a new handshake is needed to go on."""


class FrameRejectedError(SecureChannelError, MalformedBatchError):
    """A frame from the peer was refused; the channel's state is unchanged and no plaintext left it."""


class MalformedFrameError(FrameRejectedError):
    """The frame cannot be parsed: too short, above the size limit, unknown version or direction."""


class ForeignFrameError(FrameRejectedError):
    """The frame belongs to another channel (another migration's keys) or to our own send direction."""


class OutOfWindowError(FrameRejectedError):
    """The frame's sequence number is older than the replay window or too far ahead of it."""


class ReplayedFrameError(FrameRejectedError):
    """A frame with this sequence number was already accepted."""


class TamperedFrameError(FrameRejectedError):
    """The AEAD tag does not verify: header, ciphertext, tag or associated data changed."""
