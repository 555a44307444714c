"""The receiving endpoint of AMST: out-of-order reassembly, in-order delivery, acks.

Sans-IO: the shell hands in the chunks that arrived at one instant; it gets
back one ack and the messages now complete, in stream (= message id) order.

Memory is bounded twice over. Bytes: a chunk is kept only if it ends below
`window_end` = delivered offset + `reassembly_bytes_max`, so the held bytes
(all above the delivered offset) never exceed the bound; every ack carries
`window_end` and the free bytes. Chunks: at most `window_chunks_max` are
held, except chunks of the first undelivered message, which are always kept
so that delivery can progress; that adds at most one message's chunks.
A chunk that does not fit is dropped without an echo; the sender's loss
detection sends it again. Duplicate and late chunks are acked and ignored.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable

from fabric.transport.chunks import Ack, Chunk, Echo
from fabric.transport.config import TransportConfig
from fabric.transport.errors import PeerProtocolError


class _Assembly:
    __slots__ = ("count", "got", "length", "msg_id", "parts", "start")

    def __init__(self, msg_id: int, start: int, length: int, chunk_bytes: int) -> None:
        self.msg_id = msg_id
        self.start = start
        self.length = length
        self.count = -(-length // chunk_bytes)
        self.parts: list[bytes | memoryview | None] = [None] * self.count
        self.got = 0


class TransportReceiver:
    """One migration's incoming transfer."""

    def __init__(self, config: TransportConfig) -> None:
        self.config = config.validate()
        self._delivered = 0  # stream offset of the first undelivered message
        self._last_msg_id = -1
        self._cum = 0  # every byte below has arrived
        self._range_starts: list[int] = []  # arrived ranges above _cum, merged, ascending
        self._range_ends: list[int] = []
        self._assemblies: dict[int, _Assembly] = {}  # by message start
        self._starts: list[int] = []  # their keys, ascending
        self._held_bytes = 0
        self._held_chunks = 0
        self.chunks_received = 0
        self.chunks_duplicate = 0
        self.chunks_dropped = 0
        self.messages_delivered = 0
        self.held_bytes_peak = 0

    @property
    def held_bytes(self) -> int:
        """Payload bytes held for reassembly (bounded by reassembly_bytes_max)."""
        return self._held_bytes

    @property
    def held_chunks(self) -> int:
        """Chunks held for reassembly."""
        return self._held_chunks

    @property
    def delivered_offset(self) -> int:
        """Stream offset up to which messages were delivered."""
        return self._delivered

    def ack(self, echo: Iterable[Echo] = ()) -> Ack:
        """The receiver's current ack (e.g. to answer a duplicate-only call again)."""
        cfg = self.config
        n = min(len(self._range_starts), cfg.sack_ranges_max)
        echoes = tuple(echo)[-cfg.ack_echo_max:]
        return Ack(cumulative=self._cum,
                   sack=tuple(zip(self._range_starts[:n], self._range_ends[:n], strict=True)),
                   window_end=self._delivered + cfg.reassembly_bytes_max,
                   free_bytes=cfg.reassembly_bytes_max - self._held_bytes, echo=echoes)

    def on_chunks(self, chunks: Iterable[Chunk], now: float) -> tuple[Ack, list[tuple[int, bytes]]]:
        """Take the chunks that arrived at `now`; the ack and the messages completed, in order.

        Raises PeerProtocolError, with nothing changed, if any chunk is one
        no correct sender builds (bad fields, a different chunk size, message
        boundaries or ids that contradict earlier chunks).
        """
        chunks = list(chunks)
        self._check_all(chunks)
        echoes: list[Echo] = []
        for c in chunks:
            if self._take(c):
                echoes.append(Echo(start=c.start, attempt=c.attempt, sent_at=c.sent_at))
        while self._range_starts and self._range_starts[0] == self._cum:
            self._cum = self._range_ends.pop(0)
            self._range_starts.pop(0)
        delivered = self._deliver()
        self.held_bytes_peak = max(self.held_bytes_peak, self._held_bytes)
        return self.ack(echoes), delivered

    # -- checks -------------------------------------------------------------------

    def _check_all(self, chunks: list[Chunk]) -> None:
        """Every chunk against the state and against the other chunks of the call."""
        pending: dict[int, tuple[int, int]] = {}  # message start -> (id, length), new in this call
        for c in chunks:
            if not isinstance(c, Chunk):
                raise PeerProtocolError(f"expected a Chunk, got {type(c).__name__}")
            c.check()
            self._check_one(c, pending)

    def _check_one(self, c: Chunk, pending: dict[int, tuple[int, int]]) -> None:
        cfg = self.config
        if c.msg_len > cfg.message_bytes_max or c.stream >= cfg.streams:
            raise PeerProtocolError(f"chunk of message {c.msg_id}: length {c.msg_len} or stream "
                                    f"{c.stream} beyond message_bytes_max={cfg.message_bytes_max}, "
                                    f"streams={cfg.streams}")
        if c.offset % cfg.chunk_bytes or len(c.data) != min(cfg.chunk_bytes, c.msg_len - c.offset):
            raise PeerProtocolError(f"chunk of message {c.msg_id} at {c.offset} with {len(c.data)} bytes "
                                    f"does not follow chunk_bytes={cfg.chunk_bytes}")
        msg_end = c.msg_start + c.msg_len
        if msg_end <= self._delivered:
            return  # a late copy of a delivered message
        if c.msg_start < self._delivered:
            raise PeerProtocolError(f"message {c.msg_id} [{c.msg_start}, {msg_end}) straddles the "
                                    f"delivered offset {self._delivered}")
        if c.msg_id <= self._last_msg_id:
            raise PeerProtocolError(f"message id {c.msg_id} after delivered id {self._last_msg_id}")
        known = self._assemblies.get(c.msg_start)
        if known is not None:
            if (known.msg_id, known.length) != (c.msg_id, c.msg_len):
                raise PeerProtocolError(f"message at {c.msg_start} was ({known.msg_id}, {known.length} "
                                        f"bytes), now ({c.msg_id}, {c.msg_len})")
            return
        if c.msg_start in pending:
            if pending[c.msg_start] != (c.msg_id, c.msg_len):
                raise PeerProtocolError(f"message at {c.msg_start} is described two ways in one call")
            return
        neighbours = [(a.start, a.length, a.msg_id) for a in self._neighbours(c.msg_start)]
        neighbours += [(s, n, i) for s, (i, n) in pending.items()]
        for start, length, msg_id in neighbours:
            before = start < c.msg_start
            if (before and (start + length > c.msg_start or msg_id >= c.msg_id)) or \
                    (not before and (msg_end > start or msg_id <= c.msg_id)):
                raise PeerProtocolError(f"message {c.msg_id} [{c.msg_start}, {msg_end}) overlaps or is "
                                        f"out of order with message {msg_id} [{start}, {start + length})")
        pending[c.msg_start] = (c.msg_id, c.msg_len)

    def _neighbours(self, start: int) -> list[_Assembly]:
        i = bisect_left(self._starts, start)
        around = self._starts[max(0, i - 1):i + 1]
        return [self._assemblies[s] for s in around]

    # -- state ----------------------------------------------------------------------

    def _have(self, start: int) -> bool:
        if start < self._cum:
            return True
        i = bisect_right(self._range_starts, start) - 1
        return i >= 0 and start < self._range_ends[i]

    def _take(self, c: Chunk) -> bool:
        """Keep a checked chunk if new and within bounds; whether it is echoed."""
        cfg = self.config
        self.chunks_received += 1
        start, end = c.start, c.end
        if end <= self._delivered or self._have(start):
            self.chunks_duplicate += 1
            return True
        first_message = c.msg_start == self._delivered
        if end > self._delivered + cfg.reassembly_bytes_max or (
                self._held_chunks >= cfg.window_chunks_max and not first_message):
            self.chunks_dropped += 1
            return False
        asm = self._assemblies.get(c.msg_start)
        if asm is None:
            asm = _Assembly(c.msg_id, c.msg_start, c.msg_len, cfg.chunk_bytes)
            self._assemblies[c.msg_start] = asm
            self._starts.insert(bisect_left(self._starts, c.msg_start), c.msg_start)
        index = c.offset // cfg.chunk_bytes
        assert asm.parts[index] is None
        asm.parts[index] = c.data
        asm.got += 1
        self._held_bytes += len(c.data)
        self._held_chunks += 1
        assert self._held_bytes <= cfg.reassembly_bytes_max
        self._add_range(start, end)
        return True

    def _add_range(self, start: int, end: int) -> None:
        starts, ends = self._range_starts, self._range_ends
        i = bisect_left(starts, start)
        if i > 0 and ends[i - 1] == start:  # joins the range before
            i -= 1
            ends[i] = end
        else:
            starts.insert(i, start)
            ends.insert(i, end)
        if i + 1 < len(starts) and starts[i + 1] == end:  # and the one after
            ends[i] = ends[i + 1]
            del starts[i + 1], ends[i + 1]

    def _deliver(self) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        while True:
            asm = self._assemblies.get(self._delivered)
            if asm is None or asm.got < asm.count:
                return out
            assert self._cum >= asm.start + asm.length and asm.msg_id > self._last_msg_id
            data = b"".join(asm.parts)  # type: ignore[arg-type]  # all parts present
            assert len(data) == asm.length
            del self._assemblies[asm.start]
            self._starts.pop(bisect_left(self._starts, asm.start))
            self._held_bytes -= asm.length
            self._held_chunks -= asm.count
            self._delivered += asm.length
            self._last_msg_id = asm.msg_id
            self.messages_delivered += 1
            out.append((asm.msg_id, data))
