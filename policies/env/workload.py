"""One episode's VM requests, cut from the real traces.

A window is `steps` consecutive 5-minute periods of a split. The requests are the
window's batches that fall in one *shard*: every batch of the trace belongs to one
of `shards` fixed shards (a seeded hash of its position), so shard k is a 1/shards
sample of the tenants' requests with batches kept whole, and the shards together
are the whole trace. Batches larger than `batch_vms_max` are left out (and counted).
Each batch arrives at one data center, drawn with `dc_weights`. Each VM gets a
PlanetLab row; its CPU load at period p is that row at p's time of day (both traces
are aligned on the clock). VMs that arrived in the `warmup_steps` before the
window and still run at its start form the initial state.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from policies.traces.azure import PERIOD_S, ArrivalTrace
from policies.traces.lifetimes import lifetime_steps
from policies.traces.planetlab import SAMPLES_PER_DAY
from policies.traces.splits import SplitData

SHARD_SEED = 2017  # fixes which shard each batch belongs to; the same for every run and policy


@dataclass(frozen=True, kw_only=True)
class Workload:
    """VM requests of one episode, sorted by arrival step (negative: before the window)."""

    arrival_step: np.ndarray  # int64 (vms,), relative to the window's first period
    origin_dc: np.ndarray  # int64 (vms,)
    vcpus: np.ndarray  # float64 (vms,)
    memory_gb: np.ndarray  # float64 (vms,)
    lifetime_steps: np.ndarray  # int64 (vms,), >= 1
    util_row: np.ndarray  # int64 (vms,), row of `utilisation`
    utilisation: np.ndarray  # float32 (rows, 288): fraction of the VM's vCPUs busy
    time_of_day: np.ndarray  # int64 (steps,): PlanetLab column of each window step
    batches_dropped: int  # batches of the shard left out for being larger than batch_vms_max
    vms_dropped: int

    @property
    def vms(self) -> int:
        """Number of VMs (history included)."""
        return int(self.arrival_step.size)

    def cpu_util(self, vm: np.ndarray, step: int) -> np.ndarray:
        """Fraction of each VM's vCPUs busy during window step `step`."""
        column = int(self.time_of_day[min(step, self.time_of_day.size - 1)])
        return self.utilisation[self.util_row[vm], column]


@functools.lru_cache(maxsize=16)
def _shard_of_batch(batches: int, shards: int) -> np.ndarray:
    return np.random.default_rng(SHARD_SEED).integers(shards, size=batches)


def time_of_day(trace: ArrivalTrace, first: int, steps: int) -> np.ndarray:
    """PlanetLab column for each of `steps` periods from `first` (the clock runs past the trace end)."""
    start = int(trace.period_start_s[first]) // PERIOD_S
    return (start + np.arange(steps)) % SAMPLES_PER_DAY


def build_workload(
    data: SplitData,
    *,
    first: int,
    steps: int,
    warmup_steps: int,
    shard: int,
    shards: int,
    dc_weights: tuple[float, ...],
    batch_vms_max: int,
    rng: np.random.Generator,
) -> Workload:
    """The requests of window [first, first + steps) of `data`, for one shard."""
    trace = data.arrivals
    lo = max(0, first - warmup_steps)
    b0, b1 = np.searchsorted(trace.batch_period, [lo, first + steps])
    batch_ids = np.arange(b0, b1)
    sizes = trace.batch_sizes()[batch_ids]
    in_shard = _shard_of_batch(trace.batches, shards)[batch_ids] == shard
    kept = batch_ids[in_shard & (sizes <= batch_vms_max)]
    dropped = in_shard & (sizes > batch_vms_max)
    # Draw per-batch data centres and per-VM rows for every kept batch, in trace order,
    # so a given (seed, window) yields the same workload whatever the policy.
    batch_dc = rng.choice(len(dc_weights), size=kept.size, p=np.asarray(dc_weights) / sum(dc_weights))
    starts, stops = trace.batch_start[kept], trace.batch_start[kept + 1]
    vm_index = (
        np.concatenate([np.arange(a, b) for a, b in zip(starts, stops, strict=True)])
        if kept.size
        else np.zeros(0, np.int64)
    )
    per_vm_batch = np.repeat(np.arange(kept.size), stops - starts)
    flavour = trace.vm_flavour[vm_index].astype(np.int64)
    if trace.has_lifetimes:
        assert trace.vm_lifetime_bin is not None and trace.vm_censored is not None
        bins, censored = trace.vm_lifetime_bin[vm_index], trace.vm_censored[vm_index]
    else:
        assert data.lifetime_model is not None
        bins, censored = data.lifetime_model.draw(flavour, rng)
    lifetime = lifetime_steps(bins, censored, data.bins, rng)
    arrival = trace.batch_period[kept][per_vm_batch].astype(np.int64) - first
    alive = (arrival >= 0) | (arrival + lifetime > 0)  # history VMs that ended before the window are gone
    return Workload(
        arrival_step=arrival[alive],
        origin_dc=batch_dc[per_vm_batch][alive],
        vcpus=data.flavours.vcpus[flavour][alive].astype(np.float64),
        memory_gb=data.flavours.memory_gb[flavour][alive].astype(np.float64),
        lifetime_steps=lifetime[alive],
        util_row=rng.integers(data.utilisation.rows, size=vm_index.size)[alive],
        utilisation=data.utilisation.values,
        time_of_day=time_of_day(trace, first, steps),
        batches_dropped=int(dropped.sum()),
        vms_dropped=int(sizes[dropped].sum()),
    )
