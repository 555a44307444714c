"""Clocks passed into cores: the wall clock for real runs, a manual one for deterministic runs."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Monotonic seconds, and a way to let time pass."""

    def now(self) -> float:
        """Current time in seconds."""
        ...

    def sleep_until(self, t: float) -> None:
        """Return once `now() >= t`."""
        ...


class WallClock:
    """time.monotonic(): the same on every process of one machine."""

    def now(self) -> float:
        """Current monotonic time."""
        return time.monotonic()

    def sleep_until(self, t: float) -> None:
        """Sleep until `t`."""
        delay = t - time.monotonic()
        if delay > 0:
            time.sleep(delay)


class ManualClock:
    """Virtual time that moves only when told to."""

    def __init__(self, start: float = 0.0) -> None:
        self._t = start

    def now(self) -> float:
        """Current virtual time."""
        return self._t

    def advance(self, dt: float) -> None:
        """Move time forward by `dt` seconds."""
        assert dt >= 0
        self._t += dt

    def sleep_until(self, t: float) -> None:
        """Jump to `t` if it is in the future."""
        self._t = max(self._t, t)
