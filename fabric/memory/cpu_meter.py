"""How busy a guest's vCPU is: the CPU time its workload really used, as a decaying average.

The node's vCPU thread measures each guest's step with the thread's CPU clock
(time.thread_time), so the figure is CPU the guest consumed, not time it was
scheduled. The meter keeps an exponentially weighted rate in vCPUs (CPU seconds
per wall second) with time constant `tau_s`: O(1) memory, and a guest that
stops using CPU decays to 0 within a few `tau_s`. This is what the placement
policy's "busy vCPUs" input (policies.advisor's `cpu_busy`) means.
"""

from __future__ import annotations

import math

from fabric.errors import ConfigError

TAU_S_DEFAULT = 10.0  # a placement decision looks at the last ~10 s; the env's step is minutes
TAU_S_MIN, TAU_S_MAX = 0.1, 3600.0


class CpuMeter:
    """Busy vCPUs of one guest: an exponentially weighted rate of the CPU time it used."""

    def __init__(self, now: float, *, tau_s: float = TAU_S_DEFAULT) -> None:
        if not TAU_S_MIN <= tau_s <= TAU_S_MAX:
            raise ConfigError(f"cpu meter tau_s={tau_s!r}: use {TAU_S_MIN}..{TAU_S_MAX}")
        self.tau_s = tau_s
        self._rate = 0.0  # vCPUs, as of self._at
        self._at = now
        self.cpu_s = 0.0  # all the CPU time measured

    def add(self, cpu_s: float, now: float) -> None:
        """The guest used `cpu_s` seconds of CPU up to `now`."""
        assert cpu_s >= 0.0, cpu_s
        self._rate = self.busy(now) + cpu_s / self.tau_s
        self._at = max(now, self._at)
        self.cpu_s += cpu_s

    def busy(self, now: float) -> float:
        """Busy vCPUs at `now` (CPU seconds per second, decayed since the last measurement)."""
        return self._rate * math.exp(-max(0.0, now - self._at) / self.tau_s)
