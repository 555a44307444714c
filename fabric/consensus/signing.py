"""Signatures behind a small interface, so fabric.secure's node identities can replace them.

`Signer` signs as one identity; `Verifier` checks a signature against the key of
the identity it claims. Two implementations:

- Ed25519 (`Ed25519Signer`, `Ed25519KeyRing`), from `cryptography`: what
  replicas use for real. The key ring memoizes verdicts (a pure function of key,
  payload and signature), bounded, because a broadcast or a retransmission is
  verified again by every receiver.
- HMAC-SHA256 (`HmacSigner`, `HmacKeyRing`), for the simulator only: the key
  ring holds every identity's secret, which is sound only where the key ring is
  the simulator's trusted oracle. A Byzantine wrapper gets its own signer, never
  the ring, so it still cannot forge an honest replica's signature. It exists
  because Ed25519 verification costs ~290 us on the 2-core dev machine (measured
  with `cryptography` 48), which would dominate thousands of seeded runs.
"""

from __future__ import annotations

import hmac
import random
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from fabric.errors import ConfigError

# Verdicts kept by an Ed25519KeyRing: one PBFT window of messages at n=16 fits.
VERIFY_CACHE_MAX = 8192


class Signer(Protocol):
    """Signs payloads as one identity."""

    @property
    def identity(self) -> Hashable:
        """The id this signer signs as (a replica id or a client id)."""
        ...

    def sign(self, payload: bytes) -> bytes:
        """A signature over `payload`."""
        ...


class Verifier(Protocol):
    """Checks signatures against the keys of known identities."""

    def verify(self, identity: Hashable, payload: bytes, signature: bytes) -> bool:
        """True iff `signature` is `identity`'s over `payload` (False for an unknown identity)."""
        ...


class Ed25519Signer:
    """An Ed25519 private key used as `identity`."""

    def __init__(self, identity: Hashable, key: Ed25519PrivateKey) -> None:
        self._identity = identity
        self._key = key

    @classmethod
    def from_seed(cls, identity: Hashable, rng: random.Random) -> Ed25519Signer:
        """A key drawn from a seeded generator, so a simulated run replays."""
        return cls(identity, Ed25519PrivateKey.from_private_bytes(rng.randbytes(32)))

    @property
    def identity(self) -> Hashable:
        """The id this signer signs as."""
        return self._identity

    def public_key(self) -> bytes:
        """The raw 32-byte public key."""
        return self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def sign(self, payload: bytes) -> bytes:
        """An Ed25519 signature (64 bytes)."""
        return self._key.sign(payload)

    def as_identity(self, identity: Hashable) -> Ed25519Signer:
        """The same key signing as `identity` (a replica's evidence or switch requests, as a client)."""
        return Ed25519Signer(identity, self._key)


class Ed25519KeyRing:
    """Public keys by identity, with a bounded memo of verdicts."""

    def __init__(self, public_keys: dict[Hashable, bytes], *, cache_max: int = VERIFY_CACHE_MAX) -> None:
        if not 0 <= cache_max <= 1_000_000:
            raise ConfigError(f"cache_max={cache_max}: use 0..1000000 verdicts")
        self._keys = {ident: Ed25519PublicKey.from_public_bytes(raw) for ident, raw in public_keys.items()}
        self._cache: OrderedDict[tuple[Hashable, bytes, bytes], bool] = OrderedDict()
        self._cache_max = cache_max

    @classmethod
    def of(cls, signers: Iterable[Ed25519Signer]) -> Ed25519KeyRing:
        """The key ring of these signers' public keys."""
        return cls({s.identity: s.public_key() for s in signers})

    def verify(self, identity: Hashable, payload: bytes, signature: bytes) -> bool:
        """True iff the signature verifies under `identity`'s key."""
        key = self._keys.get(identity)
        if key is None:
            return False
        memo = (identity, signature, payload)
        hit = self._cache.get(memo)
        if hit is not None:
            self._cache.move_to_end(memo)
            return hit
        try:
            key.verify(signature, payload)
            ok = True
        except InvalidSignature:
            ok = False
        if self._cache_max:
            self._cache[memo] = ok
            if len(self._cache) > self._cache_max:
                self._cache.popitem(last=False)
        return ok


class HmacSigner:
    """Simulator-only: HMAC-SHA256 under a secret of this identity."""

    def __init__(self, identity: Hashable, secret: bytes) -> None:
        self._identity = identity
        self._secret = secret

    @property
    def identity(self) -> Hashable:
        """The id this signer signs as."""
        return self._identity

    def sign(self, payload: bytes) -> bytes:
        """A 32-byte HMAC tag."""
        return hmac.digest(self._secret, payload, "sha256")


class HmacKeyRing:
    """Simulator-only: every identity's secret (the simulator is the trusted party)."""

    def __init__(self, secrets: dict[Hashable, bytes]) -> None:
        self._secrets = dict(secrets)

    @classmethod
    def of(cls, signers: Iterable[HmacSigner]) -> HmacKeyRing:
        """The ring of these signers' secrets."""
        return cls({s.identity: s._secret for s in signers})

    def verify(self, identity: Hashable, payload: bytes, signature: bytes) -> bool:
        """True iff the tag is `identity`'s over `payload`."""
        secret = self._secrets.get(identity)
        if secret is None:
            return False
        return hmac.compare_digest(hmac.digest(secret, payload, "sha256"), signature)


def make_signers(identities: Iterable[Hashable], scheme: str, rng: random.Random
                 ) -> tuple[dict[Hashable, Signer], Verifier]:
    """Signers for `identities` and the verifier of all of them; scheme "ed25519" or "hmac"."""
    ids = list(identities)
    if scheme == "ed25519":
        eds = {i: Ed25519Signer.from_seed(i, rng) for i in ids}
        return dict(eds), Ed25519KeyRing.of(eds.values())
    if scheme == "hmac":
        hms = {i: HmacSigner(i, rng.randbytes(32)) for i in ids}
        return dict(hms), HmacKeyRing.of(hms.values())
    raise ConfigError(f"signature scheme {scheme!r}: use 'ed25519' or 'hmac'")
