"""Loader for PlanetLab CPU utilisation traces (CoMon, as shipped with CloudSim).

A file is a CSV (optionally gzipped) with the header `vm,t0,...,t287` and one row
per VM: CPU utilisation in percent every 5 minutes for 24 hours. Rows from all
files are stacked; each row keeps its file and VM name for reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from policies.errors import TraceFormatError
from policies.traces.files import read_lines

SAMPLES_PER_DAY = 288  # 24 h of 5-minute samples, the same period as the Azure trace
ROWS_MAX = 1_000_000  # per file; the shipped days hold 900-1,500 rows


@dataclass(frozen=True, kw_only=True)
class UtilisationTraces:
    """CPU utilisation as fractions in [0, 1], one row of 288 samples per VM-day."""

    values: np.ndarray  # float32 (rows, 288)
    names: tuple[str, ...]  # "<file stem>/<vm>"

    @property
    def rows(self) -> int:
        """Number of VM-days."""
        return int(self.values.shape[0])

    def subset(self, rows: np.ndarray) -> UtilisationTraces:
        """The given rows only."""
        return UtilisationTraces(values=self.values[rows], names=tuple(self.names[i] for i in rows))


def load_utilisation_file(path: str | Path) -> UtilisationTraces:
    """Parse one PlanetLab day file."""
    path = Path(path)
    values: list[list[float]] = []
    names: list[str] = []
    stem = path.name.split(".")[0]
    lines = read_lines(path)
    expected = ["vm"] + [f"t{i}" for i in range(SAMPLES_PER_DAY)]
    if not lines or lines[0].strip().split(",") != expected:
        raise TraceFormatError(f"{path}: the header must be vm,t0..t{SAMPLES_PER_DAY - 1}")
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cells = line.split(",")
        if len(cells) != SAMPLES_PER_DAY + 1:
            raise TraceFormatError(f"{path}:{n}: expected {SAMPLES_PER_DAY + 1} cells, got {len(cells)}")
        try:
            row = [float(c) for c in cells[1:]]
        except ValueError:
            raise TraceFormatError(f"{path}:{n}: utilisation must be numbers") from None
        values.append(row)
        names.append(f"{stem}/{cells[0]}")
        if len(values) > ROWS_MAX:
            raise TraceFormatError(f"{path} has more than {ROWS_MAX} rows")
    if not values:
        raise TraceFormatError(f"{path} holds no VMs")
    array = np.array(values, np.float32)
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 100:
        raise TraceFormatError(f"{path}: utilisation must be percentages in [0, 100]")
    return UtilisationTraces(values=array / 100.0, names=tuple(names))


def load_utilisation(paths: list[str | Path]) -> UtilisationTraces:
    """Parse and stack several day files, in the given order."""
    if not paths:
        raise TraceFormatError("no PlanetLab files given")
    parts = [load_utilisation_file(p) for p in paths]
    return UtilisationTraces(
        values=np.concatenate([p.values for p in parts]), names=tuple(n for p in parts for n in p.names)
    )
