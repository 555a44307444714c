"""Verifiable random sortition: which replicas a vote goes to, chosen by a VRF everyone can check.

A replica proves its VRF on an input that names the instance (protocol, view,
sequence number, phase); the output `beta` picks its sample deterministically:
every other replica j gets the rank SHA-256(beta || j), and the `size` lowest
ranks are the sample. A receiver verifies the proof that travels with the vote,
recomputes the sample and counts the vote only if it is in it, so a Byzantine
replica can neither choose its sample nor send one vote to a victim it was not
drawn for (ProBFT, Avelas et al. PODC '24, Section 4: "VRF-based sample selection").

Two implementations behind one interface, as for signatures:

- RSA-FDH-VRF (RFC 9381), `RsaVrfProver` with fabric.secure's `VrfKeyRing`: the
  real thing. Pure-Python RSA makes a 2048-bit prove cost milliseconds.
- `HmacVrf`: for the simulator only. pi = HMAC-SHA256(secret, alpha), beta =
  SHA-256(pi); the ring holds every secret, which is sound only where the ring is
  the simulator's trusted oracle (as `HmacKeyRing` is for signatures). A
  Byzantine wrapper gets its own prover, never the ring, so it cannot compute
  anyone else's samples ahead of time or forge their proofs.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import math
import random
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from typing import Protocol

from fabric.consensus.canonical import encode
from fabric.errors import ConfigError
from fabric.secure.vrf import VrfKeyRing, VrfPrivateKey, VrfPublicKey

# Own proofs kept by a prover: the current window of (view, seq, phase) inputs.
PROOFS_KEPT_MAX = 1024
# Verdicts of the HMAC ring (the RSA ring has its own memo).
HMAC_VERDICTS_MAX = 8192


class VrfProver(Protocol):
    """Proves the VRF as one identity."""

    @property
    def identity(self) -> Hashable:
        """The id it proves as."""
        ...

    def prove(self, alpha: bytes) -> tuple[bytes, bytes]:
        """(beta, pi) for `alpha`."""
        ...


class VrfVerifier(Protocol):
    """Checks VRF proofs against the keys of known identities."""

    def verify(self, identity: Hashable, alpha: bytes, pi: bytes) -> bytes | None:
        """beta if `pi` is `identity`'s proof for `alpha`, else None."""
        ...


@functools.lru_cache(maxsize=4096)  # a pure function, asked for again by every receiver
def sample_alpha(protocol: str, view: int, seq: int, phase: str) -> bytes:
    """The VRF input of one vote: it binds the protocol, the view, the sequence number and the phase."""
    return encode(("sortition", protocol, view, seq, phase))


def sample_of(beta: bytes, src: int, n: int, size: int) -> frozenset[int]:
    """The `size` replicas (of 0..n-1, `src` excluded) with the lowest SHA-256(beta || j)."""
    assert 0 <= size <= n - 1, (size, n)
    ranked = sorted((hashlib.sha256(beta + j.to_bytes(4, "big")).digest(), j) for j in range(n) if j != src)
    return frozenset(j for _, j in ranked[:size])


def sample_size(n: int, o: float) -> int:
    """ceil(o * sqrt(n)), at most n - 1 (the other replicas)."""
    return min(n - 1, math.ceil(o * math.sqrt(n)))


class RsaVrfProver:
    """RSA-FDH-VRF proofs as `identity`, memoized (a vote's proof is needed again for retransmissions)."""

    def __init__(self, identity: Hashable, key: VrfPrivateKey, *, proofs_kept_max: int = PROOFS_KEPT_MAX
                 ) -> None:
        self._identity = identity
        self._key = key
        self._memo: OrderedDict[bytes, tuple[bytes, bytes]] = OrderedDict()
        self._memo_max = proofs_kept_max

    @property
    def public_key(self) -> VrfPublicKey:
        """The key that verifies this prover's proofs."""
        return self._key.public_key()

    @property
    def identity(self) -> Hashable:
        """The id it proves as."""
        return self._identity

    def prove(self, alpha: bytes) -> tuple[bytes, bytes]:
        """(beta, pi) by RFC 9381 Section 4."""
        hit = self._memo.get(alpha)
        if hit is not None:
            self._memo.move_to_end(alpha)
        else:
            hit = self._memo[alpha] = self._key.prove_hash(alpha)
            if len(self._memo) > self._memo_max:
                self._memo.popitem(last=False)
        return hit


class HmacVrfProver:
    """The simulator's stand-in prover (see the module doc)."""

    def __init__(self, identity: Hashable, secret: bytes) -> None:
        self._identity = identity
        self._secret = secret

    @property
    def identity(self) -> Hashable:
        """The id it proves as."""
        return self._identity

    def prove(self, alpha: bytes) -> tuple[bytes, bytes]:
        """pi = HMAC(secret, alpha); beta = SHA-256(pi)."""
        pi = hmac.digest(self._secret, alpha, "sha256")
        return hashlib.sha256(b"hmac-vrf" + pi).digest(), pi


class HmacVrfRing:
    """Every identity's HMAC-VRF secret: the simulator's trusted oracle."""

    def __init__(self, secrets: dict[Hashable, bytes]) -> None:
        self._secrets = dict(secrets)

    def verify(self, identity: Hashable, alpha: bytes, pi: bytes) -> bytes | None:
        """beta if pi is identity's tag on alpha."""
        secret = self._secrets.get(identity)
        if secret is None or type(pi) is not bytes:
            return None
        if not hmac.compare_digest(hmac.digest(secret, alpha, "sha256"), pi):
            return None
        return hashlib.sha256(b"hmac-vrf" + pi).digest()


# Simulated RSA keys: deterministic from a pool index, generated once per process
# (key generation in pure Python costs ~1 s of CPU at 2048 bits), each with one
# prover whose memo of proofs lives as long: a proof is a pure function of key and
# input, and runs ask for the same (view, seq, phase) inputs, so the simulator's
# real-VRF runs recompute few proofs but verify every one. The pool is a pure
# function of (index, bits), so runs replay exactly.
_POOL: dict[tuple[int, int], RsaVrfProver] = {}
POOL_KEYS_MAX = 64
POOL_PROOFS_KEPT_MAX = 16_384  # per pooled key: every input of a long simulated run


def pooled_rsa_prover(index: int, bits: int) -> RsaVrfProver:
    """The simulator's `index`-th RSA VRF key of `bits` bits, as a prover (never for a deployment)."""
    if not 0 <= index < POOL_KEYS_MAX:
        raise ConfigError(f"VRF key pool index {index}: use 0..{POOL_KEYS_MAX - 1}")
    prover = _POOL.get((index, bits))
    if prover is None:
        key = VrfPrivateKey.from_seed(f"sim-vrf-pool:{index}".encode(), bits)
        prover = _POOL[(index, bits)] = RsaVrfProver(index, key, proofs_kept_max=POOL_PROOFS_KEPT_MAX)
    return prover


def make_vrfs(identities: Iterable[int], scheme: str, rng: random.Random, *, rsa_bits: int = 2048
              ) -> tuple[dict[int, VrfProver], VrfVerifier]:
    """Provers for `identities` and the verifier of all of them; scheme "rsa" or "hmac"."""
    ids = list(identities)
    if scheme == "rsa":
        provers = {i: pooled_rsa_prover(i, rsa_bits) for i in ids}
        return dict(provers), VrfKeyRing({i: p.public_key for i, p in provers.items()})
    if scheme == "hmac":
        secrets = {i: rng.randbytes(32) for i in ids}
        return {i: HmacVrfProver(i, s) for i, s in secrets.items()}, HmacVrfRing(secrets)
    raise ConfigError(f"VRF scheme {scheme!r}: use 'rsa' or 'hmac'")
