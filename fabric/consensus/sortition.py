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
from fabric.secure.vrf import PUBLIC_EXPONENT, VrfKeyRing, VrfPrivateKey, VrfPublicKey

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


# The primes VrfPrivateKey.from_seed(b"sim-vrf-pool:<index>", 2048) finds, for the indexes every
# campaign of n = 4 uses: each worker process of a parallel campaign would otherwise spend ~6 s
# finding them again (tests/test_consensus_probft.py checks them against from_seed).
_POOL_PRIMES_2048: dict[int, tuple[str, str]] = {
    0: (
        "f43e7ec6c58838b5b34de29e7dc450ef3ee63f876ac3bba5c73bbb334613dad6334c91fce3f4ec275e18e02dcf76d1c5"
        "7c85130b7fb40c4e8b9c969ecd23c27c258a30c7ac6ab0b7a4929bd3c7ef2b6f42f69cae8e522a128e4d610ec629810a"
        "7ad17fe872a5f39fde5afb058016fcee7b3b8381c5a7601ab5d6f30b7f17edff",
        "ff92a770606561ce7955641e73d959206efe27e0166c43d7add47c01948d4a504f3d830f78d9b611c136225013ca1acd"
        "019f70a673fd82595f86950e073a9f06b694cc9a5244d76615e8c8acf7100073ad27e4757cbcbed0368f742b6b748acf"
        "ece07ad3e8d0e21f4d197b86b005c9061f2a3d73d8c6d9469ffbd522763c3d79"),
    1: (
        "dc159a0fa29d9050470646b7d4380dd66fb5caa6d5e1bcb4d3f77a2328718e195c24e914bd19945fb6e00310a7a2fe28"
        "bf563bfce250f0068eb179027ee349efd835556d6f9cd9d23d748775f9442187a5ab75387b7f9846f242ec273b469c92"
        "239b843953dc16032342944e07466b14c9bad6eeb256df52273051b4bb97e771",
        "c3f3edc4c2d69e0782fab9a363aa6a592473c6f1524d96f2bd85d9501d3d5a5a4fff943fe6d4a84f0abc485467ed7965"
        "90ad909424827463bd525a10d2e98426da0a274a12fd84d3f034b4dda6c1e1423d1ede3ca8ccde3e7fc14d39e5266f87"
        "e25bc060ec53a6316590eaacb9c2d5ce884d1eb89f67396a2629807e884a9f47"),
    2: (
        "e5feb0ef4e992ce4829272b4b006b8dcf2169f9f895cda7b99718ff3560c37eae8b64f2dd1332ae49339d3ccaac0b084"
        "25d1b033aea91fd697703a7556618d9f5532aeae2730d5d3394b1c716a84cb70ab19c68a022ffbb70c0e96832467ac2d"
        "6e24bad9975d23ce68e3842d0416e03f86de1e0086858d27095fdad37bed7605",
        "f22eff7a77a0f6f44c1e1d3ef5e88196ac66b0f9adfebca4360e1783cc1e250f4a4c48d4b727e5d683386ef91846c1dc"
        "aa4bdf1e4195475671dafa16b897ac883c02caaee6aad2a79ad9cbfc80ad37b5ba2aa682e4ac038e7cc9f0c6380fc858"
        "30b09cb5a006e22ff3b96b8113685049d8747ea4b363aa9ae2de6715e5e1d81f"),
    3: (
        "d1205b77c475df8b8a10483bc035d0d391b2d3c9230e018374c2bcdb573dbffe1d996e2457650ffca3cb95ecb11d6332"
        "1e89258fe9dd6f40f905c985514b2d98a6d0a86b182defbb2c0f8f323ce7245faa5563ce65984367d473c9a7439b6e9f"
        "a899caf33413f3d29d8d2d51925c3c70281deccdf4e74f37403487251b1a28af",
        "fa499ca1f24b988abf6bfbce7d0ca52ca0c6895d725919269a9942fb7be7a24ac088b984d85b650bd502cd985b8d39c7"
        "f4922cf2be3f73836ff4cfa42b5840896829f034b74eab4e306bcd7512ee523c2a24deff1a8252854dc6e4f958c7bc67"
        "3de2640d1ddc93c333e537f692bf5814aa3d071d1bd27e95cc429bc9870d283d"),
}


def pooled_rsa_prover(index: int, bits: int) -> RsaVrfProver:
    """The simulator's `index`-th RSA VRF key of `bits` bits, as a prover (never for a deployment)."""
    if not 0 <= index < POOL_KEYS_MAX:
        raise ConfigError(f"VRF key pool index {index}: use 0..{POOL_KEYS_MAX - 1}")
    prover = _POOL.get((index, bits))
    if prover is None:
        primes = _POOL_PRIMES_2048.get(index) if bits == 2048 else None
        if primes is not None:  # the same key as from_seed's, without its ~1.4 s search for primes
            p, q = (int(x, 16) for x in primes)
            key = VrfPrivateKey(p=p, q=q, d=pow(PUBLIC_EXPONENT, -1, math.lcm(p - 1, q - 1)))
        else:
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
