"""The trace loaders read the real Azure V1 and PlanetLab files, and refuse malformed ones (typed error)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from policies.errors import TraceFormatError
from policies.traces import load_arrivals, load_flavours, load_lifetime_bins, load_utilisation
from policies.traces.azure import PERIOD_S
from policies.traces.lifetimes import LIVES_FOREVER, LifetimeModel, lifetime_steps
from policies.traces.splits import DEV_SELECT_PERIODS, TraceSources, load_split

REAL_FLAVOURS = {"a": (1, 0.75), "g": (2, 3.5), "o": (8, 56.0)}  # from the data README and flav_map.txt


def test_flavours_and_bins_match_the_shipped_files(sources: TraceSources) -> None:
    flavours = load_flavours(Path(sources.azure_dir) / "flav_map.txt")
    for letter, (vcpus, gb) in REAL_FLAVOURS.items():
        code = flavours.code(letter)
        assert (flavours.vcpus[code], flavours.memory_gb[code]) == (vcpus, pytest.approx(gb))
    bins = load_lifetime_bins(Path(sources.azure_dir) / "v1.interval_map.txt")
    assert bins.seconds[0].tolist() == [0] and bins.seconds[1].tolist() == [300]
    drawn = bins.steps(np.full(1000, 13), np.random.default_rng(0))  # bin 13: one to two hours
    assert drawn.min() >= 3900 // PERIOD_S + 1 and drawn.max() <= 7200 // PERIOD_S + 1


def test_dev_arrivals_and_lifetimes_line_up(sources: TraceSources) -> None:
    data = load_split(sources, "test")
    trace = data.arrivals
    assert trace.periods == 1000 and trace.has_lifetimes
    assert trace.vms == int(trace.batch_sizes().sum()) and trace.vm_lifetime_bin.shape == (trace.vms,)
    assert (data.window_first, data.window_stop) == (DEV_SELECT_PERIODS, 1000)
    assert np.all(np.diff(trace.period_start_s) == PERIOD_S)


def test_train_lifetimes_come_from_the_dev_select_half_only(sources: TraceSources) -> None:
    train = load_split(sources, "train")
    assert not train.arrivals.has_lifetimes and train.lifetime_model is not None
    dev = load_split(sources, "dev").arrivals.slice_periods(0, DEV_SELECT_PERIODS)
    model = LifetimeModel.fit(dev, train.bins, len(train.flavours.letters))
    assert np.array_equal(model.cumulative, train.lifetime_model.cumulative)
    bins, censored = model.draw(np.zeros(2000, np.int16), np.random.default_rng(1))
    steps = lifetime_steps(bins, censored, train.bins, np.random.default_rng(2))
    assert steps.min() >= 1 and (steps[censored] == LIVES_FOREVER).all()


def test_utilisation_rows_are_fractions(sources: TraceSources) -> None:
    traces = load_utilisation([sources.planetlab[0]])
    assert traces.values.shape[1] == 288 and traces.values.min() >= 0.0 and traces.values.max() <= 1.0
    folds = [load_split(sources, s).utilisation.rows for s in ("train", "dev", "test")]
    assert sum(folds) == load_utilisation(list(sources.planetlab)).rows


@pytest.mark.parametrize(
    ("name", "text", "what"),
    [
        ("arrivals.txt", "300 a,|,b\n900 a\n", "consecutive"),
        ("arrivals.txt", "300 a,|,zz\n", "unknown flavour"),
        ("arrivals.txt", "start a\n", "start seconds"),
    ],
)
def test_malformed_arrivals_raise(
    tmp_path: Path, sources: TraceSources, name: str, text: str, what: str
) -> None:
    flavours = load_flavours(Path(sources.azure_dir) / "flav_map.txt")
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(TraceFormatError, match=what):
        load_arrivals(path, flavours)


def test_lifetimes_must_match_their_arrivals(tmp_path: Path, sources: TraceSources) -> None:
    flavours = load_flavours(Path(sources.azure_dir) / "flav_map.txt")
    (tmp_path / "a.txt").write_text("300 a,a,|,b\n")
    (tmp_path / "l.txt").write_text("300 U1,|,U2\n")
    with pytest.raises(TraceFormatError, match="other batches"):
        load_arrivals(tmp_path / "a.txt", flavours, tmp_path / "l.txt")


def test_malformed_planetlab_raises(tmp_path: Path) -> None:
    path = tmp_path / "day.csv.gz"
    header = "vm," + ",".join(f"t{i}" for i in range(288))
    with gzip.open(path, "wt") as f:
        f.write(header + "\nvm1," + ",".join(["150"] * 288) + "\n")
    with pytest.raises(TraceFormatError, match="percentages"):
        load_utilisation([path])
    path.write_bytes(b"not gzip")
    with pytest.raises(TraceFormatError):
        load_utilisation([path])
