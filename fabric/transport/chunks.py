"""What crosses the link: `Chunk` (source to destination) and `Ack` (back).

Messages occupy consecutive ranges of one byte stream: message k starts where
message k-1 ends. A chunk is the piece of a message at `offset`, cut every
`chunk_bytes`; its place in the stream is `msg_start + offset`. Acks speak in
stream offsets, like TCP's, so the receiver needs no per-message state to ack.

Both classes check themselves when built; an endpoint that receives one from
a peer calls `check()` again (unpickling skips `__post_init__`).
"""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass
from typing import Any

from fabric.transport.errors import PeerProtocolError


@dataclass(frozen=True, slots=True, kw_only=True)
class Chunk:
    """One piece of one message, as sent at `sent_at` (its `attempt`-th transmission)."""

    msg_id: int
    msg_start: int  # stream offset of the message's first byte
    msg_len: int
    offset: int  # of this chunk inside the message, a multiple of the chunk size
    data: bytes | memoryview
    stream: int
    attempt: int  # 0 for the first transmission, k for the k-th retransmission
    sent_at: float

    def __post_init__(self) -> None:
        self.check()

    @property
    def start(self) -> int:
        """Stream offset of the chunk's first byte."""
        return self.msg_start + self.offset

    @property
    def end(self) -> int:
        """Stream offset just past the chunk."""
        return self.msg_start + self.offset + len(self.data)

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, tuple[Any, ...]]:
        """Picklable although `data` is a memoryview into the sender's message.

        With pickle protocol 5 (Ray's) the payload travels as a PickleBuffer,
        out of band and without a copy where the pickler allows it; older
        protocols copy it into bytes.
        """
        data: Any = pickle.PickleBuffer(self.data) if int(protocol) >= 5 else bytes(self.data)
        return _rebuild_chunk, (self.msg_id, self.msg_start, self.msg_len, self.offset, data,
                                self.stream, self.attempt, self.sent_at)

    def check(self) -> Chunk:
        """Return self, or raise PeerProtocolError if no correct sender builds this chunk."""
        ints = (self.msg_id, self.msg_start, self.msg_len, self.offset, self.stream, self.attempt)
        if not all(type(v) is int for v in ints) or not isinstance(self.data, bytes | memoryview):
            raise PeerProtocolError(f"chunk fields have wrong types: {ints!r}, {type(self.data)}")
        if min(ints) < 0 or not 0 <= self.offset < self.msg_len:
            raise PeerProtocolError(f"chunk of message {self.msg_id}: offset {self.offset}, length "
                                    f"{self.msg_len}, start {self.msg_start}, stream {self.stream}, "
                                    f"attempt {self.attempt} out of range")
        if not len(self.data) or self.offset + len(self.data) > self.msg_len:
            raise PeerProtocolError(f"chunk of message {self.msg_id} at {self.offset} carries "
                                    f"{len(self.data)} bytes of a {self.msg_len}-byte message")
        if not (isinstance(self.sent_at, float | int) and math.isfinite(self.sent_at)):
            raise PeerProtocolError(f"chunk sent_at {self.sent_at!r} is not a finite time")
        return self


def _rebuild_chunk(msg_id: int, msg_start: int, msg_len: int, offset: int, data: Any, stream: int,
                   attempt: int, sent_at: float) -> Chunk:
    """Unpickle a Chunk (checked again: it comes from a peer)."""
    if not isinstance(data, bytes | memoryview):
        try:
            data = memoryview(data).cast("B")
        except TypeError as e:
            raise PeerProtocolError(f"chunk data of type {type(data).__name__} is not a buffer") from e
    return Chunk(msg_id=msg_id, msg_start=msg_start, msg_len=msg_len, offset=offset, data=data,
                 stream=stream, attempt=attempt, sent_at=sent_at)


@dataclass(frozen=True, slots=True, kw_only=True)
class Echo:
    """A chunk the receiver got in this call, echoed for RTT samples and loss bookkeeping."""

    start: int  # the chunk's stream offset
    attempt: int  # which transmission arrived (tells a spurious retransmission apart)
    sent_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Ack:
    """The receiver's state after one call: everything the sender needs, in every ack.

    Acks may be lost, duplicated or reordered; each one is complete, and the
    sender only ever moves forward with what it says.
    """

    cumulative: int  # every stream byte below this offset has arrived
    sack: tuple[tuple[int, int], ...]  # arrived ranges above `cumulative`, ascending, disjoint
    window_end: int  # the receiver accepts bytes below this offset (delivered + reassembly bound)
    free_bytes: int  # reassembly buffer left (reassembly_bytes_max - held bytes)
    echo: tuple[Echo, ...]  # the chunks of this call that were kept or already held

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> Ack:
        """Return self, or raise PeerProtocolError if no correct receiver builds this ack."""
        if not all(type(v) is int for v in (self.cumulative, self.window_end, self.free_bytes)):
            raise PeerProtocolError("ack offsets must be ints")
        if self.cumulative < 0 or self.window_end < 0 or self.free_bytes < 0:
            raise PeerProtocolError(f"negative ack field in {self.cumulative}, {self.window_end}, "
                                    f"{self.free_bytes}")
        low = self.cumulative
        for rng in self.sack:
            if not (isinstance(rng, tuple) and len(rng) == 2 and all(type(v) is int for v in rng)):
                raise PeerProtocolError(f"sack range {rng!r} is not a pair of ints")
            if not low < rng[0] < rng[1]:
                raise PeerProtocolError(f"sack ranges {self.sack} are not ascending, disjoint and "
                                        f"above the cumulative ack {self.cumulative}")
            low = rng[1]
        for e in self.echo:
            if not (isinstance(e, Echo) and type(e.start) is int and type(e.attempt) is int
                    and e.start >= 0 and e.attempt >= 0):
                raise PeerProtocolError(f"bad echo {e!r}")
        return self
