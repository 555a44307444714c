"""PBA prediction: the next round's bandwidth, and how wrong each prediction was.

A pre-copy round of B bytes on a link of rate R and round-trip time RTT
takes about B / R + RTT: the last chunk's ack comes back one RTT after the
link finished serializing. Small rounds therefore see less than the link
rate. The predictor smooths the link rate R measured per round with Holt's
linear trend method (level + trend; the measured defaults reduce it to the
last round's rate) and predicts a round's bandwidth from its size:
B / (B / R + RTT).
Every round it records |predicted - actual| / actual of the prediction it
would have made for that round, for the report.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from fabric.errors import ConfigError

# Holt's smoothing constants, measured with `jobs/bench_transport_sim.py
# --sweep-predictor` (six simulated pre-copy runs: shrinking rounds on the
# default links and at 10 Gbit/s x 150 ms, a rate halving, a rate falling 20%
# per second). The last round's link rate (alpha 1, no trend) predicted best:
# mean error 5.0%, against 7.4% for alpha 0.7 and 10.6% for alpha 0.5; a
# trend term (beta > 0) made every alpha worse. Without the RTT term of the
# size model the same predictor errs by 12.1%.
ALPHA_DEFAULT = 1.0
BETA_DEFAULT = 0.0
# Errors kept for the report: MigrationConfig allows at most 1000 rounds.
ROUNDS_MAX = 1000


class BandwidthPredictor:
    """Per-round bandwidth in, next round's bandwidth out (bytes per second)."""

    def __init__(self, *, alpha: float = ALPHA_DEFAULT, beta: float = BETA_DEFAULT,
                 rounds_max: int = ROUNDS_MAX) -> None:
        if not 0 < alpha <= 1 or not 0 <= beta <= 1:
            raise ConfigError(f"predictor alpha={alpha!r}, beta={beta!r}: use 0 < alpha <= 1, 0 <= beta <= 1")
        if not 1 <= rounds_max <= 100_000:
            raise ConfigError(f"predictor rounds_max={rounds_max!r}: use 1..100000")
        self.alpha, self.beta = alpha, beta
        self._level: float | None = None
        self._trend = 0.0
        self._errors: deque[float] = deque(maxlen=rounds_max)
        self.rounds = 0

    def seed(self, link_bytes_per_s: float) -> None:
        """A first guess before any round (the probe's, or the estimator's bandwidth)."""
        if not link_bytes_per_s > 0:
            raise ConfigError(f"predictor seed must be > 0, not {link_bytes_per_s!r}")
        if self.rounds == 0:
            self._level, self._trend = float(link_bytes_per_s), 0.0

    def link_rate(self) -> float | None:
        """The forecast link rate for the next round (bytes per second), or None before any data."""
        if self._level is None:
            return None
        # A trend never takes the forecast below a tenth of the level: one bad
        # round must not predict a dead link.
        return max(self._level + self._trend, self._level / 10)

    def predict(self, round_bytes: int | None = None, rtt_s: float = 0.0) -> float | None:
        """Expected bandwidth of a round of `round_bytes` (the link rate if None), or None."""
        rate = self.link_rate()
        if rate is None or round_bytes is None or round_bytes <= 0:
            return rate
        return round_bytes / (round_bytes / rate + max(rtt_s, 0.0))

    def observe(self, round_bytes: int, duration_s: float, rtt_s: float = 0.0) -> float | None:
        """A finished round; the relative error of its prediction (None for the first round unseeded)."""
        if round_bytes <= 0 or not duration_s > 0:
            raise ConfigError(f"a round needs bytes > 0 and a duration > 0, not {round_bytes}, {duration_s}")
        actual = round_bytes / duration_s
        predicted = self.predict(round_bytes, rtt_s)
        error = None if predicted is None else abs(predicted - actual) / actual
        if error is not None:
            self._errors.append(error)
        link_s = duration_s - rtt_s if duration_s > rtt_s > 0 else duration_s
        rate = round_bytes / link_s
        if self._level is None:
            self._level, self._trend = rate, 0.0
        else:
            level = self.alpha * rate + (1 - self.alpha) * (self._level + self._trend)
            self._trend = self.beta * (level - self._level) + (1 - self.beta) * self._trend
            self._level = level
        self.rounds += 1
        return error

    @property
    def errors(self) -> tuple[float, ...]:
        """Relative error of each round's prediction, oldest first (at most `rounds_max`)."""
        return tuple(self._errors)

    def summary(self) -> dict[str, Any]:
        """JSON-ready: rounds, mean/max/last relative error, the current forecast."""
        errs = self._errors
        return {"rounds": self.rounds, "predicted_rounds": len(errs),
                "mean_error": sum(errs) / len(errs) if errs else None,
                "max_error": max(errs) if errs else None,
                "last_error": errs[-1] if errs else None,
                "next_link_bytes_per_s": self.link_rate()}
