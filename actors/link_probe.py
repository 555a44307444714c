"""A packet train through an (emulated) link: the probe migrations start with, and the ledger's link watch.

Chunks leave back to back; each is handed to the far end when the link says
it arrives, one call at a time (overlapping calls would measure Ray's jitter,
not the link), and counts as acked when its answer is back through the link.
`estimate_from_train` turns the acks into bandwidth (their spread) and RTT
(the fastest chunk).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import numpy as np

from actors.transfer import LinkShare
from fabric.clock import Clock
from fabric.transport import ProbeResult, estimate_from_train

# The migration's setup probe: 4 chunks give 3 gaps between acks. 1 MiB each:
# at 2 Gbit/s the link spaces them 4 ms apart, more than the jitter of a Ray call
# here (256 KiB chunks, 1 ms apart, measured Ray's jitter instead: the estimate
# came out 10-30x too low).
PROBE_CHUNKS = 4
PROBE_CHUNK_BYTES = 1 << 20
# The ledger's link watch must tell 1 Gbit/s from more on a loaded machine: at
# the threshold (with the detector's 20% margin) a 4 MiB chunk takes 28 ms of
# link time, far above what a Ray call adds, where a 1 MiB chunk's 7 ms is not.
# RTT comes from small pings instead, which a large chunk's copy would inflate.
WATCH_CHUNKS = 3
WATCH_CHUNK_BYTES = 4 << 20
PING_BYTES = 64
PINGS = 3


async def packet_train(link: LinkShare, flow: int, clock: Clock,
                       deliver: Callable[[np.ndarray], Awaitable[object]], *,
                       chunks: int = PROBE_CHUNKS,
                       chunk_bytes: int = PROBE_CHUNK_BYTES) -> ProbeResult | None:
    """Send the train on `flow` of `link`, `deliver` each chunk at its arrival; None if too few came back."""
    assert 2 <= chunks <= 16 and 0 < chunk_bytes <= 16 << 20, (chunks, chunk_bytes)
    payload = np.zeros(chunk_bytes, dtype=np.uint8)
    start = clock.now()
    arrivals = [link.transmit(flow, start, chunk_bytes) for _ in range(chunks)]
    acked: list[float | None] = []
    for arrival in arrivals:
        if arrival is None:
            acked.append(None)  # lost on the emulated link
            continue
        await asyncio.sleep(max(0.0, arrival - clock.now()))
        await deliver(payload)
        acked.append(link.ack_arrival(clock.now()))
    last = next((a for a in reversed(acked) if a is not None), None)
    if last is not None:
        await asyncio.sleep(max(0.0, last - clock.now()))
    return estimate_from_train([chunk_bytes] * chunks, [start] * chunks, acked)


async def ping(link: LinkShare, flow: int, clock: Clock,
               deliver: Callable[[np.ndarray], Awaitable[object]], *, count: int = PINGS) -> float | None:
    """The smallest round-trip time of `count` small messages, one at a time; None if all were lost."""
    assert 1 <= count <= 16, count
    payload = np.zeros(PING_BYTES, dtype=np.uint8)
    best: float | None = None
    for _ in range(count):
        start = clock.now()
        arrival = link.transmit(flow, start, PING_BYTES)
        if arrival is None:
            continue
        await asyncio.sleep(max(0.0, arrival - clock.now()))
        await deliver(payload)
        back = link.ack_arrival(clock.now())
        await asyncio.sleep(max(0.0, back - clock.now()))
        rtt = clock.now() - start
        best = rtt if best is None else min(best, rtt)
    return best
