"""VM lifetimes: read from the trace when it has them, else drawn from a labelled trace's distribution.

The training arrivals (`v1.train.txt.gz`) come without lifetimes. Their VMs get
lifetimes drawn from the empirical distribution of (bin, censored) per flavour,
counted on a labelled trace (the dev-select half of `v1.dev`), never on the
held-out half. A flavour seen fewer than `FLAVOUR_VMS_MIN` times there borrows
the distribution of all flavours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from policies.errors import TraceFormatError
from policies.traces.azure import ArrivalTrace, LifetimeBins

FLAVOUR_VMS_MIN = 30  # below this many labelled VMs a per-flavour histogram is mostly noise
LIVES_FOREVER = np.iinfo(np.int32).max  # a censored VM outlives any episode (warm-up + window < trace cut)


@dataclass(frozen=True, kw_only=True)
class LifetimeModel:
    """P(bin, censored | flavour), as cumulative tables over `2 * bins` outcomes."""

    bins: LifetimeBins
    cumulative: np.ndarray  # float64 (flavours, 2 * bins): outcome o = bin + bins * censored

    @classmethod
    def fit(cls, trace: ArrivalTrace, bins: LifetimeBins, flavours: int) -> LifetimeModel:
        """Count outcomes per flavour on a trace that has lifetimes."""
        if not trace.has_lifetimes:
            raise TraceFormatError("a lifetime model needs a trace with lifetimes")
        assert trace.vm_lifetime_bin is not None and trace.vm_censored is not None
        if trace.vm_lifetime_bin.size and int(trace.vm_lifetime_bin.max()) >= bins.bins:
            raise TraceFormatError(
                f"lifetime bin {int(trace.vm_lifetime_bin.max())} is not in the "
                f"interval map (bins 0..{bins.bins - 1})"
            )
        outcome = trace.vm_lifetime_bin.astype(np.int64) + bins.bins * trace.vm_censored
        counts = np.zeros((flavours, 2 * bins.bins))
        np.add.at(counts, (trace.vm_flavour.astype(np.int64), outcome), 1.0)
        pooled = counts.sum(axis=0)
        if pooled.sum() == 0:
            raise TraceFormatError("the labelled trace holds no VMs")
        sparse = counts.sum(axis=1) < FLAVOUR_VMS_MIN
        counts[sparse] = pooled
        cumulative = np.cumsum(counts / counts.sum(axis=1, keepdims=True), axis=1)
        return cls(bins=bins, cumulative=cumulative)

    def draw(self, flavour: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Bins and censored flags for VMs of the given flavour codes."""
        u = rng.random(flavour.size)
        rows = self.cumulative[flavour.astype(np.int64)]
        outcome = np.minimum((rows < u[:, None]).sum(axis=1), rows.shape[1] - 1)
        return (outcome % self.bins.bins).astype(np.int16), outcome >= self.bins.bins


def lifetime_steps(
    bin_index: np.ndarray, censored: np.ndarray, bins: LifetimeBins, rng: np.random.Generator
) -> np.ndarray:
    """Lifetimes in periods: drawn within each VM's bin; censored VMs live forever."""
    if bin_index.size and int(bin_index.max()) >= bins.bins:
        raise TraceFormatError(
            f"lifetime bin {int(bin_index.max())} is not in the interval map (bins 0..{bins.bins - 1})"
        )
    return np.where(censored, LIVES_FOREVER, bins.steps(bin_index, rng))
