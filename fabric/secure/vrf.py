"""RSA-FDH-VRF (RFC 9381, Section 4): a verifiable random function on RSA keys.

    key = VrfPrivateKey.generate()                       # or from_cryptography(rsa key), from_seed(...)
    pi = key.prove(alpha)                                # the proof, k bytes (k = modulus length)
    beta = proof_to_hash(pi)                             # the output, 32 bytes for SHA-256
    beta = key.public_key().verify(alpha, pi)            # the same beta, or VrfProofError

Only the private key's holder can compute `pi`, anyone with the public key can
check it, and `beta` is a function of (key, alpha) alone: RSA-FDH signatures
are unique (the full-domain hash is deterministic and RSA is a permutation), so
the prover cannot grind for a convenient output. That uniqueness is what makes
it a VRF; a hash of an Ed25519 or PSS signature is not one.

The arithmetic follows the RFC step by step, in Python integers:

    prove (4.1):   EM = MGF1(suite || 0x01 || MGF_salt || alpha, k - 1)
                   m = OS2IP(EM);  s = RSASP1(K, m);  pi = I2OSP(s, k)
    hash (4.2):    beta = Hash(suite || 0x02 || pi)
    verify (4.3):  s = OS2IP(pi);  m = RSAVP1((n, e), s);  valid iff m == OS2IP(EM')

with MGF_salt = I2OSP(k, 4) || I2OSP(n, k) (Section 4.4) and MGF1 from RFC 8017
Appendix B.2.1. RSASP1 uses the CRT form of RFC 8017 Section 5.2.1 (two
half-size exponentiations instead of one full one). Keys are RSA keys of the
`cryptography` package; their numbers are read once. The RFC's test vectors
(Appendix A) are in tests/test_vrf.py.

Costs on the 2-core dev machine (measured by tests/test_vrf.py's timing test
and jobs/bench_consensus.py): prove with a 2048-bit key ~2 ms, verify ~0.1 ms.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

from cryptography.hazmat.primitives.asymmetric import rsa

from fabric.secure.errors import SecureChannelError, SecureUsageError
from fabric.secure.memory_only import MemoryOnly

SuiteName = Literal["RSA-FDH-VRF-SHA256", "RSA-FDH-VRF-SHA384", "RSA-FDH-VRF-SHA512"]

PUBLIC_EXPONENT = 65537
MODULUS_BITS_MIN = 1024  # RFC 9381 Section 7.1 asks for at least 2048; 1024 only where tests say so
MODULUS_BITS_DEFAULT = 2048
MODULUS_BITS_MAX = 8192
ALPHA_BYTES_MAX = 1 << 20  # inputs are short (a view and a sequence number); refuse absurd ones
_MGF_DOMAIN_SEPARATOR = b"\x01"  # RFC 9381 Section 4.1 step 1
_PROOF_TO_HASH_DOMAIN_SEPARATOR = b"\x02"  # Section 4.2 step 1
# Miller-Rabin rounds for generated primes: FIPS 186-5 Table B.1 asks for 4-5 rounds
# at 1024-bit primes with random bases; 40 puts the error far below anything else here.
_MR_ROUNDS = 40
_SMALL_PRIMES = tuple(p for p in range(3, 2000, 2) if all(p % d for d in range(3, int(p ** 0.5) + 1, 2)))


class VrfProofError(SecureChannelError):
    """A VRF proof does not verify for this public key and input (or is not a proof at all)."""


@dataclass(frozen=True, kw_only=True)
class VrfSuite:
    """An RSA-FDH-VRF ciphersuite (RFC 9381 Section 4.4)."""

    name: SuiteName
    suite_string: bytes
    hash_name: str
    h_len: int

    def hash(self, data: bytes) -> bytes:
        """Hash(data) of the suite."""
        return hashlib.new(self.hash_name, data).digest()


SUITES: dict[str, VrfSuite] = {
    "RSA-FDH-VRF-SHA256": VrfSuite(name="RSA-FDH-VRF-SHA256", suite_string=b"\x01", hash_name="sha256",
                                   h_len=32),
    "RSA-FDH-VRF-SHA384": VrfSuite(name="RSA-FDH-VRF-SHA384", suite_string=b"\x02", hash_name="sha384",
                                   h_len=48),
    "RSA-FDH-VRF-SHA512": VrfSuite(name="RSA-FDH-VRF-SHA512", suite_string=b"\x03", hash_name="sha512",
                                   h_len=64),
}
SHA256 = SUITES["RSA-FDH-VRF-SHA256"]


def i2osp(x: int, length: int) -> bytes:
    """I2OSP (RFC 8017 Section 4.1): `x` as `length` big-endian bytes."""
    if x < 0 or x >= 1 << (8 * length):
        raise SecureUsageError(f"integer too large for {length} octets")
    return x.to_bytes(length, "big")


def os2ip(octets: bytes) -> int:
    """OS2IP (RFC 8017 Section 4.2)."""
    return int.from_bytes(octets, "big")


def mgf1(seed: bytes, mask_len: int, suite: VrfSuite) -> bytes:
    """MGF1 (RFC 8017 Appendix B.2.1) with the suite's hash."""
    if mask_len > (1 << 32) * suite.h_len:
        raise SecureUsageError("mask too long")
    blocks = [suite.hash(seed + i2osp(counter, 4)) for counter in range(-(-mask_len // suite.h_len))]
    return b"".join(blocks)[:mask_len]


def _encoded_message(n: int, k: int, alpha: bytes, suite: VrfSuite) -> int:
    """OS2IP(MGF1(suite_string || 0x01 || MGF_salt || alpha, k - 1)): steps 1-3 of prove and verify."""
    if type(alpha) is not bytes or len(alpha) > ALPHA_BYTES_MAX:
        raise SecureUsageError(f"alpha must be bytes of at most {ALPHA_BYTES_MAX}")
    mgf_salt = i2osp(k, 4) + i2osp(n, k)
    return os2ip(mgf1(suite.suite_string + _MGF_DOMAIN_SEPARATOR + mgf_salt + alpha, k - 1, suite))


def proof_to_hash(pi: bytes, suite: VrfSuite = SHA256) -> bytes:
    """RSAFDHVRF_proof_to_hash (Section 4.2): beta = Hash(suite_string || 0x02 || pi).

    Call it only on a proof that verified (or that this node made): it checks nothing.
    """
    return suite.hash(suite.suite_string + _PROOF_TO_HASH_DOMAIN_SEPARATOR + pi)


class VrfPublicKey:
    """An RSA public key (n, e) used to verify VRF proofs; safe to publish."""

    __slots__ = ("_e", "_k", "_n")

    def __init__(self, n: int, e: int) -> None:
        if type(n) is not int or type(e) is not int or n.bit_length() < MODULUS_BITS_MIN or \
                n.bit_length() > MODULUS_BITS_MAX or n % 2 == 0 or not 3 <= e < n or e % 2 == 0:
            raise VrfProofError("not an RSA public key of 1024..8192 bits with an odd exponent")
        self._n, self._e = n, e
        self._k = (n.bit_length() + 7) // 8

    @classmethod
    def from_cryptography(cls, key: rsa.RSAPublicKey) -> VrfPublicKey:
        """The VRF public key of a `cryptography` RSA public key."""
        numbers = key.public_numbers()
        return cls(numbers.n, numbers.e)

    @classmethod
    def from_bytes(cls, raw: bytes) -> VrfPublicKey:
        """Parse `to_bytes()`; VrfProofError if it is not a key."""
        if type(raw) is not bytes or len(raw) < 8:
            raise VrfProofError("a VRF public key is I2OSP(k, 4) || I2OSP(e, 4) || I2OSP(n, k)")
        k, e = os2ip(raw[:4]), os2ip(raw[4:8])
        if len(raw) != 8 + k:
            raise VrfProofError("VRF public key length does not match its modulus length")
        return cls(os2ip(raw[8:]), e)

    def to_bytes(self) -> bytes:
        """A self-delimiting encoding: k, e and n."""
        return i2osp(self._k, 4) + i2osp(self._e, 4) + i2osp(self._n, self._k)

    @property
    def n(self) -> int:
        """The modulus."""
        return self._n

    @property
    def e(self) -> int:
        """The public exponent."""
        return self._e

    @property
    def k(self) -> int:
        """Length of the modulus in octets (and of every proof)."""
        return self._k

    def verify(self, alpha: bytes, pi: bytes, suite: VrfSuite = SHA256) -> bytes:
        """RSAFDHVRF_verify (Section 4.3): beta if `pi` proves `alpha` under this key, else VrfProofError."""
        if type(pi) is not bytes or len(pi) != self._k:
            raise VrfProofError(f"a proof is {self._k} octets for this key")
        s = os2ip(pi)
        if s >= self._n:  # RSAVP1's range check (RFC 8017 Section 5.2.2 step 1)
            raise VrfProofError("signature representative out of range")
        m = pow(s, self._e, self._n)
        if not hmac.compare_digest(i2osp(m, self._k),
                                   i2osp(_encoded_message(self._n, self._k, alpha, suite), self._k)):
            raise VrfProofError("proof does not verify")
        return proof_to_hash(pi, suite)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VrfPublicKey) and (self._n, self._e) == (other._n, other._e)

    def __hash__(self) -> int:
        return hash((self._n, self._e))

    def __repr__(self) -> str:
        return f"VrfPublicKey(bits={self._n.bit_length()}, n={self._n:x}"[:48] + "...)"


class VrfPrivateKey(MemoryOnly):
    """An RSA private key used to prove; stays in this process (cannot be pickled or copied)."""

    __slots__ = ("_d", "_dp", "_dq", "_p", "_public", "_q", "_qinv")

    def __init__(self, *, p: int, q: int, d: int, e: int = PUBLIC_EXPONENT) -> None:
        n = p * q
        if not MODULUS_BITS_MIN <= n.bit_length() <= MODULUS_BITS_MAX:
            raise SecureUsageError(f"an RSA modulus of {MODULUS_BITS_MIN}..{MODULUS_BITS_MAX} bits is needed")
        public = VrfPublicKey(n, e)
        if p == q or (e * d) % math.lcm(p - 1, q - 1) != 1:
            raise SecureUsageError("p, q, d and e do not form an RSA key")
        self._p, self._q, self._d = p, q, d
        # CRT parameters (RFC 8017 Section 3.2, second representation).
        self._dp, self._dq = d % (p - 1), d % (q - 1)
        self._qinv = pow(q, -1, p)
        self._public = public

    @classmethod
    def from_cryptography(cls, key: rsa.RSAPrivateKey) -> VrfPrivateKey:
        """The VRF key of a `cryptography` RSA private key."""
        numbers = key.private_numbers()
        return cls(p=numbers.p, q=numbers.q, d=numbers.d, e=numbers.public_numbers.e)

    @classmethod
    def generate(cls, bits: int = MODULUS_BITS_DEFAULT) -> VrfPrivateKey:
        """A new key from the operating system's CSPRNG (via `cryptography`)."""
        _check_bits(bits)
        return cls.from_cryptography(rsa.generate_private_key(public_exponent=PUBLIC_EXPONENT, key_size=bits))

    @classmethod
    def from_seed(cls, seed: bytes, bits: int = MODULUS_BITS_DEFAULT) -> VrfPrivateKey:
        """A key derived deterministically from `seed`: for simulations that must replay, never for real.

        Primes come from an HMAC-SHA256 counter-mode stream over the seed, with the
        top two bits set (so n has exactly `bits` bits), checked by trial division
        and Miller-Rabin with bases from the same stream. The key is rebuilt through
        `cryptography`, which checks it is consistent.
        """
        _check_bits(bits)
        stream = _Drbg(seed)
        e = PUBLIC_EXPONENT
        while True:
            p = _random_prime(stream, bits // 2, e)
            q = _random_prime(stream, bits - bits // 2, e)
            if p != q and (p * q).bit_length() == bits:
                break
        d = pow(e, -1, math.lcm(p - 1, q - 1))
        numbers = rsa.RSAPrivateNumbers(p=p, q=q, d=d, dmp1=d % (p - 1), dmq1=d % (q - 1),
                                        iqmp=pow(q, -1, p), public_numbers=rsa.RSAPublicNumbers(e, p * q))
        return cls.from_cryptography(numbers.private_key())

    def public_key(self) -> VrfPublicKey:
        """The matching public key."""
        return self._public

    def _rsasp1(self, m: int) -> int:
        """RSASP1 with CRT (RFC 8017 Section 5.2.1 step 2.b)."""
        n = self._public.n
        assert 0 <= m < n, "message representative out of range"
        s1 = pow(m, self._dp, self._p)
        s2 = pow(m, self._dq, self._q)
        h = ((s1 - s2) * self._qinv) % self._p
        return s2 + self._q * h

    def prove(self, alpha: bytes, suite: VrfSuite = SHA256) -> bytes:
        """RSAFDHVRF_prove (Section 4.1): the proof pi for `alpha`, k octets."""
        pub = self._public
        m = _encoded_message(pub.n, pub.k, alpha, suite)  # < 2^(8(k-1)) <= n: in range by construction
        s = self._rsasp1(m)
        assert pow(s, pub.e, pub.n) == m, "CRT signature does not verify: corrupt key"  # RFC 8017 5.2.1 note
        return i2osp(s, pub.k)

    def prove_hash(self, alpha: bytes, suite: VrfSuite = SHA256) -> tuple[bytes, bytes]:
        """(beta, pi) for `alpha`."""
        pi = self.prove(alpha, suite)
        return proof_to_hash(pi, suite), pi

    def __repr__(self) -> str:
        return f"VrfPrivateKey(bits={self._public.n.bit_length()})"


def _check_bits(bits: int) -> None:
    if type(bits) is not int or not MODULUS_BITS_MIN <= bits <= MODULUS_BITS_MAX or bits % 2:
        raise SecureUsageError(f"RSA modulus bits={bits}: use an even number in "
                               f"{MODULUS_BITS_MIN}..{MODULUS_BITS_MAX}")


class _Drbg:
    """A deterministic byte stream: HMAC-SHA256(seed, counter) blocks (for from_seed only)."""

    def __init__(self, seed: bytes) -> None:
        self._key = hashlib.sha256(b"novacron-fabric/vrf/from_seed " + bytes(seed)).digest()
        self._counter = 0

    def integer(self, bits: int) -> int:
        """A uniform integer of `bits` bits (the top bit may be 0)."""
        out = bytearray()
        while len(out) * 8 < bits:
            self._counter += 1
            out += hmac.digest(self._key, self._counter.to_bytes(8, "big"), "sha256")
        return int.from_bytes(out, "big") >> (len(out) * 8 - bits)


def _is_probable_prime(c: int, stream: _Drbg) -> bool:
    for p in _SMALL_PRIMES:
        if c % p == 0:
            return c == p
    d, r = c - 1, 0
    while d % 2 == 0:
        d //= 2
        r += 1
    for _ in range(_MR_ROUNDS):
        a = 2 + stream.integer(c.bit_length()) % (c - 3)
        x = pow(a, d, c)
        if x in (1, c - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, c)
            if x == c - 1:
                break
        else:
            return False
    return True


def _random_prime(stream: _Drbg, bits: int, e: int) -> int:
    while True:
        c = stream.integer(bits) | (3 << (bits - 2)) | 1  # top two bits set, odd
        if math.gcd(c - 1, e) == 1 and _is_probable_prime(c, stream):
            return c


class VrfKeyRing:
    """VRF public keys by identity, with a bounded memo of verdicts (as the signature key rings have)."""

    def __init__(self, keys: dict[object, VrfPublicKey], *, cache_max: int = 8192,
                 suite: VrfSuite = SHA256) -> None:
        if not 0 <= cache_max <= 1_000_000:
            raise SecureUsageError(f"cache_max={cache_max}: use 0..1000000 verdicts")
        self._keys = dict(keys)
        self._suite = suite
        self._cache: OrderedDict[tuple[object, bytes, bytes], bytes | None] = OrderedDict()
        self._cache_max = cache_max

    def add(self, identity: object, key: VrfPublicKey) -> bool:
        """Learn (or replace) `identity`'s key; True if it is new to the ring. Verdicts under an
        older key are forgotten."""
        if type(key) is not VrfPublicKey:
            raise SecureUsageError("a VRF key ring holds VrfPublicKeys")
        old = self._keys.get(identity)
        if old == key:
            return False
        self._keys[identity] = key
        if old is not None:
            self._cache = OrderedDict((m, v) for m, v in self._cache.items() if m[0] != identity)
        return True

    def knows(self, identity: object) -> bool:
        """Does the ring hold a key for `identity`?"""
        return identity in self._keys

    def verify(self, identity: object, alpha: bytes, pi: bytes) -> bytes | None:
        """beta if `pi` is `identity`'s proof for `alpha`; None otherwise (unknown identity included)."""
        key = self._keys.get(identity)
        if key is None:
            return None
        memo = (identity, alpha, pi)
        if memo in self._cache:
            self._cache.move_to_end(memo)
            return self._cache[memo]
        try:
            beta: bytes | None = key.verify(alpha, pi, self._suite)
        except (VrfProofError, SecureUsageError):
            beta = None
        if self._cache_max:
            self._cache[memo] = beta
            if len(self._cache) > self._cache_max:
                self._cache.popitem(last=False)
        return beta
