"""The controller's watch on the ledger's links: probe them, and switch an ACP ledger when their mode changes.

Every `link_probe_s` one replica node in each data center of a link sends a
packet train to a replica node at the other end (NodeActor.probe_link, the same
train a migration starts with); fabric.ledger.link_modes turns the
measurements into the ledger's mode, with hysteresis per link; when the mode
changes, every replica is told (NodeActor.consensus_change_mode) and ACP
drains, snapshots and restarts in that mode's protocol.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from fabric.ledger.link_modes import LedgerLinkModes
from fabric.transport.mode import Mode

log = logging.getLogger("novacron.link_watch")

PROBE_CALL_S_MAX = 10.0  # a probe not back in this time counts as lost
SWITCHES_KEPT_MAX = 100  # mode changes remembered for status


class LedgerLinkWatch:
    """Probes the links between the ledger's replicas and tells them when the mode changes."""

    def __init__(self, replicas: list[tuple[str, str]], node: Callable[[str], Any], *,
                 probe_s: float) -> None:
        """`replicas`: (node name, data center) of every replica; `node(name)`: its actor handle."""
        self._replicas = replicas
        self._node = node
        self._probe_s = probe_s
        self.modes = LedgerLinkModes(dc for _, dc in replicas)
        self.switches: deque[dict[str, Any]] = deque(maxlen=SWITCHES_KEPT_MAX)
        self._round = 0
        self._task: asyncio.Task | None = None

    def _ends(self, a: str, b: str) -> tuple[str, str] | None:
        """The probing node in `a` and the probed one in `b` this round (rotating, so a dead node
        does not blind a link for good)."""
        src = [n for n, dc in self._replicas if dc == a]
        dst = [n for n, dc in self._replicas if dc == b]
        pairs = [(s, d) for s in src for d in dst if s != d]
        return pairs[self._round % len(pairs)] if pairs else None

    async def probe_all(self) -> Mode | None:
        """Probe every link once; the ledger's new mode if it changed (also the first time one is known)."""
        changed: Mode | None = None
        for a, b in self.modes.links:
            ends = self._ends(a, b)
            if ends is None:
                continue
            try:
                got = await asyncio.wait_for(self._node(ends[0]).probe_link.remote(ends[1]), PROBE_CALL_S_MAX)
            except Exception as e:  # the node died or the call timed out: no measurement
                log.warning("ledger link probe %s -> %s failed: %s", ends[0], ends[1], e)
                got = None
            if got is None:
                self.modes.probe_lost(a, b)
                continue
            mode = self.modes.observe(a, b, got["rtt_s"], got["bandwidth_bps"])
            changed = mode or changed
        self._round += 1
        return changed

    async def _tell(self, mode: Mode) -> list[str]:
        """Every replica learns the ledger's mode (idempotent); the replicas that could not be told."""
        results = await asyncio.gather(*(self._node(n).consensus_change_mode.remote(mode.value)
                                         for n, _ in self._replicas), return_exceptions=True)
        return [n for (n, _), r in zip(self._replicas, results, strict=True) if isinstance(r, BaseException)]

    async def tell_replicas(self, mode: Mode) -> None:
        """The ledger's mode changed: every replica learns it; ACP switches if its protocol differs."""
        failed = await self._tell(mode)
        self.switches.append({"at": time.time(), "mode": mode.value, "links": self.modes.describe()["links"],
                              "replicas_not_told": failed})
        log.info("ledger mode is now %s (replicas not told: %s)", mode.value, failed or "none")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._probe_s)
            try:
                mode = await self.probe_all()
                if mode is not None:
                    await self.tell_replicas(mode)
                elif self.modes.mode is not None:
                    # Unchanged, but told again each round: a replica that restarted forgot it,
                    # and a switch out of a Byzantine era needs f+1 replicas to ask.
                    await self._tell(self.modes.mode)
            except Exception:  # keep watching: a bad round must not end the watch
                log.exception("ledger link watch round failed")

    def start(self) -> None:
        """Probe every `probe_s` from now on (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        """Stop probing."""
        if self._task is not None:
            self._task.cancel()

    def describe(self) -> dict[str, Any]:
        """JSON-ready: the mode, each link's latest measurement, and the recent mode changes."""
        return {**self.modes.describe(), "probe_s": self._probe_s, "switches": list(self.switches)}
