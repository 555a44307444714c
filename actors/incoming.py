"""The destination's applier: decodes and writes one migration's batches off the event loop.

Acks for transport chunks must leave as soon as the chunks are reassembled:
an ack held back while a batch decodes would read to the sender as a slow
network. So completed messages queue here and a worker thread opens, decodes
and writes them in order; their results wait for the source to collect them
(with the next acks, or a long poll when nothing else is in flight).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from fabric.errors import FabricError, MalformedBatchError
from fabric.memory import PageStore
from fabric.migration import IncomingMigration
from fabric.migration.config import INFLIGHT_BATCHES_MAX


class IncomingApplier:
    """One incoming migration's queue of sealed messages and its worker."""

    def __init__(self, incoming: IncomingMigration) -> None:
        self.incoming = incoming
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._results: list[dict[str, Any]] = []
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.error: BaseException | None = None
        self._task = asyncio.get_running_loop().create_task(self._run())

    def put(self, messages: list[bytes]) -> None:
        """Queue completed messages, in order."""
        self._raise_if_failed()
        # The sender keeps at most INFLIGHT_BATCHES_MAX batches unacknowledged, so
        # more waiting here means a peer that ignores the protocol.
        if self._queue.qsize() + len(messages) > INFLIGHT_BATCHES_MAX:
            raise MalformedBatchError(f"more than {INFLIGHT_BATCHES_MAX} batches outstanding")
        for m in messages:
            self._idle.clear()
            self._queue.put_nowait(m)

    def drain(self) -> list[dict[str, Any]]:
        """Results ready so far (each is handed out once)."""
        self._raise_if_failed()
        out, self._results = self._results, []
        self._ready.clear()
        return out

    async def wait_results(self, timeout_s: float) -> list[dict[str, Any]]:
        """Results, waiting up to `timeout_s` for the first one."""
        if not self._results and self.error is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), timeout_s)
        return self.drain()

    async def wait_idle(self) -> None:
        """Return once every queued message is applied (or raise what failed)."""
        await self._idle.wait()
        self._raise_if_failed()

    def close(self) -> None:
        """Stop the worker (the incoming copy is being dropped)."""
        self._task.cancel()

    def _raise_if_failed(self) -> None:
        if self.error is not None:
            raise self.error

    async def _run(self) -> None:
        while True:
            message = await self._queue.get()
            try:
                result = await asyncio.to_thread(self.incoming.apply_message, message)
            except Exception as e:  # a tampered, foreign or corrupt batch: the source must abort
                self.error = e
                self._ready.set()
                self._idle.set()
                return
            self._results.append(result)
            self._ready.set()
            if self._queue.empty():
                self._idle.set()


class PostcopyFaultError(FabricError):
    """A post-copy page never came from the source within the recovery deadline: the guest is lost."""


# Fault latencies kept for the percentiles in the report.
FAULT_SAMPLES_MAX = 10_000


class PostcopyFaults:
    """Serves the destination guest's page faults in post-copy, on the vCPU thread.

    A fault asks the source for the pages (fire and forget), then waits for them
    to land; it asks again every `retry_s` (a lost request, or a source busy
    reconnecting) and gives up only after `recovery_s_max`, when the guest is
    paused as lost.
    """

    def __init__(self, *, memory: PageStore, request: Callable[[list[int]], None], retry_s: float,
                 recovery_s_max: float) -> None:
        self._memory = memory
        self._request = request
        self._retry_s = retry_s
        self._recovery_s_max = recovery_s_max
        self._lock = threading.Lock()
        self.faults = 0
        self.requests = 0
        self._latencies_ms: list[float] = []

    def __call__(self, pages: np.ndarray) -> None:
        """Block until `pages` are present (PostcopyFaultError after the recovery deadline)."""
        start = time.monotonic()
        with self._lock:
            self.faults += int(pages.size)
        while True:
            missing = self._memory.missing_of(pages)
            if missing.size == 0:
                break
            with self._lock:
                self.requests += 1
            with contextlib.suppress(Exception):  # a dead source: the wait below runs out
                self._request(missing.tolist())
            if self._memory.wait_present(missing, self._retry_s):
                break
            if time.monotonic() - start > self._recovery_s_max:
                raise PostcopyFaultError(f"{missing.size} pages never came from the source in "
                                         f"{self._recovery_s_max:g} s")
        with self._lock:
            if len(self._latencies_ms) < FAULT_SAMPLES_MAX:
                self._latencies_ms.append((time.monotonic() - start) * 1000)

    def stats(self) -> dict[str, Any]:
        """Faulted pages, requests sent, and fault latency percentiles (ms)."""
        with self._lock:
            lat = sorted(self._latencies_ms)
        pick = (lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]) if lat else (lambda q: None)
        return {"faults": self.faults, "requests": self.requests, "fault_events": len(lat),
                "fault_ms_p50": pick(0.5), "fault_ms_p99": pick(0.99),
                "fault_ms_max": lat[-1] if lat else None}
