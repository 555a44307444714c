"""Node identities, the authenticated key exchange, and the AEAD channel that seals migration frames.

Use (sans-IO: every call takes and returns bytes; the shells move them):

    identity = NodeIdentity.generate()            # per node; publish identity.public_bytes
    context = migration_context(vm=..., epoch=..., source=..., destination=...)

    source:      init = HandshakeInitiator(identity, destination_public, context)
                 hello = init.hello()                              -> destination
    destination: resp = HandshakeResponder(identity, source_public, context)
                 reply = resp.respond(hello)                       -> source
    source:      finished, keys = init.finish(reply)               -> destination (before any frame)
                 channel = SecureChannel(keys, role="initiator")
    destination: channel = SecureChannel(resp.finish(finished), role="responder")

    aad = metadata_aad(header.to_metadata())      # the batch metadata, canonical bytes
    frame = channel.seal(batch_bytes, aad)        # a bytearray: header | ciphertext | tag
    batch_bytes = peer_channel.open(frame, aad)   # bytes, only once the tag verified
    n = channel.seal_into(batch_bytes, aad, out)  # the same into a caller's buffer (no allocation)

Handshake (`handshake`): three messages, X25519 ephemerals signed by both
Ed25519 identities over a transcript of both ephemerals, both identities and
the context (SIGMA-I); both sides check the other is the identity they expect.
Keys (`keys`): HKDF-SHA256 from the shared secret and the transcript hash; a
traffic secret per direction, AES-256 keys ratcheting every FRAMES_PER_KEY
frames. Frames (`frame`): a 26-byte header (version, direction, channel id,
sequence number), AES-256-GCM ciphertext and tag; header and aad are
authenticated; nonce = 4-byte salt per direction + 8-byte sequence number.
Replays and frames outside the window are refused (`replay`). A channel may
be used from several threads.

VRF (`vrf`): RSA-FDH-VRF of RFC 9381 Section 4 (SHA-256 suite by default):
`VrfPrivateKey.prove(alpha)` gives a proof, `proof_to_hash(pi)` its output,
`VrfPublicKey.verify(alpha, pi)` the same output or VrfProofError.

Errors: every one is a SecureChannelError. A refused frame raises a
FrameRejectedError (also a MalformedBatchError): MalformedFrameError,
ForeignFrameError, OutOfWindowError, ReplayedFrameError or TamperedFrameError;
it changes no state of the channel. A failed handshake raises HandshakeError
and yields no keys; misuse here raises SecureUsageError; a channel that used
its last sequence number raises SequenceExhaustedError. Objects holding
secrets cannot be pickled or copied, so keys never leave the process (Ray
cannot ship them), and their repr shows no key bytes.
"""

from fabric.secure.aad import metadata_aad
from fabric.secure.channel import SecureChannel
from fabric.secure.errors import (
    BadSignatureError,
    ForeignFrameError,
    FrameRejectedError,
    HandshakeError,
    MalformedFrameError,
    OutOfWindowError,
    ReplayedFrameError,
    SecureChannelError,
    SecureUsageError,
    SequenceExhaustedError,
    TamperedFrameError,
)
from fabric.secure.frame import (
    AAD_BYTES_MAX,
    FRAMES_PER_KEY,
    OVERHEAD_BYTES,
    PLAINTEXT_BYTES_MAX,
    REPLAY_WINDOW_FRAMES_DEFAULT,
    REPLAY_WINDOW_FRAMES_MAX,
    sealed_bytes,
)
from fabric.secure.handshake import HandshakeInitiator, HandshakeResponder, migration_context
from fabric.secure.identity import NodeIdentity
from fabric.secure.keys import SessionKeys
from fabric.secure.vrf import VrfKeyRing, VrfPrivateKey, VrfProofError, VrfPublicKey, proof_to_hash

__all__ = [
    "AAD_BYTES_MAX", "FRAMES_PER_KEY", "OVERHEAD_BYTES", "PLAINTEXT_BYTES_MAX",
    "REPLAY_WINDOW_FRAMES_DEFAULT", "REPLAY_WINDOW_FRAMES_MAX", "BadSignatureError", "ForeignFrameError",
    "FrameRejectedError", "HandshakeError", "HandshakeInitiator", "HandshakeResponder",
    "MalformedFrameError", "NodeIdentity", "OutOfWindowError", "ReplayedFrameError", "SecureChannel",
    "SecureChannelError", "SecureUsageError", "SequenceExhaustedError", "SessionKeys",
    "TamperedFrameError", "VrfKeyRing", "VrfPrivateKey", "VrfProofError", "VrfPublicKey", "metadata_aad",
    "migration_context", "proof_to_hash", "sealed_bytes",
]
