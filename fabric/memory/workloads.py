"""Workloads that write guest memory while a VM runs.

Both workloads are deterministic functions of guest time: the memory after
running to guest time T is the same however the interval (0, T] was cut into
steps. A migrated VM's workload therefore continues at the destination exactly
where it stopped at the source, and a check can recompute the expected memory.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal, Protocol

import numpy as np

from fabric.errors import ConfigError
from fabric.memory.content import RECORD_SIZE, ContentMix, fill_pages, records
from fabric.memory.layout import MIB, PAGE_SIZE, PAGES_MAX, pages_for_mib
from fabric.memory.pagestore import PageStore
from fabric.traces.guest_capture import GuestCapture

MB = 1_000_000  # rates are in decimal MB/s, as QEMU and link speeds state them


@dataclass(frozen=True, kw_only=True)
class SyntheticSpec:
    """A synthetic guest: realistic boot content, then records written into a hot set."""

    kind: ClassVar[str] = "synthetic"
    memory_mib: int
    dirty_rate_mbps: float = 0.0  # pages dirtied per second x 4 KiB, in MB/s
    hot_set_mib: int | None = None  # default: a quarter of memory
    seed: int = 0
    mix: ContentMix = field(default_factory=ContentMix)

    def validate(self) -> None:
        """Raise ConfigError on an impossible spec."""
        if not 1 <= pages_for_mib(self.memory_mib) <= PAGES_MAX:
            raise ConfigError(f"memory_mib must be 1..{PAGES_MAX * PAGE_SIZE // MIB}, "
                              f"not {self.memory_mib}")
        if not 0 <= self.dirty_rate_mbps <= 100_000:
            raise ConfigError(f"dirty_rate_mbps must be in 0..100000, not {self.dirty_rate_mbps}")
        if self.hot_set_mib is not None and not 1 <= self.hot_set_mib <= self.memory_mib:
            raise ConfigError(f"hot_set_mib must be in 1..memory_mib ({self.memory_mib})")
        self.mix.validate()


@dataclass(frozen=True, kw_only=True)
class ReplaySpec:
    """A real guest: a capture's base image, then its real deltas on the dump clock."""

    kind: ClassVar[str] = "replay"
    path: str
    time_scale: float = 1.0  # >1 replays faster than the capture ran
    loop: bool = True  # after the last delta, start again at delta 1
    # The first dump gap spans the guest's setup after the base dump (34 s for idle,
    # 75 s for kv) rather than steady running; "median" replaces it by the median
    # of the others, "real" keeps it.
    first_gap: Literal["median", "real"] = "median"
    seed: int = 0

    def validate(self) -> None:
        """Raise ConfigError on an impossible spec."""
        if not 0.001 <= self.time_scale <= 1000:
            raise ConfigError(f"time_scale must be in 0.001..1000, not {self.time_scale}")
        if self.first_gap not in ("median", "real"):
            raise ConfigError(f"first_gap must be 'median' or 'real', not {self.first_gap!r}")


WorkloadSpec = SyntheticSpec | ReplaySpec
_SPECS: dict[str, type[SyntheticSpec] | type[ReplaySpec]] = {
    "synthetic": SyntheticSpec, "replay": ReplaySpec}


def spec_to_dict(spec: WorkloadSpec) -> dict[str, Any]:
    """A JSON-ready dict of a workload spec, tagged with its kind."""
    return {"kind": spec.kind, **asdict(spec)}


def spec_from_dict(raw: dict[str, Any]) -> WorkloadSpec:
    """The spec a dict describes; ConfigError on unknown kinds or fields."""
    raw = dict(raw)
    kind = raw.pop("kind", None)
    cls = _SPECS.get(str(kind))
    if cls is None:
        raise ConfigError(f"unknown workload kind {kind!r}; expected one of {sorted(_SPECS)}")
    if cls is SyntheticSpec and isinstance(raw.get("mix"), dict):
        raw["mix"] = ContentMix(**raw["mix"])
    try:
        spec = cls(**raw)
    except TypeError as e:
        raise ConfigError(f"bad {kind} workload spec: {e}") from e
    spec.validate()
    return spec


class Workload(Protocol):
    """What a VM runs: boot content, then writes as guest time passes."""

    spec: WorkloadSpec

    @property
    def pages(self) -> int:
        """Size of the guest memory in pages."""
        ...

    def boot(self, memory: PageStore) -> None:
        """Write the guest's content at guest time 0."""
        ...

    def run(self, memory: PageStore, t0: float, t1: float) -> int:
        """Apply the writes due in guest time (t0, t1]; return the number of page writes."""
        ...

    def describe(self) -> str:
        """One line saying what this workload is, for reports."""
        ...


class SyntheticWorkload:
    """Writes 128-byte records into a hot set of pages at a fixed dirty rate."""

    BLOCK = 256  # writes are generated in seeded blocks so any step size gives the same memory

    def __init__(self, spec: SyntheticSpec) -> None:
        spec.validate()
        self.spec = spec
        self._pages = pages_for_mib(spec.memory_mib)
        hot_mib = spec.hot_set_mib if spec.hot_set_mib is not None else max(1, spec.memory_mib // 4)
        hot = min(self._pages, max(1, pages_for_mib(hot_mib)))
        rng = np.random.default_rng([spec.seed, 0x407])
        self._hot = np.sort(rng.choice(self._pages, size=hot, replace=False)).astype(np.int64)
        self._writes_per_s = spec.dirty_rate_mbps * MB / PAGE_SIZE
        self._block_cache: tuple[int, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None

    @property
    def pages(self) -> int:
        """Size of the guest memory in pages."""
        return self._pages

    def boot(self, memory: PageStore) -> None:
        """Fill memory with realistic content, 64 Ki pages at a time."""
        assert memory.pages == self._pages
        rng = np.random.default_rng([self.spec.seed, 0xB007])
        step = 1 << 16
        for start in range(0, self._pages, step):
            stop = min(self._pages, start + step)
            memory.write_pages(np.arange(start, stop), fill_pages(rng, stop - start, self.spec.mix))

    def _block(self, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._block_cache is not None and self._block_cache[0] == b:
            return self._block_cache[1]
        rng = np.random.default_rng([self.spec.seed, 0x5EED, b])
        pages = self._hot[rng.integers(0, self._hot.size, size=self.BLOCK)]
        slots = rng.integers(0, PAGE_SIZE // RECORD_SIZE, size=self.BLOCK)
        block = (pages, slots, records(rng, self.BLOCK))
        self._block_cache = (b, block)
        return block

    def writes_until(self, t: float) -> int:
        """Number of page writes due by guest time `t`."""
        return math.floor(t * self._writes_per_s + 1e-9)

    def run(self, memory: PageStore, t0: float, t1: float) -> int:
        """Apply writes number [writes_until(t0), writes_until(t1))."""
        n0, n1 = self.writes_until(t0), self.writes_until(t1)
        if n1 <= n0:
            return 0
        parts = []
        for b in range(n0 // self.BLOCK, (n1 - 1) // self.BLOCK + 1):
            lo, hi = max(n0, b * self.BLOCK) - b * self.BLOCK, min(n1, (b + 1) * self.BLOCK) - b * self.BLOCK
            pages, slots, recs = self._block(b)
            parts.append((pages[lo:hi], slots[lo:hi], recs[lo:hi]))
        pages = np.concatenate([p[0] for p in parts])
        slots = np.concatenate([p[1] for p in parts])
        recs = np.concatenate([p[2] for p in parts])
        # Keep only the last write to each (page, slot): repeated positions in one
        # fancy assignment have no defined order in numpy.
        key = pages * (PAGE_SIZE // RECORD_SIZE) + slots
        _, last_from_end = np.unique(key[::-1], return_index=True)
        keep = np.sort(key.size - 1 - last_from_end)
        memory.write_records(pages[keep], slots[keep] * RECORD_SIZE, recs[keep])
        return n1 - n0

    def describe(self) -> str:
        """One line for reports."""
        hot = self._hot.size * PAGE_SIZE // MIB
        return (f"synthetic {self.spec.memory_mib} MiB, {self.spec.dirty_rate_mbps:g} MB/s "
                f"into a {hot} MiB hot set, seed {self.spec.seed}")


class ReplayWorkload:
    """Replays a real capture: each delta's pages spread evenly over its dump gap."""

    DELTAS_CACHED_MAX = 2  # a kv delta is ~61 MiB unpacked; keep the current and the next

    def __init__(self, spec: ReplaySpec) -> None:
        spec.validate()
        self.spec = spec
        self.capture = GuestCapture(spec.path)
        meta = self.capture.meta
        gaps = list(meta.gaps_s)
        if spec.first_gap == "median" and len(gaps) > 1:
            gaps[0] = float(np.median(gaps[1:]))
        self._gaps = [g / spec.time_scale for g in gaps]
        self._starts = [sum(self._gaps[:k]) for k in range(len(self._gaps))]
        self._period = sum(self._gaps)
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    @property
    def pages(self) -> int:
        """Size of the guest memory in pages."""
        return self.capture.meta.pages

    def boot(self, memory: PageStore) -> None:
        """Load the capture's base image."""
        memory.load_image(self.capture.read_base())

    def _delta(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Delta k's pages in this replay's seeded order, LRU-cached."""
        if k in self._cache:
            self._cache.move_to_end(k)
            return self._cache[k]
        idx, pages = self.capture.read_delta(k)
        order = np.random.default_rng([self.spec.seed, k]).permutation(idx.size)
        entry = (idx[order], pages[order])
        self._cache[k] = entry
        while len(self._cache) > self.DELTAS_CACHED_MAX:
            self._cache.popitem(last=False)
        return entry

    def _applied(self, k: int, tau: float) -> int:
        """Pages of delta k (0-based) applied by time `tau` within a cycle."""
        n = self.capture.meta.changed_pages[k]
        frac = (tau - self._starts[k]) / self._gaps[k]
        return math.floor(n * min(1.0, max(0.0, frac)) + 1e-9)

    def run(self, memory: PageStore, t0: float, t1: float) -> int:
        """Apply the delta pages due in (t0, t1] of guest time."""
        if not self._gaps or t1 <= t0:
            return 0
        period = self._period
        if not self.spec.loop:
            t1 = min(t1, period)
            if t1 <= t0:
                return 0
        c0, c1 = math.floor(t0 / period), math.floor(t1 / period)
        # Replaying a whole cycle twice leaves memory as once: run at most one middle cycle.
        cycles = [c0] + ([c0 + 1] if c1 > c0 + 1 else []) + ([c1] if c1 > c0 else [])
        written = 0
        for c in cycles:
            tau0 = t0 - c * period if c == c0 else 0.0
            tau1 = min(t1 - c * period, period)
            for k in range(len(self._gaps)):
                a, b = self._applied(k, tau0), self._applied(k, tau1)
                if b > a:
                    idx, pages = self._delta(k + 1)
                    memory.write_pages(idx[a:b], pages[a:b])
                    written += b - a
        return written

    def describe(self) -> str:
        """One line for reports, saying which replay clock is used."""
        m = self.capture.meta
        return (f"replay of capture '{m.name}' ({m.pages * PAGE_SIZE // MIB} MiB, {m.deltas} deltas): "
                f"dump-time gaps, first gap {self.spec.first_gap}, scale x{self.spec.time_scale:g}, "
                f"{'looping' if self.spec.loop else 'once'}")


def make_workload(spec: WorkloadSpec) -> Workload:
    """The workload a spec describes."""
    if isinstance(spec, SyntheticSpec):
        return SyntheticWorkload(spec)
    return ReplayWorkload(spec)
