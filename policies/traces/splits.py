"""Which real data each split uses: train, dev (model selection) and test (held out).

- train: `v1.train` arrivals (20.8 days); lifetimes drawn from the dev-select
  distribution (that file has none); PlanetLab rows with `row % 5` in {0, 1, 2}.
- dev: the first half of `v1.dev` (periods 0-499) with its real lifetimes;
  PlanetLab rows with `row % 5 == 3`. Used to pick checkpoints.
- test: the second half of `v1.dev` (periods 500-999) with its real lifetimes;
  PlanetLab rows with `row % 5 == 4`. Never seen in training or selection.
- custom: an arrivals file (and optionally its lifetimes) and PlanetLab files a user
  passes, used whole.

Windows of a split start inside its own periods; the periods before a window
start (even those of an earlier split) only seed the VMs already running at the
window's start.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fabric.errors import ConfigError
from fabric.traces import default_data_root
from policies.errors import TraceFormatError
from policies.traces.azure import (
    ArrivalTrace,
    Flavours,
    LifetimeBins,
    load_arrivals,
    load_flavours,
    load_lifetime_bins,
)
from policies.traces.lifetimes import LifetimeModel
from policies.traces.planetlab import UtilisationTraces, load_utilisation

SPLITS = ("train", "dev", "test", "custom")
DEV_SELECT_PERIODS = 500  # v1.dev has 1,000 periods: the first half selects models, the second tests
UTILISATION_FOLDS = 5
UTILISATION_FOLD = {"train": (0, 1, 2), "dev": (3,), "test": (4,)}

AZURE_DIR = "azure-v1"
PLANETLAB_DIR = "planetlab"
TRAIN_ARRIVALS = "v1.train.txt.gz"
DEV_ARRIVALS = "v1.dev.txt.gz"
DEV_LIFETIMES = "v1.dev.c2100000.txt.gz"
FLAVOURS = "flav_map.txt"
INTERVAL_MAP = "v1.interval_map.txt"


@dataclass(frozen=True, kw_only=True)
class TraceSources:
    """Where the trace files are; plain strings so an env config stays JSON-ready."""

    azure_dir: str
    planetlab: tuple[str, ...]
    trace: str | None = None  # a custom arrivals file for the "custom" split
    lifetimes: str | None = None  # its lifetime file, if it has one

    @classmethod
    def default(cls, data_root: str | Path | None = None) -> TraceSources:
        """The shared data: `data_root`, else `fabric.traces.default_data_root()`."""
        root = Path(data_root) if data_root is not None else default_data_root()
        if root is None:
            raise TraceFormatError(
                "the shared data folder was not found: set NOVACRON_DATA to the folder "
                "holding azure-v1/ and planetlab/"
            )
        planetlab = sorted(str(p) for p in (root / PLANETLAB_DIR).glob("*.csv*"))
        return cls(azure_dir=str(root / AZURE_DIR), planetlab=tuple(planetlab))

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "azure_dir": self.azure_dir,
            "planetlab": list(self.planetlab),
            "trace": self.trace,
            "lifetimes": self.lifetimes,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, object]) -> TraceSources:
        """Parse `to_dict()` output."""
        trace, lifetimes = raw.get("trace"), raw.get("lifetimes")
        return cls(
            azure_dir=str(raw["azure_dir"]),
            planetlab=tuple(str(p) for p in raw["planetlab"]),  # type: ignore[union-attr]
            trace=None if trace is None else str(trace),
            lifetimes=None if lifetimes is None else str(lifetimes),
        )


@dataclass(frozen=True, kw_only=True)
class SplitData:
    """Everything an episode of one split draws from."""

    name: str
    flavours: Flavours
    bins: LifetimeBins
    arrivals: ArrivalTrace  # may start before `window_first`: that part is history only
    window_first: int  # windows start at or after this period ...
    window_stop: int  # ... and end at or before this one
    lifetime_model: LifetimeModel | None  # for arrivals without lifetimes
    utilisation: UtilisationTraces

    def window_starts(self, *, warmup_steps: int, window_steps: int) -> tuple[int, int]:
        """First and last period a window may start at: after a full warm-up, ending inside the split."""
        first = max(self.window_first, warmup_steps)  # the warm-up needs that much trace before the window
        last = self.window_stop - window_steps
        if last < first:
            raise ConfigError(
                f"the {self.name} split has no room for a {window_steps}-step window after a "
                f"{warmup_steps}-step warm-up (periods {self.window_first}-{self.window_stop}); "
                "shorten the window or the warm-up"
            )
        return first, last


@functools.lru_cache(maxsize=4)
def _shared(azure_dir: str) -> tuple[Flavours, LifetimeBins, ArrivalTrace]:
    azure = Path(azure_dir)
    flavours = load_flavours(azure / FLAVOURS)
    bins = load_lifetime_bins(azure / INTERVAL_MAP)
    dev = load_arrivals(azure / DEV_ARRIVALS, flavours, azure / DEV_LIFETIMES)
    return flavours, bins, dev


@functools.lru_cache(maxsize=4)
def _train_arrivals(azure_dir: str) -> ArrivalTrace:
    flavours, _, _ = _shared(azure_dir)
    return load_arrivals(Path(azure_dir) / TRAIN_ARRIVALS, flavours)


@functools.lru_cache(maxsize=4)
def _utilisation(paths: tuple[str, ...]) -> UtilisationTraces:
    return load_utilisation(list(paths))


def _fold(traces: UtilisationTraces, split: str) -> UtilisationTraces:
    rows = np.flatnonzero(np.isin(np.arange(traces.rows) % UTILISATION_FOLDS, UTILISATION_FOLD[split]))
    if rows.size == 0:
        raise TraceFormatError(f"the PlanetLab files hold no rows for the {split} split")
    return traces.subset(rows)


@functools.lru_cache(maxsize=8)
def load_split(sources: TraceSources, name: str) -> SplitData:
    """The data of split `name` (cached per process: env runners build many envs)."""
    if name not in SPLITS:
        raise TraceFormatError(f"unknown split {name!r}; splits are {SPLITS}")
    flavours, bins, dev = _shared(sources.azure_dir)
    if dev.periods <= DEV_SELECT_PERIODS:
        raise TraceFormatError(f"{DEV_ARRIVALS} must have more than {DEV_SELECT_PERIODS} periods")
    dev_select = dev.slice_periods(0, DEV_SELECT_PERIODS)
    model = LifetimeModel.fit(dev_select, bins, len(flavours.letters))
    utilisation = _utilisation(sources.planetlab)
    if name == "custom":
        if sources.trace is None:
            raise TraceFormatError("the custom split needs an arrivals file (--trace PATH)")
        arrivals = load_arrivals(sources.trace, flavours, sources.lifetimes)
        return SplitData(
            name=name,
            flavours=flavours,
            bins=bins,
            arrivals=arrivals,
            window_first=0,
            window_stop=arrivals.periods,
            lifetime_model=None if arrivals.has_lifetimes else model,
            utilisation=utilisation,
        )
    if name == "train":
        arrivals = _train_arrivals(sources.azure_dir)
        return SplitData(
            name=name,
            flavours=flavours,
            bins=bins,
            arrivals=arrivals,
            window_first=0,
            window_stop=arrivals.periods,
            lifetime_model=model,
            utilisation=_fold(utilisation, name),
        )
    first, stop = (0, DEV_SELECT_PERIODS) if name == "dev" else (DEV_SELECT_PERIODS, dev.periods)
    return SplitData(
        name=name,
        flavours=flavours,
        bins=bins,
        arrivals=dev,
        window_first=first,
        window_stop=stop,
        lifetime_model=None,
        utilisation=_fold(utilisation, name),
    )
