"""ProBFT's messages: PBFT's, with a VRF proof on every vote, and the records of its execution journal.

A ProBFT Prepare or Commit is PBFT's plus `proof`, the sender's VRF proof for
(view, seq, phase): receivers recompute the sender's sample from it and count
the vote only if they are in it. The proof is inside the signed payload, and the
class name is too, so a ProBFT vote can never pass for a PBFT one. A prepared
certificate holds the PrePrepare and q Prepares, each with its proof, so anyone
can check that the holder was in each sender's sample (Avelas et al., Section 4.3).
"""

from __future__ import annotations

from dataclasses import dataclass

from fabric.consensus.api import is_count, require
from fabric.consensus.pbft.messages import (
    CERTS_LIMIT,
    REPLICAS_LIMIT,
    Checkpoint,
    Commit,
    NewView,
    Prepare,
    PreparedCert,
    PrePrepare,
    ViewChange,
    _Signed,
)

PROOF_BYTES_MAX = 1024  # an RSA-8192 VRF proof; the simulator's HMAC stand-in is 32


def _check_proof(proof: object) -> None:
    require(type(proof) is bytes and 0 < len(proof) <= PROOF_BYTES_MAX, "proof must be non-empty bytes")


@dataclass(frozen=True, kw_only=True)
class ProPrepare(Prepare):
    """A replica accepted the PrePrepare for (view, seq, digest); sent to its VRF sample."""

    proof: bytes = b""

    def check(self) -> None:
        """Raise MalformedMessageError if a field is out of range."""
        super().check()
        _check_proof(self.proof)


@dataclass(frozen=True, kw_only=True)
class ProCommit(Commit):
    """A replica prepared (view, seq, digest); sent to its VRF sample."""

    proof: bytes = b""

    def check(self) -> None:
        """Raise MalformedMessageError if a field is out of range."""
        super().check()
        _check_proof(self.proof)


@dataclass(frozen=True, kw_only=True)
class ProPreparedCert(PreparedCert):
    """A PrePrepare and q matching ProPrepares the holder received (its own among them)."""

    def check(self) -> None:
        """Raise MalformedMessageError if a field is out of range."""
        require(type(self.pre_prepare) is PrePrepare, "a certificate holds a PrePrepare")
        self.pre_prepare.check()
        require(type(self.prepares) is tuple and len(self.prepares) <= REPLICAS_LIMIT, "prepares: a tuple")
        for p in self.prepares:
            require(type(p) is ProPrepare, "a ProBFT certificate holds ProPrepares")
            p.check()


@dataclass(frozen=True, kw_only=True)
class ProViewChange(ViewChange):
    """PBFT's ViewChange carrying ProBFT certificates."""

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
            require(type(cert) is ProPreparedCert, "prepared holds ProPreparedCerts")
            cert.check()


@dataclass(frozen=True, kw_only=True)
class ProNewView(NewView):
    """PBFT's NewView built from ProViewChanges."""

    def check(self) -> None:
        """Raise MalformedMessageError if a field is out of range."""
        self._check_signed()
        require(is_count(self.view) and self.view >= 1, "view >= 1")
        require(type(self.view_changes) is tuple and len(self.view_changes) <= REPLICAS_LIMIT,
                "view_changes: a tuple")
        for vc in self.view_changes:
            require(type(vc) is ProViewChange, "view_changes holds ProViewChanges")
            vc.check()
        require(type(self.pre_prepares) is tuple and len(self.pre_prepares) <= CERTS_LIMIT,
                "pre_prepares: a tuple")
        for pp in self.pre_prepares:
            require(type(pp) is PrePrepare, "pre_prepares holds PrePrepares")
            pp.check()


@dataclass(frozen=True, kw_only=True)
class Decision:
    """Proof that replica `src` decided a sequence number: the PrePrepare and q ProCommits it counted.

    Not signed itself: every part is. A replica that fell behind (a view change it
    was not part of, Commits it lost) executes from it, after checking, as `src`
    would have, that each Commit's VRF sample held `src` (a Commit from `src` itself
    counts too). ProBFT clients need 2f+1 answers, so laggards must catch up.
    """

    src: int
    pre_prepare: PrePrepare
    commits: tuple[ProCommit, ...]

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise MalformedMessageError if a field is out of range."""
        require(is_count(self.src), "src must be a node id")
        require(type(self.pre_prepare) is PrePrepare, "a decision holds a PrePrepare")
        self.pre_prepare.check()
        require(type(self.commits) is tuple and len(self.commits) <= REPLICAS_LIMIT, "commits: a tuple")
        for c in self.commits:
            require(type(c) is ProCommit, "a decision holds ProCommits")
            c.check()

    @property
    def seq(self) -> int:
        """The decided sequence number."""
        return self.pre_prepare.seq

    def brief(self) -> str:
        """Short text form for scripts."""
        return f"Decision n={self.seq} v={self.pre_prepare.view} d={self.pre_prepare.digest.hex()[:6]} " \
               f"commits={','.join(str(c.src) for c in self.commits)}"


@dataclass(frozen=True, kw_only=True)
class FetchDecisions(_Signed):
    """Send me your Decisions from `seq` on: my request timer expired with the primary at work, and
    the votes that would have decided `seq` here missed me (samples are random; some do)."""

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
        return f"FetchDecisions n={self.seq}"


@dataclass(frozen=True, kw_only=True)
class Executed:
    """Journal record: this replica executed the batch with `digest` at `seq` (persisted before replies)."""

    seq: int
    digest: bytes


@dataclass(frozen=True, kw_only=True)
class Halted:
    """Journal record: this replica found its history contradicts a certified one and stopped serving."""

    reason: str
