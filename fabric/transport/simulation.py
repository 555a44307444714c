"""A discrete-event harness: sender -> EmulatedLink -> receiver -> ack path, in virtual time.

It plays the Ray shell's part in one process: it feeds messages while the
sender accepts them (optionally in pre-copy rounds, each waiting for the
previous one to be acked, as the engine does), books every departure on the
link, calls the receiver with the chunks of each arrival instant, carries
each ack back after the return half-RTT, and wakes the sender when it asks.
It checks every delivered message against what was sent and records, after
every event, the peaks of every bounded quantity, so tests can hold them to
their bounds. Same arguments, same result: all randomness comes from `seed`.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from fabric.errors import ConfigError
from fabric.transport.chunks import Ack, Chunk
from fabric.transport.config import TransportConfig
from fabric.transport.errors import TransportError
from fabric.transport.estimator import ProbeResult
from fabric.transport.link import EmulatedLink, LinkSpec
from fabric.transport.predictor import BandwidthPredictor
from fabric.transport.receiver import TransportReceiver
from fabric.transport.sender import TransportSender, TransportStats

# A run that needs more events than this is a bug (a 10 GB transfer of 1 MiB
# chunks takes ~40,000 events).
EVENTS_MAX_DEFAULT = 5_000_000

_ARRIVE, _ACK, _WAKE = 0, 1, 2


@dataclass(frozen=True, kw_only=True)
class Faults:
    """Faults on top of the link's own jitter and loss; all probabilities per chunk or ack."""

    duplicate: float = 0.0  # a chunk arrives twice, the copy up to `reorder_s_max` later
    reorder: float = 0.0  # a chunk is held back by up to `reorder_s_max`
    reorder_s_max: float = 0.0
    ack_loss: float = 0.0
    ack_duplicate: float = 0.0
    corrupt: float = 0.0  # one byte of a chunk flipped (the AEAD above the transport catches it)

    def __post_init__(self) -> None:
        for name in ("duplicate", "reorder", "ack_loss", "ack_duplicate", "corrupt"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"fault {name}={getattr(self, name)!r}: use a probability in 0..1")
        if not 0 <= self.reorder_s_max <= 10:
            raise ConfigError(f"fault reorder_s_max={self.reorder_s_max!r}: use 0..10 s")


@dataclass(frozen=True, kw_only=True)
class RoundSample:
    """The sender's estimates when it counted a new round trip."""

    t: float
    bandwidth_bytes_per_s: float | None
    rtt_s: float | None
    cwnd_bytes: float
    mode: str | None


@dataclass(kw_only=True)
class SimulationResult:
    """What a simulated transfer did. Times in virtual seconds."""

    complete: bool  # every message delivered and acknowledged
    error: TransportError | None
    messages_delivered: int
    bytes_delivered: int
    in_order_and_exact: bool  # each delivery was the next message, byte for byte
    first_departure_s: float | None
    last_delivery_s: float | None
    end_s: float  # virtual time when the run stopped
    link_rate_bytes_per_s: float
    link_busy_s: float
    # peaks of the bounded quantities, sampled after every event
    sender_buffered_bytes_peak: int = 0
    sender_unsent_bytes_peak: int = 0
    inflight_bytes_peak: int = 0
    outstanding_chunks_peak: int = 0
    receiver_held_bytes_peak: int = 0
    receiver_held_chunks_peak: int = 0
    events: int = 0
    sender_stats: TransportStats | None = None
    receiver_counters: dict[str, int] = field(default_factory=dict)
    link_counters: dict[str, int] = field(default_factory=dict)
    departures: list[tuple[float, int]] = field(default_factory=list)  # (time, bytes), if recorded
    rounds: list[RoundSample] = field(default_factory=list)
    precopy_rounds: list[dict[str, float]] = field(default_factory=list)  # bytes, duration, error
    predictor: dict[str, Any] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        """First departure to last delivery (0 if nothing was delivered)."""
        if self.first_departure_s is None or self.last_delivery_s is None:
            return 0.0
        return self.last_delivery_s - self.first_departure_s

    @property
    def goodput_bytes_per_s(self) -> float:
        """Payload bytes delivered over the transfer time."""
        return self.bytes_delivered / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def utilisation(self) -> float:
        """Goodput as a fraction of the link rate (retransmissions do not count)."""
        return self.goodput_bytes_per_s / self.link_rate_bytes_per_s

    @property
    def link_busy_fraction(self) -> float:
        """Time the link spent serializing (retransmissions included) over the transfer time."""
        return self.link_busy_s / self.duration_s if self.duration_s > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        """JSON-ready headline figures."""
        s = self.sender_stats
        return {"complete": self.complete, "error": repr(self.error) if self.error else None,
                "messages": self.messages_delivered, "bytes": self.bytes_delivered,
                "duration_s": self.duration_s, "goodput_bytes_per_s": self.goodput_bytes_per_s,
                "utilisation": self.utilisation, "link_busy_fraction": self.link_busy_fraction,
                "sender": s.to_dict() if s else None, "receiver": self.receiver_counters,
                "link": self.link_counters, "predictor": self.predictor,
                "peaks": {"sender_buffered_bytes": self.sender_buffered_bytes_peak,
                          "sender_unsent_bytes": self.sender_unsent_bytes_peak,
                          "inflight_bytes": self.inflight_bytes_peak,
                          "outstanding_chunks": self.outstanding_chunks_peak,
                          "receiver_held_bytes": self.receiver_held_bytes_peak,
                          "receiver_held_chunks": self.receiver_held_chunks_peak}}


def simulate(link: LinkSpec, messages: Sequence[bytes | memoryview], *,
             config: TransportConfig | None = None, seed: int = 0, faults: Faults | None = None,
             probe: ProbeResult | None = None, msg_ids: Sequence[int] | None = None,
             rounds: Sequence[int] | None = None,
             bandwidth_schedule: Sequence[tuple[float, float]] = (),
             time_s_max: float = 600.0, events_max: int = EVENTS_MAX_DEFAULT,
             record_departures: bool = False, verify: bool = True,
             on_step: Callable[[float, TransportSender, TransportReceiver], None] | None = None,
             ) -> SimulationResult:
    """Send `messages` over an emulated `link`; see the module docstring.

    `rounds`: message counts per pre-copy round (they must add up to
    len(messages)); round k is fed only once round k-1 is fully acked, and
    each round's bandwidth goes through a `BandwidthPredictor`.
    `bandwidth_schedule`: (time, bits/s) changes of the link rate.
    `verify=False` checks ids and lengths only, not every byte (long runs).
    `on_step(now, sender, receiver)` runs after every event.
    """
    config = (config or TransportConfig()).validate()
    faults = faults or Faults()
    ids = list(msg_ids) if msg_ids is not None else list(range(len(messages)))
    if len(ids) != len(messages) or any(b <= a for a, b in itertools.pairwise(ids)):
        raise ConfigError("msg_ids must be increasing, one per message")
    plan = list(rounds) if rounds is not None else [len(messages)]
    if sum(plan) != len(messages) or any(n < 1 for n in plan):
        raise ConfigError(f"rounds {plan} must be positive and add up to {len(messages)} messages")
    wire = EmulatedLink(link, seed=seed)
    rng = random.Random(seed * 1_000_003 + 17)  # faults: a stream apart from the link's
    sender = TransportSender(config, now=0.0, probe=probe)
    receiver = TransportReceiver(config)
    predictor = BandwidthPredictor()
    res = SimulationResult(complete=False, error=None, messages_delivered=0, bytes_delivered=0,
                           in_order_and_exact=True, first_departure_s=None, last_delivery_s=None,
                           end_s=0.0, link_rate_bytes_per_s=link.bandwidth_bytes_per_s, link_busy_s=0.0)
    heap: list[tuple[float, int, int, Any]] = []
    seq = 0
    wake_at: float | None = None
    schedule = sorted(bandwidth_schedule)
    fed = 0  # messages handed to the sender
    round_index, round_end, round_started, round_bytes = 0, plan[0], 0.0, 0
    last_round_count = 0

    def push(t: float, kind: int, item: Any) -> None:
        nonlocal seq
        heapq.heappush(heap, (t, seq, kind, item))
        seq += 1

    def feed(now: float) -> None:
        nonlocal fed, round_started, round_bytes
        while fed < round_end and sender.can_accept(len(messages[fed])):
            if fed == round_end - plan[round_index]:
                round_started, round_bytes = now, 0
            sender.send(ids[fed], messages[fed], now)
            round_bytes += len(messages[fed])
            fed += 1

    def pump(now: float) -> None:
        nonlocal wake_at
        for t, chunk in sender.poll(now):
            size = len(chunk.data)
            if res.first_departure_s is None:
                res.first_departure_s = t
            if record_departures:
                res.departures.append((t, size))
            while schedule and schedule[0][0] <= t:
                wire.set_bandwidth_bps(schedule.pop(0)[1])
            arrival = wire.transmit(t, size)
            if arrival is None:
                continue
            if faults.reorder and rng.random() < faults.reorder:
                arrival += rng.random() * faults.reorder_s_max
            if faults.corrupt and rng.random() < faults.corrupt:
                data = bytearray(chunk.data)
                data[rng.randrange(size)] ^= 0xFF
                chunk = replace(chunk, data=bytes(data))
            push(arrival, _ARRIVE, chunk)
            if faults.duplicate and rng.random() < faults.duplicate:
                push(arrival + rng.random() * faults.reorder_s_max, _ARRIVE, chunk)
        wake = sender.next_wakeup()
        if wake is not None:
            wake = max(wake, now)
            if wake_at is None or wake_at <= now or wake < wake_at:
                wake_at = wake
                push(wake, _WAKE, None)

    def deliver(now: float, chunks: list[Chunk]) -> None:
        ack, done = receiver.on_chunks(chunks, now)
        for msg_id, data in done:
            i = res.messages_delivered
            if i >= len(ids) or msg_id != ids[i] or len(data) != len(messages[i]) or (
                    verify and data != messages[i]):
                res.in_order_and_exact = False
            res.messages_delivered += 1
            res.bytes_delivered += len(data)
            res.last_delivery_s = now
        if faults.ack_loss and rng.random() < faults.ack_loss:
            return
        push(wire.ack_arrival(now), _ACK, ack)
        if faults.ack_duplicate and rng.random() < faults.ack_duplicate:
            push(wire.ack_arrival(now), _ACK, ack)

    def end_round(now: float) -> None:
        nonlocal round_index, round_end
        rtt = sender.estimator.rtt_s or 0.0
        duration = max(now - round_started, 1e-9)
        error = predictor.observe(round_bytes, duration, rtt)
        res.precopy_rounds.append({"bytes": round_bytes, "duration_s": duration,
                                   "bandwidth_bytes_per_s": round_bytes / duration,
                                   "prediction_error": -1.0 if error is None else error})
        round_index += 1
        if round_index < len(plan):
            round_end += plan[round_index]

    def observe(now: float) -> None:
        nonlocal last_round_count
        res.sender_buffered_bytes_peak = max(res.sender_buffered_bytes_peak, sender.buffered_bytes)
        res.sender_unsent_bytes_peak = max(res.sender_unsent_bytes_peak, sender.unsent_bytes)
        res.inflight_bytes_peak = max(res.inflight_bytes_peak, sender.inflight_bytes)
        res.outstanding_chunks_peak = max(res.outstanding_chunks_peak, sender.outstanding_chunks)
        res.receiver_held_bytes_peak = max(res.receiver_held_bytes_peak, receiver.held_bytes)
        res.receiver_held_chunks_peak = max(res.receiver_held_chunks_peak, receiver.held_chunks)
        est = sender.estimator
        if est.round != last_round_count:
            last_round_count = est.round
            res.rounds.append(RoundSample(t=now, bandwidth_bytes_per_s=est.bandwidth_bytes_per_s,
                                          rtt_s=est.rtt_s, cwnd_bytes=sender.cwnd_bytes(),
                                          mode=None if sender.mode is None else sender.mode.value))
        if on_step is not None:
            on_step(now, sender, receiver)

    now = 0.0
    try:
        feed(now)
        pump(now)
        while heap and res.events < events_max:
            now, _, kind, item = heapq.heappop(heap)
            if now > time_s_max:
                break
            res.events += 1
            if kind == _ARRIVE:
                chunks = [item]
                while heap and heap[0][0] == now and heap[0][2] == _ARRIVE:
                    chunks.append(heapq.heappop(heap)[3])
                deliver(now, chunks)
            elif kind == _ACK:
                assert isinstance(item, Ack)
                sender.on_ack(item, now)
                if sender.idle and fed == round_end:
                    end_round(now)
                    if round_index == len(plan):
                        res.complete = True
            feed(now)
            pump(now)
            observe(now)
            if res.complete:
                break
    except TransportError as e:
        res.error = e
    res.end_s = now
    res.complete = res.complete and res.messages_delivered == len(messages) and res.in_order_and_exact
    res.link_busy_s = wire.busy_s
    res.sender_stats = sender.stats()
    res.receiver_counters = {"received": receiver.chunks_received, "duplicate": receiver.chunks_duplicate,
                             "dropped": receiver.chunks_dropped, "delivered": receiver.messages_delivered}
    res.link_counters = {"bytes": wire.bytes_serialized, "dropped_queue": wire.chunks_dropped_queue,
                         "lost": wire.chunks_lost}
    res.predictor = predictor.summary()
    return res
