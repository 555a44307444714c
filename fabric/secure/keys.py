"""The key schedule (HKDF-SHA256) and SessionKeys, the secrets one handshake yields.

    prk         = HKDF-Extract(salt=transcript hash, ikm=X25519 shared secret)
    traffic[d]  = HKDF-Expand(prk, "i2r traffic" | "r2i traffic", 32)
    channel id  = HKDF-Expand(prk, "channel id", 16)
    finished[r] = HKDF-Expand(prk, "initiator finished" | "responder finished", 32)
    salt[d]     = HKDF-Expand(traffic[d], "nonce salt", 4)
    key[d, e]   = HKDF-Expand(traffic[d], "key" || e as 8 bytes, 32)   e = seq // FRAMES_PER_KEY

Every label is prefixed with LABEL. The transcript hash covers both ephemeral
keys, both identities and the context, so two handshakes never share keys.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

from fabric.secure.errors import SecureUsageError
from fabric.secure.frame import AES_KEY_BYTES, CHANNEL_ID_BYTES, SALT_BYTES, Direction
from fabric.secure.memory_only import MemoryOnly

LABEL = b"novacron-fabric/secure/v1 "
SECRET_BYTES = 32

Role = Literal["initiator", "responder"]
ROLES: tuple[Role, Role] = ("initiator", "responder")


def labelled_hash(label: bytes, *parts: bytes) -> bytes:
    """SHA-256 of LABEL, a label and fixed-layout parts (callers keep the split unambiguous)."""
    h = hashlib.sha256(LABEL + label)
    for part in parts:
        h.update(part)
    return h.digest()


def expand(secret: bytes, label: bytes, length: int) -> bytes:
    """HKDF-Expand-SHA256 of `secret` under LABEL + `label`."""
    return HKDFExpand(hashes.SHA256(), length, LABEL + label).derive(secret)


@dataclass(frozen=True, eq=False)
class HandshakeSecrets:
    """What the handshake derives from the shared secret and the transcript; never printed."""

    i2r_traffic: bytes = field(repr=False)
    r2i_traffic: bytes = field(repr=False)
    channel_id: bytes = field(repr=False)
    initiator_finished: bytes = field(repr=False)
    responder_finished: bytes = field(repr=False)


def derive_handshake_secrets(shared: bytes, transcript_hash: bytes) -> HandshakeSecrets:
    """Run the key schedule over the X25519 output and the transcript hash (RFC 5869)."""
    assert len(shared) == 32 and len(transcript_hash) == 32
    prk = HKDF.extract(hashes.SHA256(), transcript_hash, shared)
    return HandshakeSecrets(
        i2r_traffic=expand(prk, b"i2r traffic", SECRET_BYTES),
        r2i_traffic=expand(prk, b"r2i traffic", SECRET_BYTES),
        channel_id=expand(prk, b"channel id", CHANNEL_ID_BYTES),
        initiator_finished=expand(prk, b"initiator finished", SECRET_BYTES),
        responder_finished=expand(prk, b"responder finished", SECRET_BYTES),
    )


def nonce_salt(traffic: bytes) -> bytes:
    """The 4 fixed bytes of every nonce of one direction."""
    return expand(traffic, b"nonce salt", SALT_BYTES)


def epoch_key(traffic: bytes, epoch: int) -> bytes:
    """The AES-256 key of one direction for sequence numbers epoch * FRAMES_PER_KEY onwards."""
    assert 0 <= epoch < 2**64
    return expand(traffic, b"key" + epoch.to_bytes(8, "big"), AES_KEY_BYTES)


class SessionKeys(MemoryOnly):
    """A traffic secret per direction and the channel id, for one side of one handshake.

    Feeds exactly one SecureChannel: a second one would seal other frames
    under the same nonces. Cannot be pickled, copied or printed.
    """

    __slots__ = ("_channel_id", "_role", "_traffic")

    def __init__(self, *, role: Role, secrets: HandshakeSecrets) -> None:
        assert role in ROLES
        self._role: Role = role
        self._channel_id = secrets.channel_id
        self._traffic: dict[Direction, bytes] | None = {
            Direction.INITIATOR_TO_RESPONDER: secrets.i2r_traffic,
            Direction.RESPONDER_TO_INITIATOR: secrets.r2i_traffic,
        }

    @property
    def role(self) -> Role:
        """Which side of the handshake these keys belong to."""
        return self._role

    @property
    def channel_id(self) -> bytes:
        """16 bytes naming the channel in every frame header; public, not a secret."""
        return self._channel_id

    def take_traffic_secrets(self) -> dict[Direction, bytes]:
        """Hand the traffic secrets to the one channel that will use them; SecureUsageError after."""
        if self._traffic is None:
            raise SecureUsageError("these SessionKeys already feed a channel; a second one would "
                                   "reuse nonces: run a new handshake")
        traffic, self._traffic = self._traffic, None
        return traffic

    def __repr__(self) -> str:
        state = "unused" if self._traffic is not None else "taken"
        return f"SessionKeys(role={self._role}, channel_id={self._channel_id.hex()}, keys=<hidden, {state}>)"
