"""The adaptive selector: per batch, the frame encoding that maximises effective throughput.

Effective throughput is the rate at which guest bytes reach the destination:
min(link rate x compression ratio, codec speed), both in raw bytes per second.
Ratios and speeds are not assumed: each choice's are measured on the batches
that used it and smoothed (EWMA); a seeded fraction of batches tries another
choice so estimates follow the data. With no link rate (unknown or
unbounded), the codec's own speed decides: the CPU is the bottleneck.

`choose` is the decision, a pure function; `Selector` holds the estimates and
the exploration RNG. Exploring never spends a whole batch: the probed choice
encodes a slice of the batch's frame pages (its frames are sent like any
other) and the rest goes under the best choice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fabric.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class FrameChoice:
    """How the pages left for frames travel: raw (level 0) or zstd at `level`, maybe with the dictionary."""

    level: int
    dictionary: bool = False

    def __post_init__(self) -> None:
        if self.level < 0 or (self.level == 0 and self.dictionary):
            raise ConfigError(f"frame choice: level {self.level} with dictionary={self.dictionary}; "
                              f"use level 0 (raw) without a dictionary, or a zstd level")

    @property
    def name(self) -> str:
        """Short stable name, as stats and reports show it."""
        if self.level == 0:
            return "raw"
        return f"zstd-{self.level}" + ("+dict" if self.dictionary else "")


RAW = FrameChoice(level=0)


@dataclass(frozen=True, kw_only=True)
class Prediction:
    """What a batch would cost under one choice: guest bytes, wire bytes and CPU seconds."""

    raw_bytes: float
    wire_bytes: float
    cpu_s: float


def effective_rate(p: Prediction, link_bytes_per_s: float | None) -> float:
    """Guest bytes per second delivered: min(link x ratio, codec speed); codec speed alone with no link."""
    speed = p.raw_bytes / p.cpu_s if p.cpu_s > 0 else float("inf")
    if link_bytes_per_s is None:
        return speed
    ratio = p.raw_bytes / p.wire_bytes if p.wire_bytes > 0 else float("inf")
    return min(link_bytes_per_s * ratio, speed)


def choose(predictions: Mapping[FrameChoice, Prediction], link_bytes_per_s: float | None) -> FrameChoice:
    """The choice with the highest effective rate; ties go to the one listed first."""
    assert predictions
    best, best_rate = None, -1.0
    for choice, p in predictions.items():
        rate = effective_rate(p, link_bytes_per_s)
        if rate > best_rate:
            best, best_rate = choice, rate
    assert best is not None
    return best


@dataclass
class Estimate:
    """Smoothed cost of one choice per raw byte of frame pages: wire bytes and CPU seconds."""

    wire_per_raw: float
    s_per_raw: float
    samples: int = 1

    @property
    def ratio(self) -> float:
        """Compression ratio (raw / wire)."""
        return 1.0 / self.wire_per_raw if self.wire_per_raw > 0 else float("inf")

    @property
    def bytes_per_s(self) -> float:
        """Codec speed in raw bytes per CPU second."""
        return 1.0 / self.s_per_raw if self.s_per_raw > 0 else float("inf")


class Selector:
    """Estimates per choice, updated from measurements, and the exploring pick."""

    def __init__(self, *, alpha: float, explore_fraction: float, rng: np.random.Generator) -> None:
        assert 0 < alpha <= 1 and 0 <= explore_fraction <= 0.5
        self.alpha = alpha
        self.explore_fraction = explore_fraction
        self._rng = rng
        self.estimates: dict[FrameChoice, Estimate] = {}
        self.picks: dict[str, int] = {}  # batches whose frame pages went under each choice
        self.probes: dict[str, int] = {}  # batches on which each choice was measured on a slice

    def estimate(self, choice: FrameChoice) -> Estimate | None:
        """The current estimate of a choice, None if never measured."""
        return self.estimates.get(choice)

    def pick(self, predictions: Mapping[FrameChoice, Prediction | None], link_bytes_per_s: float | None, *,
             default: FrameChoice) -> tuple[FrameChoice, FrameChoice | None]:
        """This batch's choice, and a choice to probe on a slice of it (or None).

        The choice is the best measured one (`default` before any is measured). The probe is
        the first never-measured choice if any, else, on a seeded `explore_fraction` of
        batches, another measured one.
        """
        assert predictions
        known = {c: p for c, p in predictions.items() if p is not None}
        choice = choose(known, link_bytes_per_s) if known else default
        # One draw per batch whatever happens, so the RNG stream depends only on the batch count.
        draw = self._rng.random()
        untried = [c for c, p in predictions.items() if p is None and c != choice]
        others: Sequence[FrameChoice] = [c for c in known if c != choice]
        probe = None
        if untried:
            probe = untried[0]
        elif others and draw < self.explore_fraction:
            probe = others[int(self._rng.integers(len(others)))]
        self.picks[choice.name] = self.picks.get(choice.name, 0) + 1
        if probe is not None:
            self.probes[probe.name] = self.probes.get(probe.name, 0) + 1
        return choice, probe

    def observe(self, choice: FrameChoice, *, raw_bytes: int, wire_bytes: int, cpu_s: float) -> None:
        """Fold in one measurement of `choice` on `raw_bytes` of frame pages."""
        if raw_bytes <= 0:
            return
        wire, secs = wire_bytes / raw_bytes, max(cpu_s, 0.0) / raw_bytes
        old = self.estimates.get(choice)
        if old is None:
            self.estimates[choice] = Estimate(wire_per_raw=wire, s_per_raw=secs)
            return
        a = self.alpha
        old.wire_per_raw += a * (wire - old.wire_per_raw)
        old.s_per_raw += a * (secs - old.s_per_raw)
        old.samples += 1
