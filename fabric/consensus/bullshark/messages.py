"""Bullshark's messages over a Narwhal-style DAG: headers, votes, certificates, and sync.

A header is a validator's vertex proposal for a round: a batch of client
requests and the digests of at least 2f+1 certificates of the previous round
(its parents). Its digest covers author, round, the batch's digest and the
parents, and the author signs it. A vote is another validator's signature on a
header digest; 2f+1 votes make a certificate, which is the DAG vertex
(Narwhal, EuroSys '22, Section 3.1: "certificate of availability"). Votes and
headers follow fabric.consensus.pbft.messages' conventions (`src`, `signed`,
`digest`), so the simulator's Byzantine behaviours work on them unchanged.
Checkpoints, state fetches and state replies are PBFT's messages, with the
position in the total order as their sequence number.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property

from fabric.consensus.api import Request, is_count, is_node_id, require
from fabric.consensus.canonical import encode
from fabric.consensus.pbft.messages import DIGEST_BYTES, REPLICAS_LIMIT, _Signed, batch_digest

BATCH_LIMIT = 1024
PARENTS_LIMIT = REPLICAS_LIMIT
CERTS_PER_RESPONSE_LIMIT = 1024
DIGESTS_PER_REQUEST_LIMIT = 1024


def _is_digest(x: object) -> bool:
    return type(x) is bytes and len(x) == DIGEST_BYTES


# A header or certificate is immutable and checked when built, so its (deep, costly) check runs
# once: every receiver of a broadcast object asks again. `signed()`'s shallow copy keeps the mark,
# as it keeps the cached payload (only the signature differs, and the receiver verifies that).
_CHECKED = "_checked"


@dataclass(frozen=True, kw_only=True)
class Header(_Signed):
    """Validator `src` proposes `batch` for `round`, on top of `parents` (certificates of round-1)."""

    src: int
    round: int
    batch: tuple[Request, ...]
    parents: tuple[bytes, ...]
    signature: bytes = b""

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise MalformedMessageError if a field is out of range."""
        if self.__dict__.get(_CHECKED):
            return
        self._check_signed()
        require(is_count(self.round) and self.round >= 1, "round >= 1")
        require(type(self.batch) is tuple and len(self.batch) <= BATCH_LIMIT, "batch must be a short tuple")
        for r in self.batch:
            require(type(r) is Request, "a batch holds Requests")
            r.check()
        require(type(self.parents) is tuple and len(self.parents) <= PARENTS_LIMIT, "parents: a short tuple")
        require(all(_is_digest(p) for p in self.parents), "parents are 32-byte digests")
        require(len(set(self.parents)) == len(self.parents), "parents are distinct")
        object.__setattr__(self, _CHECKED, True)

    @cached_property
    def digest(self) -> bytes:
        """What votes sign: author, round, the batch's digest, the parents."""
        return hashlib.sha256(encode(("bullshark-header", self.src, self.round, batch_digest(self.batch),
                                      self.parents))).digest()

    @property
    def author(self) -> int:
        """The proposing validator."""
        return self.src

    def brief(self) -> str:
        """Short text form for scripts."""
        body = ", ".join(r.brief() for r in self.batch) or "empty"
        return f"Header r={self.round} a={self.src} d={self.digest.hex()[:6]} " \
               f"parents={len(self.parents)} [{body}]"


@dataclass(frozen=True, kw_only=True)
class Vote(_Signed):
    """Validator `src` stores the header (author, round, digest) and vouches it is available."""

    src: int
    author: int
    round: int
    digest: bytes
    signature: bytes = b""

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise MalformedMessageError if a field is out of range."""
        self._check_signed()
        require(is_node_id(self.author) and is_count(self.round) and self.round >= 1, "author and round >= 1")
        require(_is_digest(self.digest), "digest must be 32 bytes")

    def brief(self) -> str:
        """Short text form for scripts."""
        return f"Vote r={self.round} a={self.author} d={self.digest.hex()[:6]}"


@dataclass(frozen=True, kw_only=True)
class Certificate:
    """A header with 2f+1 votes for its digest: a vertex of the DAG."""

    header: Header
    votes: tuple[Vote, ...]

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise MalformedMessageError if a field is out of range."""
        if self.__dict__.get(_CHECKED):
            return
        require(type(self.header) is Header, "a certificate holds a Header")
        self.header.check()
        require(type(self.votes) is tuple and len(self.votes) <= REPLICAS_LIMIT, "votes: a short tuple")
        for v in self.votes:
            require(type(v) is Vote, "a certificate holds Votes")
            v.check()
        object.__setattr__(self, _CHECKED, True)

    @property
    def digest(self) -> bytes:
        """The vertex's name: its header's digest."""
        return self.header.digest

    @property
    def round(self) -> int:
        """The vertex's round."""
        return self.header.round

    @property
    def author(self) -> int:
        """The vertex's author."""
        return self.header.src

    def brief(self) -> str:
        """Short text form for scripts."""
        return f"Certificate r={self.round} a={self.author} d={self.digest.hex()[:6]} " \
               f"votes={','.join(str(v.src) for v in self.votes)}"


@dataclass(frozen=True, kw_only=True)
class CertRequest:
    """Send me these certificates (by digest), and your certificates of rounds >= `from_round` (0: none)."""

    src: int
    digests: tuple[bytes, ...]
    from_round: int = 0

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise MalformedMessageError if a field is out of range."""
        require(is_node_id(self.src) and is_count(self.from_round), "src and from_round")
        require(type(self.digests) is tuple and len(self.digests) <= DIGESTS_PER_REQUEST_LIMIT,
                "digests: a short tuple")
        require(all(_is_digest(d) for d in self.digests), "digests are 32 bytes")

    def brief(self) -> str:
        """Short text form for scripts."""
        return f"CertRequest {len(self.digests)} digests from_round={self.from_round}"


@dataclass(frozen=True, kw_only=True)
class CertResponse:
    """Certificates a peer asked for (each is checked on its own)."""

    src: int
    certs: tuple[Certificate, ...]

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise MalformedMessageError if a field is out of range."""
        require(is_node_id(self.src), "src")
        require(type(self.certs) is tuple and len(self.certs) <= CERTS_PER_RESPONSE_LIMIT, "certs: a tuple")
        for c in self.certs:
            require(type(c) is Certificate, "certs holds Certificates")
            c.check()

    def brief(self) -> str:
        """Short text form for scripts."""
        return f"CertResponse {len(self.certs)} certificates"
