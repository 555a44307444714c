"""Real workload traces for placement: Azure V1 VM arrivals and lifetimes, PlanetLab CPU utilisation."""

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
from policies.traces.splits import SPLITS, SplitData, TraceSources, load_split

__all__ = [
    "SPLITS",
    "ArrivalTrace",
    "Flavours",
    "LifetimeBins",
    "LifetimeModel",
    "SplitData",
    "TraceSources",
    "UtilisationTraces",
    "load_arrivals",
    "load_flavours",
    "load_lifetime_bins",
    "load_split",
    "load_utilisation",
]
