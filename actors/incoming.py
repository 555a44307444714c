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
from typing import Any

from fabric.errors import MalformedBatchError
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
