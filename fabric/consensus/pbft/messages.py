"""PBFT's messages (Castro and Liskov, OSDI '99 / TOCS '02): signed, frozen, checked when built.

Every replica message carries its signer `src` and an Ed25519 (or, in the
simulator, HMAC) signature over `payload`, the canonical bytes of every other
field. A PrePrepare signs the batch's digest, not the batch: receivers check
that the batch hashes to it. View changes carry other replicas' signed messages
as proof, so they can be checked by anyone, not just their first receiver.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

from fabric.consensus.api import Request, is_count, is_node_id, require
from fabric.consensus.canonical import encode
from fabric.consensus.signing import Signer, Verifier

DIGEST_BYTES = 32
# Ceilings on what a peer may send, whatever our config says (configs stay below).
BATCH_LIMIT = 1024
REPLICAS_LIMIT = 256
CERTS_LIMIT = 4096

NULL_DIGEST = hashlib.sha256(b"pbft null request").digest()


def request_digest(request: Request) -> bytes:
    """SHA-256 of what the client signed."""
    return hashlib.sha256(request.signed_bytes).digest()


def batch_digest(batch: tuple[Request, ...]) -> bytes:
    """The digest a PrePrepare signs: of its requests in order; NULL_DIGEST for the null request."""
    if not batch:
        return NULL_DIGEST
    h = hashlib.sha256(b"pbft batch")
    for r in batch:
        h.update(request_digest(r))
    return h.digest()


# Per message class: the names of the fields its payload covers, in declaration order.
_PAYLOAD_FIELDS: dict[type, tuple[str, ...]] = {}


def _is_digest(x: Any) -> bool:
    return type(x) is bytes and len(x) == DIGEST_BYTES


class _Signed:
    """Mixin: canonical payload (every field but the signature and `_unsigned`), sign, verify."""

    _unsigned: ClassVar[tuple[str, ...]] = ()
    src: int
    signature: bytes

    @cached_property
    def payload(self) -> bytes:
        """The bytes the signature covers."""
        cls = type(self)
        names = _PAYLOAD_FIELDS.get(cls)
        if names is None:  # per class, once: dataclasses.fields() is slow next to one encoding
            skip = ("signature", *self._unsigned)
            names = tuple(f.name for f in dataclasses.fields(self) if f.name not in skip)
            _PAYLOAD_FIELDS[cls] = names
        return encode((cls.__name__, tuple(getattr(self, name) for name in names)))

    def signed(self, signer: Signer) -> Any:
        """A copy signed by `signer` (whose identity must be `src`)."""
        assert signer.identity == self.src, (signer.identity, self.src)
        # A shallow copy keeps the cached payload (computed first, so the copy has it too) and
        # skips re-checking fields that were checked when this value was built; only the
        # signature changes. (What copy.copy does for these plain dataclasses, without its
        # generic protocol.)
        payload = self.payload
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        object.__setattr__(new, "signature", signer.sign(payload))
        new.__dict__.pop("_canonical", None)
        return new

    def __canonical__(self) -> bytes:
        """Canonical bytes of the whole signed message (payload and signature), cached."""
        raw = self.__dict__.get("_canonical")
        if raw is None:
            raw = encode((self.payload, self.signature))
            object.__setattr__(self, "_canonical", raw)
        return raw

    def verify(self, verifier: Verifier) -> bool:
        """Does the signature verify under `src`'s key?"""
        return verifier.verify(self.src, self.payload, self.signature)

    def _check_signed(self) -> None:
        require(is_node_id(self.src), "src must be a node id")
        require(type(self.signature) is bytes and len(self.signature) <= 128, "signature must be bytes")


@dataclass(frozen=True, kw_only=True)
class PrePrepare(_Signed):
    """The primary of `view` assigns sequence number `seq` to `batch` (whose digest is `digest`)."""

    _unsigned: ClassVar[tuple[str, ...]] = ("batch",)
    src: int
    view: int
    seq: int
    digest: bytes
    batch: tuple[Request, ...]
    signature: bytes = b""

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise MalformedMessageError if a field is out of range."""
        self._check_signed()
        require(is_count(self.view) and is_count(self.seq) and self.seq >= 1, "view >= 0 and seq >= 1")
        require(_is_digest(self.digest), "digest must be 32 bytes")
        require(type(self.batch) is tuple and len(self.batch) <= BATCH_LIMIT, "batch must be a short tuple")
        for r in self.batch:
            require(type(r) is Request, "a batch holds Requests")
            r.check()

    def brief(self) -> str:
        """Short text form for scripts."""
        body = "null" if not self.batch else ", ".join(r.brief() for r in self.batch)
        return f"PrePrepare v={self.view} n={self.seq} d={self.digest.hex()[:6]} [{body}]"


@dataclass(frozen=True, kw_only=True)
class Prepare(_Signed):
    """A backup accepted the PrePrepare for (view, seq, digest)."""

    src: int
    view: int
    seq: int
    digest: bytes
    signature: bytes = b""

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise MalformedMessageError if a field is out of range."""
        self._check_signed()
        require(is_count(self.view) and is_count(self.seq) and self.seq >= 1, "view >= 0 and seq >= 1")
        require(_is_digest(self.digest), "digest must be 32 bytes")

    def brief(self) -> str:
        """Short text form for scripts."""
        return f"Prepare v={self.view} n={self.seq} d={self.digest.hex()[:6]}"


@dataclass(frozen=True, kw_only=True)
class Commit(_Signed):
    """A replica has a prepared certificate for (view, seq, digest)."""

    src: int
    view: int
    seq: int
    digest: bytes
    signature: bytes = b""

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise MalformedMessageError if a field is out of range."""
        self._check_signed()
        require(is_count(self.view) and is_count(self.seq) and self.seq >= 1, "view >= 0 and seq >= 1")
        require(_is_digest(self.digest), "digest must be 32 bytes")

    def brief(self) -> str:
        """Short text form for scripts."""
        return f"Commit v={self.view} n={self.seq} d={self.digest.hex()[:6]}"


@dataclass(frozen=True, kw_only=True)
class Checkpoint(_Signed):
    """After executing `seq`, the replica's state has digest `state_digest`."""

    src: int
    seq: int
    state_digest: bytes
    signature: bytes = b""

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise MalformedMessageError if a field is out of range."""
        self._check_signed()
        require(is_count(self.seq) and self.seq >= 1, "seq >= 1")
        require(_is_digest(self.state_digest), "state_digest must be 32 bytes")

    def brief(self) -> str:
        """Short text form for scripts."""
        return f"Checkpoint n={self.seq} d={self.state_digest.hex()[:6]}"


@dataclass(frozen=True, kw_only=True)
class PreparedCert:
    """Proof that a batch prepared: its PrePrepare and 2f matching Prepares from backups."""

    pre_prepare: PrePrepare
    prepares: tuple[Prepare, ...]

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise MalformedMessageError if a field is out of range."""
        require(type(self.pre_prepare) is PrePrepare, "a certificate holds a PrePrepare")
        self.pre_prepare.check()
        require(type(self.prepares) is tuple and len(self.prepares) <= REPLICAS_LIMIT, "prepares: a tuple")
        for p in self.prepares:
            require(type(p) is Prepare, "a certificate holds Prepares")
            p.check()

    @property
    def seq(self) -> int:
        """The certified sequence number."""
        return self.pre_prepare.seq

    @property
    def view(self) -> int:
        """The view it prepared in."""
        return self.pre_prepare.view


@dataclass(frozen=True, kw_only=True)
class ViewChange(_Signed):
    """Replica `src` moves to `view`: its stable checkpoint (with proof) and what prepared after it."""

    src: int
    view: int
    stable_seq: int
    checkpoint_proof: tuple[Checkpoint, ...]
    prepared: tuple[PreparedCert, ...]
    signature: bytes = b""

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise MalformedMessageError if a field is out of range."""
        self._check_signed()
        require(is_count(self.view) and self.view >= 1 and is_count(self.stable_seq),
                "view >= 1, stable_seq >= 0")
        require(type(self.checkpoint_proof) is tuple and len(self.checkpoint_proof) <= REPLICAS_LIMIT,
                "checkpoint_proof: a tuple")
        for c in self.checkpoint_proof:
            require(type(c) is Checkpoint, "checkpoint_proof holds Checkpoints")
            c.check()
        require(type(self.prepared) is tuple and len(self.prepared) <= CERTS_LIMIT, "prepared: a tuple")
        for cert in self.prepared:
            require(type(cert) is PreparedCert, "prepared holds PreparedCerts")
            cert.check()

    def brief(self) -> str:
        """Short text form for scripts."""
        certs = ",".join(f"{c.seq}@v{c.view}" for c in self.prepared) or "-"
        return f"ViewChange v={self.view} stable={self.stable_seq} prepared={certs}"


@dataclass(frozen=True, kw_only=True)
class NewView(_Signed):
    """The primary of `view` starts it: 2f+1 ViewChanges and the PrePrepares they imply."""

    src: int
    view: int
    view_changes: tuple[ViewChange, ...]
    pre_prepares: tuple[PrePrepare, ...]
    signature: bytes = b""

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise MalformedMessageError if a field is out of range."""
        self._check_signed()
        require(is_count(self.view) and self.view >= 1, "view >= 1")
        require(type(self.view_changes) is tuple and len(self.view_changes) <= REPLICAS_LIMIT,
                "view_changes: a tuple")
        for vc in self.view_changes:
            require(type(vc) is ViewChange, "view_changes holds ViewChanges")
            vc.check()
        require(type(self.pre_prepares) is tuple and len(self.pre_prepares) <= CERTS_LIMIT,
                "pre_prepares: a tuple")
        for pp in self.pre_prepares:
            require(type(pp) is PrePrepare, "pre_prepares holds PrePrepares")
            pp.check()

    def brief(self) -> str:
        """Short text form for scripts."""
        vcs = ",".join(str(vc.src) for vc in self.view_changes)
        pps = ",".join(f"{pp.seq}{'' if pp.batch else '(null)'}" for pp in self.pre_prepares) or "-"
        return f"NewView v={self.view} from={vcs} pre-prepares={pps}"


@dataclass(frozen=True, kw_only=True)
class FetchState(_Signed):
    """Send me your stable checkpoint at or after `seq`: I fell behind the garbage collector."""

    src: int
    seq: int
    signature: bytes = b""

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise MalformedMessageError if a field is out of range."""
        self._check_signed()
        require(is_count(self.seq) and self.seq >= 1, "seq >= 1")

    def brief(self) -> str:
        """Short text form for scripts."""
        return f"FetchState n={self.seq}"


@dataclass(frozen=True, kw_only=True)
class StateReply(_Signed):
    """A stable checkpoint's state with its proof: 2f+1 Checkpoints whose digest it must hash to."""

    src: int
    seq: int
    proof: tuple[Checkpoint, ...]
    snapshot: Any
    signature: bytes = b""

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise MalformedMessageError if a field is out of range."""
        self._check_signed()
        require(is_count(self.seq) and self.seq >= 1, "seq >= 1")
        require(type(self.proof) is tuple and len(self.proof) <= REPLICAS_LIMIT, "proof: a tuple")
        for c in self.proof:
            require(type(c) is Checkpoint, "proof holds Checkpoints")
            c.check()

    def brief(self) -> str:
        """Short text form for scripts."""
        return f"StateReply n={self.seq}"


PbftMessage = PrePrepare | Prepare | Commit | Checkpoint | ViewChange | NewView | FetchState | StateReply
MESSAGE_TYPES = (PrePrepare, Prepare, Commit, Checkpoint, ViewChange, NewView, FetchState, StateReply)
