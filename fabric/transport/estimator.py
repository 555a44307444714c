"""PBA measurement: RTT (RFC 6298 and a windowed minimum) and bandwidth (BBR-style delivery rate).

The sender does the bookkeeping (what was delivered when each chunk left) and
feeds samples in; these classes only filter them. A probe train at setup
seeds the bandwidth estimate so the first window already fits the path.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from fabric.errors import ConfigError

# RFC 6298 section 2: alpha = 1/8, beta = 1/4, K = 4.
RTT_ALPHA = 1 / 8
RTT_BETA = 1 / 4
RTT_K = 4


class RttEstimator:
    """SRTT, RTTVAR and the retransmission timeout of RFC 6298 (backoff is the sender's)."""

    def __init__(self, *, rto_s_initial: float, rto_s_min: float, rto_s_max: float) -> None:
        assert 0 < rto_s_min <= rto_s_initial <= rto_s_max
        self._rto_initial, self._rto_min, self._rto_max = rto_s_initial, rto_s_min, rto_s_max
        self.srtt_s: float | None = None
        self.rttvar_s = 0.0
        self.samples = 0

    def on_sample(self, rtt_s: float) -> None:
        """One RTT measurement (unambiguous: the ack echoes which transmission arrived)."""
        assert rtt_s >= 0
        if self.srtt_s is None:
            self.srtt_s, self.rttvar_s = rtt_s, rtt_s / 2  # RFC 6298 (2.2)
        else:  # (2.3): RTTVAR first, with the old SRTT
            self.rttvar_s = (1 - RTT_BETA) * self.rttvar_s + RTT_BETA * abs(self.srtt_s - rtt_s)
            self.srtt_s = (1 - RTT_ALPHA) * self.srtt_s + RTT_ALPHA * rtt_s
        self.samples += 1

    @property
    def rto_s(self) -> float:
        """RTO = SRTT + K x RTTVAR, clamped to [min, max]; the initial RTO before any sample."""
        if self.srtt_s is None:
            return self._rto_initial
        return min(self._rto_max, max(self._rto_min, self.srtt_s + RTT_K * self.rttvar_s))


@dataclass(frozen=True, kw_only=True)
class ProbeResult:
    """What a probe train measured: bottleneck bandwidth and the smallest chunk RTT."""

    bandwidth_bytes_per_s: float
    rtt_s: float  # min over the train's chunks of ack time - send time (includes serialization)
    chunk_bytes: int  # size of the chunk that gave `rtt_s`

    def __post_init__(self) -> None:
        if not (self.bandwidth_bytes_per_s > 0 and self.rtt_s >= 0 and self.chunk_bytes > 0):
            raise ConfigError(f"bad probe result {self}")


def estimate_from_train(sizes: Sequence[int], sent_s: Sequence[float],
                        acked_s: Sequence[float | None]) -> ProbeResult | None:
    """Packet-train estimate: bandwidth from the spread of the acks, RTT from the fastest chunk.

    `acked_s[i]` is None for a chunk that never came back. The bottleneck
    spaces the chunks by their serialization time, so the bytes acked after
    the first ack, over the time from the first ack to the last, is its rate.
    None when fewer than two acks came back at distinct times.
    """
    assert len(sizes) == len(sent_s) == len(acked_s)
    got = sorted((a, s, t) for s, t, a in zip(sizes, sent_s, acked_s, strict=True) if a is not None)
    if len(got) < 2 or got[-1][0] <= got[0][0]:
        return None
    spread_s = got[-1][0] - got[0][0]
    after_first = sum(s for a, s, _ in got if a > got[0][0])
    rtt_s, size = min((a - t, s) for a, s, t in got)
    return ProbeResult(bandwidth_bytes_per_s=after_first / spread_s, rtt_s=max(rtt_s, 0.0),
                       chunk_bytes=size)


class BandwidthEstimator:
    """Bottleneck bandwidth (max delivery rate over recent rounds) and min RTT (over a time window).

    Delivery-rate samples follow draft-cheng-iccrg-delivery-rate-estimation:
    bytes delivered between a chunk's departure and its ack, over the longer
    of the send and ack intervals. Samples taken while the sender had nothing
    to send (app-limited) only count when they raise the estimate. A probe
    seed stands in until a full round of real samples has come back.
    """

    def __init__(self, *, bw_window_rounds: int, min_rtt_window_s: float) -> None:
        assert bw_window_rounds >= 1 and min_rtt_window_s > 0
        self._window_rounds = bw_window_rounds
        self._min_rtt_window_s = min_rtt_window_s
        self._round_max: deque[tuple[int, float]] = deque(maxlen=bw_window_rounds)  # (round, max)
        self._seed_bw: float | None = None
        self._seed_until_round = 0
        self.round = 0
        self.min_rtt_s: float | None = None  # raw: ack time - send time of one chunk
        self._min_rtt_path_s = 0.0  # the same sample less its chunk's serialization at the time
        self._min_rtt_at = 0.0
        self.bw_samples = 0
        self.rtt_samples = 0
        self.probe: ProbeResult | None = None
        self._bw_cache: tuple[float | None] | None = None  # filtered max, until the next change

    # -- inputs ---------------------------------------------------------------

    def seed(self, probe: ProbeResult, now: float) -> None:
        """Start from a probe train's estimate; it expires after the next full round."""
        self.probe = probe
        self._bw_cache = None
        self._seed_bw = probe.bandwidth_bytes_per_s
        self._seed_until_round = self.round + 2
        self.on_rtt_sample(probe.rtt_s, probe.chunk_bytes, now)

    def on_round(self, round_count: int) -> None:
        """The sender counted a new round trip (all chunks sent in the last one were acked)."""
        assert round_count >= self.round
        self.round = round_count
        self._bw_cache = None
        if self._seed_bw is not None and self.round >= self._seed_until_round and self._round_max:
            self._seed_bw = None

    def on_rate_sample(self, bytes_per_s: float, *, app_limited: bool) -> None:
        """One delivery-rate sample."""
        assert bytes_per_s >= 0
        self.bw_samples += 1
        current = self._filtered_max()
        if app_limited and current is not None and bytes_per_s <= current:
            return
        self._bw_cache = None
        while self._round_max and self._round_max[0][0] <= self.round - self._window_rounds:
            self._round_max.popleft()
        if self._round_max and self._round_max[-1][0] == self.round:
            if bytes_per_s > self._round_max[-1][1]:
                self._round_max[-1] = (self.round, bytes_per_s)
        else:
            self._round_max.append((self.round, bytes_per_s))

    def on_rtt_sample(self, rtt_s: float, size_bytes: int, now: float) -> None:
        """One chunk's ack time - send time."""
        assert rtt_s >= 0
        self.rtt_samples += 1
        expired = now - self._min_rtt_at > self._min_rtt_window_s
        if self.min_rtt_s is None or rtt_s <= self.min_rtt_s or expired:
            bw = self.bandwidth_bytes_per_s
            serialize_s = size_bytes / bw if bw else 0.0
            self.min_rtt_s, self._min_rtt_at = rtt_s, now
            self._min_rtt_path_s = max(0.0, rtt_s - serialize_s)

    # -- outputs --------------------------------------------------------------

    def _filtered_max(self) -> float | None:
        if self._bw_cache is None:
            oldest = self.round - self._window_rounds
            self._bw_cache = (max((bw for r, bw in self._round_max if r > oldest), default=None),)
        return self._bw_cache[0]

    @property
    def bandwidth_bytes_per_s(self) -> float | None:
        """Estimated bottleneck bandwidth, or None before any estimate."""
        measured = self._filtered_max()
        if self._seed_bw is None:
            return measured
        return self._seed_bw if measured is None else max(measured, self._seed_bw)

    @property
    def rtt_s(self) -> float | None:
        """Estimated path RTT: the min chunk RTT less that chunk's serialization time then."""
        return None if self.min_rtt_s is None else self._min_rtt_path_s

    def bdp_bytes(self) -> float | None:
        """Bandwidth x min chunk RTT: the bytes that keep the path full."""
        bw = self.bandwidth_bytes_per_s
        if bw is None or self.min_rtt_s is None:
            return None
        return bw * self.min_rtt_s
