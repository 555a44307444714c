"""A node's long-term Ed25519 identity: its private key stays in this process."""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from fabric.secure.errors import BadSignatureError
from fabric.secure.memory_only import MemoryOnly

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64


class NodeIdentity(MemoryOnly):
    """An Ed25519 key pair; publish `public_bytes`, keep the object (it cannot be pickled or copied)."""

    __slots__ = ("_private", "_public")

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self._public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @classmethod
    def generate(cls) -> NodeIdentity:
        """A new identity from the operating system's CSPRNG."""
        return cls(Ed25519PrivateKey.generate())

    @property
    def public_bytes(self) -> bytes:
        """The 32-byte public key, safe to publish (e.g. through the controller)."""
        return self._public

    def sign(self, data: bytes) -> bytes:
        """A 64-byte Ed25519 signature of `data`."""
        return self._private.sign(data)

    @staticmethod
    def verify(public: bytes, data: bytes, signature: bytes) -> None:
        """Return if `signature` is `public`'s signature of `data`, else raise BadSignatureError."""
        key = load_public_key(public)
        if len(signature) != SIGNATURE_BYTES:
            raise BadSignatureError(f"an Ed25519 signature is {SIGNATURE_BYTES} bytes, got {len(signature)}")
        try:
            key.verify(bytes(signature), bytes(data))
        except InvalidSignature as e:
            raise BadSignatureError(f"signature does not verify for key {public.hex()[:16]}") from e

    def __repr__(self) -> str:
        return f"NodeIdentity(public={self._public.hex()[:16]}...)"


def load_public_key(public: bytes) -> Ed25519PublicKey:
    """Parse a published 32-byte Ed25519 public key; BadSignatureError if it is not one."""
    if not isinstance(public, bytes | bytearray) or len(public) != PUBLIC_KEY_BYTES:
        raise BadSignatureError(f"an Ed25519 public key is {PUBLIC_KEY_BYTES} bytes")
    try:
        return Ed25519PublicKey.from_public_bytes(bytes(public))
    except ValueError as e:
        raise BadSignatureError(f"not an Ed25519 public key: {e}") from e
