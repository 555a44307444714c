"""A token bucket: the migration's max-bandwidth cap (QEMU's `max-bandwidth`)."""

from __future__ import annotations

from fabric.errors import ConfigError


class TokenBucket:
    """`rate_bytes_per_s` on average, at most `burst_bytes` at once.

    Departures are booked in time order: `reserve(now, size)` returns when a
    chunk of `size` may leave (never before `now`, nor before the previous
    booking) and takes its tokens. Whatever the bookings, the bytes leaving in
    any interval [a, b] are at most burst_bytes + rate_bytes_per_s x (b - a).
    """

    def __init__(self, rate_bytes_per_s: float, burst_bytes: float, *, now: float = 0.0) -> None:
        if not rate_bytes_per_s > 0 or not burst_bytes > 0:
            raise ConfigError(f"token bucket needs rate > 0 and burst > 0, not {rate_bytes_per_s}, "
                              f"{burst_bytes}")
        self.rate_bytes_per_s = float(rate_bytes_per_s)
        self.burst_bytes = float(burst_bytes)
        self._tokens = self.burst_bytes  # a full bucket at the start
        self._t = now

    def earliest(self, now: float, size: int) -> float:
        """When a chunk of `size` bytes could leave, without booking it."""
        return self._book(now, size)[0]

    def reserve(self, now: float, size: int) -> float:
        """Book a chunk of `size` bytes: the time it may leave (>= now)."""
        t, tokens = self._book(now, size)
        self._t, self._tokens = t, tokens - size
        return t

    def _book(self, now: float, size: int) -> tuple[float, float]:
        if not 0 < size <= self.burst_bytes:
            raise ConfigError(f"a {size}-byte chunk can never pass a {self.burst_bytes:.0f}-byte bucket; "
                              f"raise the burst to at least the chunk size")
        t = max(now, self._t)
        tokens = min(self.burst_bytes, self._tokens + (t - self._t) * self.rate_bytes_per_s)
        if tokens < size:
            t += (size - tokens) / self.rate_bytes_per_s
            tokens = float(size)
        return t, tokens
