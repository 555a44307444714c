"""Loaders for the processed Azure Public Dataset V1 (`shared/data/azure-v1`).

Formats (see the data README):
- arrivals: one line per 300-second period, `<start seconds> <flavours>`; flavours are
  letters separated by `,`, and `|` separates batches (VMs one tenant asked for together);
- lifetimes: the same VMs in the same order, each replaced by `U<k>` (ended within bin k)
  or `C<k>` (still running when the trace was cut);
- `flav_map.txt`: `<vcpus>,<memory GB> <letter>`;
- `v1.interval_map.txt`: `<lifetime seconds> <bin>`, lifetimes in multiples of 300.
Everything read is checked; a malformed file raises TraceFormatError.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from policies.errors import TraceFormatError
from policies.traces.files import read_lines

PERIOD_S = 300  # the trace's time step; the placement env steps at the same rate
PERIODS_MAX = 100_000  # about a year of 5-minute periods: far above any shipped trace
VMS_PER_PERIOD_MAX = 100_000  # the shipped traces peak below 1,500


@dataclass(frozen=True, kw_only=True)
class Flavours:
    """VM sizes by flavour letter, as parallel arrays indexed by flavour code."""

    letters: tuple[str, ...]
    vcpus: np.ndarray  # int32, per flavour code
    memory_gb: np.ndarray  # float32, per flavour code

    def code(self, letter: str) -> int:
        """The flavour code of `letter`."""
        try:
            return self.letters.index(letter)
        except ValueError:
            raise TraceFormatError(f"unknown flavour {letter!r}; known: {''.join(self.letters)}") from None


@dataclass(frozen=True, kw_only=True)
class ArrivalTrace:
    """VM requests per period, batches kept together, as flat arrays.

    Batch `b` arrives in period `batch_period[b]` and holds the VMs
    `batch_start[b]:batch_start[b + 1]`; `vm_flavour` holds their flavour codes.
    `vm_lifetime_bin` and `vm_censored` are set when a lifetime file was given.
    """

    period_start_s: np.ndarray  # int64 (periods,)
    batch_period: np.ndarray  # int32 (batches,)
    batch_start: np.ndarray  # int64 (batches + 1,)
    vm_flavour: np.ndarray  # int16 (vms,)
    vm_lifetime_bin: np.ndarray | None = None  # int16 (vms,)
    vm_censored: np.ndarray | None = None  # bool (vms,)

    @property
    def periods(self) -> int:
        """Number of periods."""
        return int(self.period_start_s.size)

    @property
    def batches(self) -> int:
        """Number of batches."""
        return int(self.batch_period.size)

    @property
    def vms(self) -> int:
        """Number of VMs."""
        return int(self.vm_flavour.size)

    @property
    def has_lifetimes(self) -> bool:
        """Whether each VM's lifetime bin is known."""
        return self.vm_lifetime_bin is not None

    def batch_sizes(self) -> np.ndarray:
        """VMs per batch."""
        return np.diff(self.batch_start)

    def slice_periods(self, first: int, stop: int) -> ArrivalTrace:
        """The periods `first:stop` as a trace of their own."""
        if not 0 <= first < stop <= self.periods:
            raise TraceFormatError(f"period slice {first}:{stop} is outside 0:{self.periods}")
        b0, b1 = np.searchsorted(self.batch_period, [first, stop])
        v0, v1 = self.batch_start[b0], self.batch_start[b1]
        return ArrivalTrace(
            period_start_s=self.period_start_s[first:stop].copy(),
            batch_period=(self.batch_period[b0:b1] - first).astype(np.int32),
            batch_start=self.batch_start[b0 : b1 + 1] - v0,
            vm_flavour=self.vm_flavour[v0:v1].copy(),
            vm_lifetime_bin=None if self.vm_lifetime_bin is None else self.vm_lifetime_bin[v0:v1].copy(),
            vm_censored=None if self.vm_censored is None else self.vm_censored[v0:v1].copy(),
        )


@dataclass(frozen=True, kw_only=True)
class LifetimeBins:
    """Lifetime bin -> the lifetimes in seconds (multiples of 300) that map to it."""

    seconds: tuple[np.ndarray, ...]  # indexed by bin

    @property
    def bins(self) -> int:
        """Number of bins."""
        return len(self.seconds)

    def steps(self, bin_index: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Lifetimes in periods for VMs that ended within the given bins.

        Each VM's seconds are drawn uniformly among its bin's; a lifetime of `s`
        seconds keeps the VM for its arrival period and the `s // 300` periods after it.
        """
        counts = np.array([s.size for s in self.seconds])
        table = np.zeros((self.bins, int(counts.max())), np.int64)
        for k, s in enumerate(self.seconds):
            table[k, : s.size] = s
        k = bin_index.astype(np.int64)
        pick = np.minimum((rng.random(k.size) * counts[k]).astype(np.int64), counts[k] - 1)
        return table[k, pick] // PERIOD_S + 1


def load_flavours(path: str | Path) -> Flavours:
    """Parse `flav_map.txt`."""
    path = Path(path)
    letters, vcpus, memory = [], [], []
    for n, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        try:
            size, letter = line.split()
            c, m = size.split(",")
            vcpus.append(int(c))
            memory.append(float(m))
        except ValueError:
            raise TraceFormatError(f"{path}:{n}: expected '<vcpus>,<GB> <letter>', got {line!r}") from None
        if len(letter) != 1 or letter in letters:
            raise TraceFormatError(f"{path}:{n}: flavour {letter!r} is not a new single letter")
        if vcpus[-1] <= 0 or memory[-1] <= 0:
            raise TraceFormatError(f"{path}:{n}: sizes must be positive")
        letters.append(letter)
    if not letters:
        raise TraceFormatError(f"{path} lists no flavours")
    return Flavours(
        letters=tuple(letters), vcpus=np.array(vcpus, np.int32), memory_gb=np.array(memory, np.float32)
    )


def load_lifetime_bins(path: str | Path) -> LifetimeBins:
    """Parse `v1.interval_map.txt`."""
    path = Path(path)
    by_bin: dict[int, list[int]] = {}
    for n, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        try:
            seconds, k = (int(x) for x in line.split())
        except ValueError:
            raise TraceFormatError(f"{path}:{n}: expected '<seconds> <bin>', got {line!r}") from None
        if seconds < 0 or seconds % PERIOD_S or k < 0:
            raise TraceFormatError(f"{path}:{n}: seconds must be a multiple of {PERIOD_S}, bin >= 0")
        by_bin.setdefault(k, []).append(seconds)
    if not by_bin or sorted(by_bin) != list(range(len(by_bin))):
        raise TraceFormatError(f"{path}: bins must be numbered 0..n-1 without gaps")
    return LifetimeBins(seconds=tuple(np.array(sorted(by_bin[k]), np.int64) for k in range(len(by_bin))))


def _split_batches(rest: str) -> list[list[str]]:
    batches = [[x for x in part.split(",") if x] for part in rest.strip().split("|")]
    return [b for b in batches if b]


def _read_periods(path: Path) -> list[tuple[int, list[list[str]]]]:
    out: list[tuple[int, list[list[str]]]] = []
    for n, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        head, _, rest = line.partition(" ")
        try:
            start = int(head)
        except ValueError:
            raise TraceFormatError(f"{path}:{n}: a line starts with the period's start seconds") from None
        out.append((start, _split_batches(rest)))
        if len(out) > PERIODS_MAX:
            raise TraceFormatError(f"{path} has more than {PERIODS_MAX} periods")
    if not out:
        raise TraceFormatError(f"{path} holds no periods")
    starts = np.array([s for s, _ in out])
    if starts.size > 1 and not np.all(np.diff(starts) == PERIOD_S):
        raise TraceFormatError(f"{path}: periods must be consecutive, {PERIOD_S} s apart")
    return out


def load_arrivals(
    path: str | Path, flavours: Flavours, lifetimes_path: str | Path | None = None
) -> ArrivalTrace:
    """Parse an arrivals file, and optionally its lifetime file (same VMs, same order)."""
    path = Path(path)
    periods = _read_periods(path)
    life = _read_periods(Path(lifetimes_path)) if lifetimes_path is not None else None
    if life is not None and [s for s, _ in life] != [s for s, _ in periods]:
        raise TraceFormatError(f"{lifetimes_path} does not cover the same periods as {path}")
    batch_period, batch_start, flavour_codes, bins, censored = [], [0], [], [], []
    codes = {letter: i for i, letter in enumerate(flavours.letters)}
    for p, (start, batches) in enumerate(periods):
        if sum(len(b) for b in batches) > VMS_PER_PERIOD_MAX:
            raise TraceFormatError(f"{path}: period {start} has more than {VMS_PER_PERIOD_MAX} VMs")
        life_batches = life[p][1] if life is not None else None
        if life_batches is not None and [len(b) for b in life_batches] != [len(b) for b in batches]:
            raise TraceFormatError(f"{lifetimes_path}: period {start} has other batches than {path}")
        for i, batch in enumerate(batches):
            for j, letter in enumerate(batch):
                if letter not in codes:
                    raise TraceFormatError(f"{path}: period {start}: unknown flavour {letter!r}")
                flavour_codes.append(codes[letter])
                if life_batches is not None:
                    tag = life_batches[i][j]
                    if tag[:1] not in ("U", "C") or not tag[1:].isdigit():
                        raise TraceFormatError(f"{lifetimes_path}: period {start}: bad lifetime {tag!r}")
                    bins.append(int(tag[1:]))
                    censored.append(tag[0] == "C")
            batch_period.append(p)
            batch_start.append(len(flavour_codes))
    return ArrivalTrace(
        period_start_s=np.array([s for s, _ in periods], np.int64),
        batch_period=np.array(batch_period, np.int32),
        batch_start=np.array(batch_start, np.int64),
        vm_flavour=np.array(flavour_codes, np.int16),
        vm_lifetime_bin=np.array(bins, np.int16) if life is not None else None,
        vm_censored=np.array(censored, bool) if life is not None else None,
    )
