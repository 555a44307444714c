"""The transport's error classes, under `fabric.errors.FabricError`.

As in h11, our own misuse is kept apart from the peer's: `LocalProtocolError`
is the caller using an endpoint wrongly (ignoring backpressure, say),
`PeerProtocolError` is a chunk or ack that no correct peer sends, and
`RetriesExhausted` is the path itself failing. Bad configuration raises
`fabric.errors.ConfigError`.
"""

from __future__ import annotations

from fabric.errors import FabricError


class TransportError(FabricError):
    """Base class of the transport's errors; a migration that sees one aborts."""


class RetriesExhausted(TransportError):
    """A chunk was lost more than `chunk_retries_max` times: the path is treated as dead.

    Unlike `PeerProtocolError`, nobody misbehaved; the link (or the peer's
    process) stopped delivering. The sender stays failed: every later call
    raises this error again.
    """

    def __init__(self, message: str, *, msg_id: int, offset: int, attempts: int) -> None:
        super().__init__(message)
        self.msg_id = msg_id
        self.offset = offset
        self.attempts = attempts


class LocalProtocolError(TransportError):
    """The caller used an endpoint wrongly; the bug is on our side, not the peer's.

    For example `send()` although `can_accept()` said no (backpressure ignored),
    a message id that does not increase, or an empty or oversized message.
    Nothing was queued or changed.
    """


class PeerProtocolError(TransportError):
    """A chunk or ack breaks the transport protocol; it is the peer's fault.

    Raised before any state changes: the endpoint that raises it is unchanged
    and can go on (or be torn down) safely.
    """
