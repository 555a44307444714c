"""The transport shell at the source: runs a TransportSender with real time over Ray calls.

The core (fabric.transport) decides when each chunk may leave. This shell
applies the emulated WAN link where there is one (departure -> arrival time,
or lost), calls the destination when chunks arrive (the chunks of one arrival
instant in one call: Ray's per-call cost), and hands each returned ack to the
sender once the return half of the round trip has passed. Results of applied
batches come back with the acks and queue up for the migration engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fabric.clock import Clock
from fabric.transport import Ack, Chunk, EmulatedLink, TransportError, TransportSender

log = logging.getLogger("novacron.transfer")

# Chunks whose arrival times fall within this much of each other share one Ray
# call: it bounds the calls per second (each costs ~1-2 ms here) at the price
# of up to this much extra delay.
DELIVERY_GROUP_S = 0.002
# Ray calls to the destination in flight at once; the transport window bounds
# the bytes, this bounds the calls.
DELIVERIES_INFLIGHT_MAX = 32
# Batch results waiting for the engine; the engine keeps at most
# INFLIGHT_BATCHES_MAX batches out, so this never fills.
RESULTS_QUEUED_MAX = 256

Deliver = Callable[[list[Chunk]], Awaitable[tuple[Ack, list[dict[str, Any]]]]]
FetchResults = Callable[[float], Awaitable[list[dict[str, Any]]]]
# How long one long poll for batch results may wait at the destination.
RESULTS_POLL_S = 1.0


@dataclass
class TransferStats:
    """What crossed the (emulated) link for one migration."""

    chunks_sent: int = 0
    bytes_sent: int = 0  # every transmission, retransmissions included
    chunks_lost_on_link: int = 0  # dropped by the emulated link
    deliveries: int = 0  # Ray calls that carried chunks
    first_departure: float | None = None
    last_arrival: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"chunks_sent": self.chunks_sent, "bytes_sent": self.bytes_sent,
                "chunks_lost_on_link": self.chunks_lost_on_link, "deliveries": self.deliveries}


class OutgoingTransfer:
    """One migration's byte stream from source to destination."""

    def __init__(self, *, sender: TransportSender, link: LinkShare, flow: int, deliver: Deliver,
                 fetch_results: FetchResults, clock: Clock) -> None:
        self.sender = sender
        self.link = link
        self._flow = flow
        self._deliver = deliver
        self._fetch_results = fetch_results
        self._clock = clock
        self.stats = TransferStats()
        self._events: list[tuple[float, int, str, Any]] = []  # (time, order, kind, payload)
        self._order = itertools.count()
        self._results: asyncio.Queue[dict[str, Any]] = asyncio.Queue(RESULTS_QUEUED_MAX)
        self._wake = asyncio.Event()
        self._space = asyncio.Event()
        self._inflight_calls = 0
        self._failed = asyncio.Event()
        self.failure: BaseException | None = None
        self._closed = False
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._pump())
        self._poller = loop.create_task(self._poll_results())

    # -- what the engine's shell uses ------------------------------------------------

    async def send(self, msg_id: int, message: Any) -> None:
        """Queue one message; waits while the sender's buffers are full (backpressure)."""
        size = memoryview(message).nbytes
        while not self.sender.can_accept(size):
            self._raise_if_failed()
            self._space.clear()
            await self._space.wait()
        self._raise_if_failed()
        self.sender.send(msg_id, message, self._clock.now())
        self._wake.set()

    async def next_result(self, timeout_s: float) -> dict[str, Any]:
        """The next applied-batch result from the destination (TimeoutError after `timeout_s`)."""
        self._raise_if_failed()
        getter = asyncio.ensure_future(self._results.get())
        failed = asyncio.ensure_future(self._failed.wait())
        done, _ = await asyncio.wait({getter, failed}, timeout=timeout_s,
                                     return_when=asyncio.FIRST_COMPLETED)
        for f in (getter, failed):
            if f not in done:
                f.cancel()
        if getter in done:
            return getter.result()
        self._raise_if_failed()
        raise TimeoutError(f"no batch result from the destination in {timeout_s:g} s")

    def result_ready(self) -> bool:
        """True if a result is waiting."""
        return not self._results.empty()

    def take_result(self) -> dict[str, Any]:
        """A waiting result (check `result_ready` first)."""
        return self._results.get_nowait()

    async def close(self) -> None:
        """Stop the pump (results and acks still in flight are dropped)."""
        self._closed = True
        self._wake.set()
        for task in (self._task, self._poller):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- the pump -------------------------------------------------------------------------

    def _raise_if_failed(self) -> None:
        if self.failure is not None:
            raise self.failure

    def _fail(self, error: BaseException) -> None:
        if self.failure is None:
            self.failure = error
            log.warning("transfer failed: %r", error)
        self._failed.set()
        self._space.set()
        self._wake.set()

    def _push(self, t: float, kind: str, payload: Any) -> None:
        heapq.heappush(self._events, (t, next(self._order), kind, payload))

    async def _pump(self) -> None:
        try:
            while not self._closed and self.failure is None:
                now = self._clock.now()
                self._run_due_events(now)
                self._transmit(now)
                wake_at = min(t for t in (self.sender.next_wakeup(),
                                          self._events[0][0] if self._events else None,
                                          now + 1.0) if t is not None)
                self._wake.clear()
                delay = wake_at - self._clock.now()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), delay)
                else:
                    await asyncio.sleep(0)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a transport error (e.g. retries exhausted): the migration aborts
            self._fail(e)

    def _transmit(self, now: float) -> None:
        """Put the chunks the sender releases on the (emulated) link."""
        groups: dict[float, list[Chunk]] = {}
        for depart_at, chunk in self.sender.poll(now):
            size = chunk.data.nbytes if isinstance(chunk.data, memoryview) else len(chunk.data)
            self.stats.chunks_sent += 1
            self.stats.bytes_sent += size
            if self.stats.first_departure is None:
                self.stats.first_departure = depart_at
            arrival = self.link.transmit(self._flow, depart_at, size)
            if arrival is None:
                self.stats.chunks_lost_on_link += 1
                continue
            slot = round(arrival / DELIVERY_GROUP_S) * DELIVERY_GROUP_S
            groups.setdefault(max(slot, arrival), []).append(chunk)
        for t, chunks in groups.items():
            self._push(t, "deliver", chunks)

    def _run_due_events(self, now: float) -> None:
        while self._events and self._events[0][0] <= now:
            _t, _, kind, payload = heapq.heappop(self._events)
            if kind == "deliver":
                if self._inflight_calls >= DELIVERIES_INFLIGHT_MAX:
                    self._push(now + DELIVERY_GROUP_S, kind, payload)  # wait for a call to finish
                    return
                self._inflight_calls += 1
                asyncio.get_running_loop().create_task(self._call(payload))
            elif kind == "ack":
                ack, results = payload
                try:
                    self.sender.on_ack(ack, now)
                except TransportError as e:
                    self._fail(e)
                    return
                self._take_results(results)
                self._space.set()
            else:
                self._take_results(payload)

    def _take_results(self, results: list[dict[str, Any]]) -> None:
        for r in results:
            self._results.put_nowait(r)

    async def _poll_results(self) -> None:
        """Collect batch results that no ack carried (the last batches of a round)."""
        try:
            while not self._closed and self.failure is None:
                results = await self._fetch_results(RESULTS_POLL_S)
                if results:
                    now = self._clock.now()
                    back = self.link.ack_arrival(now)
                    self._push(back, "results", results)
                    self._wake.set()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the destination died, or failed to apply a batch
            self._fail(e)

    async def _call(self, chunks: list[Chunk]) -> None:
        try:
            ack, results = await self._deliver(chunks)
        except Exception as e:  # the destination died, or refused what it received
            self._fail(e)
            return
        finally:
            self._inflight_calls -= 1
        now = self._clock.now()
        self.stats.deliveries += 1
        self.stats.last_arrival = now
        back = self.link.ack_arrival(now)
        self._push(back, "ack", (ack, results))
        self._wake.set()


class LinkShare:
    """One (emulated) link from this node to another data center, shared by the migrations on it.

    The emulated link has one queue, so chunks of every migration on it leave in
    time order. Its rate is split equally: each flow is paced at rate / flows,
    so concurrent migrations share the link fairly rather than by who is faster
    at filling its queue. Without emulation (a real network) only timing is
    shared: no per-link limit applies.
    """

    def __init__(self, link: EmulatedLink | None) -> None:
        self.link = link
        self._flows: dict[int, float] = {}  # flow -> when it may next put bytes on the link
        self._ids = itertools.count()
        self._last_departure = float("-inf")

    @property
    def flows(self) -> int:
        """Migrations using the link now."""
        return len(self._flows)

    def join(self) -> int:
        """A migration starts using the link; its flow id."""
        flow = next(self._ids)
        self._flows[flow] = float("-inf")
        return flow

    def leave(self, flow: int) -> None:
        """A migration is done with the link."""
        self._flows.pop(flow, None)

    def transmit(self, flow: int, depart_at: float, size: int) -> float | None:
        """A chunk of `flow` ready at `depart_at`: when it arrives, or None if the link loses it."""
        if self.link is None:
            return depart_at
        share = self.link.spec.bandwidth_bytes_per_s / max(1, len(self._flows))
        start = max(depart_at, self._flows.get(flow, depart_at), self._last_departure)
        self._flows[flow] = start + size / share
        self._last_departure = start
        return self.link.transmit(start, size)

    def ack_arrival(self, now: float) -> float:
        """When something the destination sends at `now` reaches this node."""
        return self.link.ack_arrival(now) if self.link is not None else now

    def is_down(self, now: float) -> bool:
        """True while the emulated link is partitioned."""
        return self.link is not None and self.link.is_down(now)

    def set_down(self, until: float) -> None:
        """Partition the emulated link until `until`."""
        if self.link is not None:
            self.link.set_down(until)
