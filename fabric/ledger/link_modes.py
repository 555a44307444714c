"""The ledger's mode, from the measured links between the data centers that host its replicas.

ARCHITECTURE.md ("Modes"): the link between two data centers decides the mode,
measured, with hysteresis, and the mode selects the consensus protocol (ACP).
The ledger's replicas talk over every link between their data centers, so the
ledger runs in the worst of those links' modes (internet over hybrid over
datacenter): a protocol chosen for a datacenter network would otherwise run
over an internet link. With all replicas in one data center, the link inside
it is the only one.

Sans-IO: the fabric probes the links (actors/link_probe.py) and feeds each
measurement here; `observe` answers whether the ledger's mode changed. Each
link has its own `ModeDetector`, so one noisy probe cannot flip a link, and
the ledger has no mode until every one of its links has been measured once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fabric.errors import ConfigError
from fabric.transport.mode import DWELL_SAMPLES_DEFAULT, MARGIN_DEFAULT, Mode, ModeDetector

# Worse modes rank higher: the ledger takes the highest-ranked mode among its links.
MODE_RANK = {Mode.DATACENTER: 0, Mode.HYBRID: 1, Mode.INTERNET: 2}
LINKS_MAX = 64 * 63 // 2  # pairs of data centers a ledger may span


def link_key(a: str, b: str) -> tuple[str, str]:
    """A link between two data centers, the same in either direction."""
    return (a, b) if a <= b else (b, a)


def links_between(dcs: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """Every link between the data centers (the one inside it, if there is only one)."""
    ds = sorted(set(dcs))
    if not ds:
        raise ConfigError("the ledger's replicas are in no data center")
    if len(ds) == 1:
        return ((ds[0], ds[0]),)
    pairs = tuple((a, b) for i, a in enumerate(ds) for b in ds[i + 1:])
    if len(pairs) > LINKS_MAX:
        raise ConfigError(f"the ledger spans {len(ds)} data centers: at most {LINKS_MAX} links are tracked")
    return pairs


@dataclass
class LinkState:
    """What the probes measured on one link."""

    detector: ModeDetector
    probes: int = 0
    lost: int = 0  # probes that did not come back (link down): not a measurement
    rtt_s: float | None = None
    bandwidth_bps: float | None = None


class LedgerLinkModes:
    """The ledger's mode: the worst of its links' measured modes, each with hysteresis."""

    def __init__(self, dcs: Iterable[str], *, margin: float = MARGIN_DEFAULT,
                 dwell_samples: int = DWELL_SAMPLES_DEFAULT) -> None:
        self.links: dict[tuple[str, str], LinkState] = {
            k: LinkState(ModeDetector(margin=margin, dwell_samples=dwell_samples))
            for k in links_between(dcs)}
        self._mode: Mode | None = None
        self.changes = 0

    @property
    def mode(self) -> Mode | None:
        """The ledger's mode; None until every link has been measured."""
        return self._mode

    def _state(self, a: str, b: str) -> LinkState:
        state = self.links.get(link_key(a, b))
        if state is None:
            raise ConfigError(f"{a} <-> {b} is not a link between the ledger's data centers "
                              f"({sorted(self.links)})")
        return state

    def observe(self, a: str, b: str, rtt_s: float, bandwidth_bps: float) -> Mode | None:
        """One probe of the link a <-> b; the ledger's new mode if this changed it, else None."""
        state = self._state(a, b)
        state.detector.classify(rtt_s, bandwidth_bps)
        state.probes += 1
        state.rtt_s, state.bandwidth_bps = rtt_s, bandwidth_bps
        return self._update()

    def probe_lost(self, a: str, b: str) -> None:
        """A probe of a <-> b never came back: a partition says nothing about the link's mode."""
        self._state(a, b).lost += 1

    def _update(self) -> Mode | None:
        modes = [s.detector.mode for s in self.links.values()]
        if any(m is None for m in modes):
            return None
        worst = max(modes, key=lambda m: MODE_RANK[m])  # type: ignore[index]
        assert worst is not None
        if worst is self._mode:
            return None
        first = self._mode is None
        self._mode = worst
        if not first:
            self.changes += 1
        return worst

    def describe(self) -> dict[str, Any]:
        """JSON-ready: the ledger's mode and each link's latest measurement."""
        return {
            "mode": None if self._mode is None else self._mode.value,
            "changes": self.changes,
            "links": {f"{a}|{b}": {
                "mode": None if s.detector.mode is None else s.detector.mode.value,
                "rtt_ms": None if s.rtt_s is None else round(s.rtt_s * 1e3, 3),
                "bandwidth_gbps": None if s.bandwidth_bps is None else round(s.bandwidth_bps / 1e9, 3),
                "probes": s.probes, "lost": s.lost} for (a, b), s in self.links.items()},
        }
