"""Consensus errors: one flat list under FabricError, raised at the cores' boundaries.

A peer's bad input (a malformed message, a bad signature) is never raised out of
`step`: the core drops it and counts it, so a Byzantine peer cannot crash us.
These classes are for what a caller of the core may see, and for the counters'
names. A broken invariant inside a core is an AssertionError: our bug, not theirs.
"""

from __future__ import annotations

from fabric.errors import FabricError


class ConsensusError(FabricError):
    """Base class of the consensus errors."""


class MalformedMessageError(ConsensusError):
    """A message or request is badly formed (wrong type, out-of-range field); the core drops it."""


class BadSignatureError(ConsensusError):
    """A signature does not verify under the claimed signer's key (unlike a malformed message,
    it is well formed); the core drops it."""


class NotLeaderError(ConsensusError):
    """A call that only the leader or primary serves reached another replica; `leader_hint` may help."""

    def __init__(self, message: str, leader_hint: int | None = None) -> None:
        super().__init__(message)
        self.leader_hint = leader_hint


class MembershipChangeError(ConsensusError):
    """A membership change was refused: another one is still uncommitted, or it changes nothing."""


class ConsensusStorageError(ConsensusError):
    """Persisted consensus state is corrupt beyond a torn last record; refuse to guess."""


class UnknownProtocolError(ConsensusError, LookupError):
    """No consensus protocol is registered under that name."""


class ClientBusyError(ConsensusError):
    """A client core was given a new operation while its previous one is still outstanding."""
