"""AMST transport: chunked multi-stream transfer with windows, pacing, reassembly and PBA.

Sans-IO cores: no Ray, threads, sockets, clocks or global randomness; time
is passed in and the same inputs give the same outputs. Both ends of a
transfer use the same `TransportConfig` (its bounds are documented there).

Source, one `TransportSender` per migration:

    sender = TransportSender(config, now=t, probe=None)   # or a ProbeResult from a setup probe
    if sender.can_accept(len(frame)):                     # backpressure towards the engine
        sender.send(msg_id, frame, now)                   # ids increase; frame kept (not copied) until acked
    for depart_at, chunk in sender.poll(now):             # now <= depart_at <= now + pacing_horizon_s
        ...                                               # send at depart_at; emulated: EmulatedLink.transmit
    acked_ids = sender.on_ack(ack, now)                   # messages now fully acknowledged, in order
    wake = sender.next_wakeup()                           # call poll() again then (None: wait for input)
    sender.stats().to_dict()                              # mode, bandwidth, RTT, cwnd, retransmissions
    sender.idle, sender.buffered_bytes, sender.estimator.bandwidth_bytes_per_s, .rtt_s, sender.mode

Destination, one `TransportReceiver` per migration:

    ack, messages = receiver.on_chunks(chunks_arriving_now, now)
    # messages: [(msg_id, bytes)] now complete, in message-id order; carry `ack` back
    # to the source, which calls on_ack after the return half-RTT.

`Chunk.data` is a memoryview into the sender's message; a Chunk pickles with
protocol 5 as an out-of-band buffer (zero-copy where Ray allows), else as bytes.

Errors (all `TransportError`, a `fabric.errors.FabricError`): `RetriesExhausted`
(a chunk was lost more than `chunk_retries_max` times: the path is dead; the
sender stays failed), `PeerProtocolError` (a chunk or ack no correct peer
sends; raised before any state changes), `LocalProtocolError` (the caller
broke the rules, e.g. ignored `can_accept`). Bad configuration raises
`fabric.errors.ConfigError`.

PBA: the sender's `BandwidthEstimator` (delivery-rate max filter, min RTT)
and `RttEstimator` (RFC 6298); `estimate_from_train(sizes, sent_s, acked_s)`
for a setup probe; `BandwidthPredictor` (next round's bandwidth from the
last rounds, with a round-size/RTT model; `observe(round_bytes, duration_s,
rtt_s)` returns the error of the prediction for that round, `summary()` for
the report); `ModeDetector.classify(rtt_s, bandwidth_bps)` / `classify` for
datacenter, hybrid or internet (ARCHITECTURE.md thresholds, with hysteresis).

Emulation: `LinkSpec`, `EmulatedLink(spec, seed=...)` with `transmit(now,
size) -> arrival | None` and `ack_arrival(now)`, `default_link(src_dc,
dst_dc)` and `DEFAULT_LINKS`; `TokenBucket(rate, burst)` is the cap the sender
applies itself from `max_bandwidth_bytes_per_s`.

Simulation: `simulate(link, messages, *, config, seed, faults=Faults(...),
probe, msg_ids, rounds, bandwidth_schedule, record_departures, verify,
on_step) -> SimulationResult` runs sender, link and receiver in virtual time
(see `fabric.transport.simulation`).
"""

from __future__ import annotations

from fabric.transport.chunks import Ack, Chunk, Echo
from fabric.transport.config import TransportConfig
from fabric.transport.errors import LocalProtocolError, PeerProtocolError, RetriesExhausted, TransportError
from fabric.transport.estimator import (
    BandwidthEstimator,
    ProbeResult,
    RttEstimator,
    estimate_from_train,
)
from fabric.transport.link import DEFAULT_LINKS, INTRA_DC_LINK, EmulatedLink, LinkSpec, default_link
from fabric.transport.mode import Mode, ModeDetector, classify
from fabric.transport.predictor import BandwidthPredictor
from fabric.transport.ratelimit import TokenBucket
from fabric.transport.receiver import TransportReceiver
from fabric.transport.sender import TransportSender, TransportStats
from fabric.transport.simulation import Faults, RoundSample, SimulationResult, simulate

__all__ = [
    "DEFAULT_LINKS", "INTRA_DC_LINK", "Ack", "BandwidthEstimator", "BandwidthPredictor", "Chunk", "Echo",
    "EmulatedLink", "Faults", "LinkSpec", "LocalProtocolError", "Mode", "ModeDetector",
    "PeerProtocolError", "ProbeResult", "RetriesExhausted", "RoundSample", "RttEstimator",
    "SimulationResult", "TokenBucket", "TransportConfig", "TransportError", "TransportReceiver",
    "TransportSender", "TransportStats", "classify", "default_link", "estimate_from_train", "simulate",
]
