"""Mode detection: datacenter, hybrid or internet, from the measured link, with hysteresis.

ARCHITECTURE.md ("Modes"): datacenter if RTT < 10 ms and at least 1 Gbit/s;
internet if RTT > 50 ms or under 1 Gbit/s; hybrid otherwise. The first
measurement is classified on the plain thresholds. After that, a measurement
moves the detector to another mode only when it lies inside that mode's
region shrunk by `margin` on every threshold (so a value hovering at 10 ms
or 1 Gbit/s cannot flip it), and does so `dwell_samples` times in a row.
"""

from __future__ import annotations

from enum import StrEnum

from fabric.errors import ConfigError

DATACENTER_RTT_S_MAX = 0.010  # below: datacenter (with enough bandwidth)
INTERNET_RTT_S_MIN = 0.050  # above: internet
BANDWIDTH_BPS_MIN = 1e9  # under: internet; at least: datacenter or hybrid
# Hysteresis. 20% is twice the +-10% tolerance the estimator is tested to
# reach (tests/test_transport_pba.py), so estimator noise alone cannot flip
# the mode; three samples in a row are three round trips of the estimator.
MARGIN_DEFAULT = 0.2
DWELL_SAMPLES_DEFAULT = 3


class Mode(StrEnum):
    """How the link between two data centers behaves; selects codec profile and window."""

    DATACENTER = "datacenter"
    HYBRID = "hybrid"
    INTERNET = "internet"


def classify(rtt_s: float, bandwidth_bps: float, margin: float = 0.0) -> Mode | None:
    """The mode whose region, shrunk by `margin` at each threshold, holds the measurement.

    With margin 0 every measurement has a mode; with a margin, values near a
    threshold belong to none (None).
    """
    if rtt_s < 0 or bandwidth_bps < 0:
        raise ConfigError(f"cannot classify rtt_s={rtt_s}, bandwidth_bps={bandwidth_bps}")
    fast = bandwidth_bps >= BANDWIDTH_BPS_MIN * (1 + margin)
    if fast and rtt_s < DATACENTER_RTT_S_MAX * (1 - margin):
        return Mode.DATACENTER
    if fast and DATACENTER_RTT_S_MAX * (1 + margin) <= rtt_s <= INTERNET_RTT_S_MIN * (1 - margin):
        return Mode.HYBRID
    if rtt_s > INTERNET_RTT_S_MIN * (1 + margin) or bandwidth_bps < BANDWIDTH_BPS_MIN * (1 - margin):
        return Mode.INTERNET
    return None


class ModeDetector:
    """Feeds on (RTT, bandwidth) measurements; `mode` changes only past the hysteresis."""

    def __init__(self, *, margin: float = MARGIN_DEFAULT,
                 dwell_samples: int = DWELL_SAMPLES_DEFAULT) -> None:
        if not 0 <= margin < 0.5:
            raise ConfigError(f"mode margin={margin!r}: use 0..0.5 (a fraction of each threshold)")
        if not 1 <= dwell_samples <= 1000:
            raise ConfigError(f"mode dwell_samples={dwell_samples!r}: use 1..1000")
        self.margin = margin
        self.dwell_samples = dwell_samples
        self.mode: Mode | None = None
        self.changes = 0
        self._candidate: Mode | None = None
        self._streak = 0

    def classify(self, rtt_s: float, bandwidth_bps: float) -> Mode:
        """Take one measurement; the (possibly unchanged) mode."""
        if self.mode is None:
            mode = classify(rtt_s, bandwidth_bps)
            assert mode is not None
            self.mode = mode
            return mode
        clear = classify(rtt_s, bandwidth_bps, self.margin)
        if clear is None or clear is self.mode:
            self._candidate, self._streak = None, 0
            return self.mode
        self._streak = self._streak + 1 if clear is self._candidate else 1
        self._candidate = clear
        if self._streak >= self.dwell_samples:
            self.mode, self._candidate, self._streak = clear, None, 0
            self.changes += 1
        return self.mode
