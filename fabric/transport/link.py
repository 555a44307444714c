"""The emulated WAN link between two data centers, and the embedded default's links.

`EmulatedLink` is applied by the sending endpoint: each chunk waits in a FIFO
queue behind the chunks before it, serializes at the link's bandwidth, then
travels half the RTT plus a bounded random jitter, unless the queue is full
(tail drop) or the chunk is lost at random. Jitter is drawn per chunk, so
chunks can overtake each other as on a real path with netem-style jitter.
Acks travel back in half the RTT plus their own jitter; they are small and
do not queue. On a real cluster there is no EmulatedLink: the path is real.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, replace
from typing import Any

from fabric.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class LinkSpec:
    """Bandwidth (bits/s), round-trip time, one-way jitter bound, per-chunk loss, queue bound."""

    bandwidth_bps: float
    rtt_s: float
    jitter_s: float = 0.0  # each direction adds uniform [0, jitter_s] per chunk or ack
    loss: float = 0.0  # probability that a chunk is lost after it left the queue
    # Tail drop beyond 50 ms of queued data: a router port buffering 50 ms at
    # line rate, well under the RTT x C rule of thumb for long paths, so a
    # sender that fills the queue loses chunks instead of hiding behind it.
    queue_s_max: float = 0.05

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> LinkSpec:
        """Return self, or raise ConfigError."""
        if not 1e3 <= self.bandwidth_bps <= 1e13:
            raise ConfigError(f"link bandwidth_bps={self.bandwidth_bps!r}: use 1e3..1e13 bits/s")
        if not 0 <= self.rtt_s <= 10:
            raise ConfigError(f"link rtt_s={self.rtt_s!r}: use 0..10 s")
        if not 0 <= self.jitter_s <= 1:
            raise ConfigError(f"link jitter_s={self.jitter_s!r}: use 0..1 s")
        if not 0 <= self.loss <= 1:
            raise ConfigError(f"link loss={self.loss!r}: use a probability in 0..1")
        if not 0 < self.queue_s_max <= 10:
            raise ConfigError(f"link queue_s_max={self.queue_s_max!r}: use (0, 10] s")
        return self

    @property
    def bandwidth_bytes_per_s(self) -> float:
        """The link rate in bytes per second."""
        return self.bandwidth_bps / 8

    @property
    def bdp_bytes(self) -> float:
        """Bandwidth-delay product."""
        return self.bandwidth_bytes_per_s * self.rtt_s

    def describe(self) -> str:
        """One line for reports."""
        return (f"emulated WAN link: {self.bandwidth_bps / 1e9:g} Gbit/s, RTT {self.rtt_s * 1e3:g} ms, "
                f"jitter {self.jitter_s * 1e3:g} ms, loss {self.loss:g}, queue {self.queue_s_max * 1e3:g} ms")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> LinkSpec:
        """Parse `to_dict()` output."""
        try:
            return cls(**raw)
        except TypeError as e:
            raise ConfigError(f"bad link spec {raw!r}: {e}") from e


# Inside one data center: 10 Gbit/s and 0.25 ms, the smallest inter-AZ ping
# measured on AWS (xkyle.com, "Measuring AWS Region and AZ Latency").
INTRA_DC_LINK = LinkSpec(bandwidth_bps=10e9, rtt_s=0.00025, jitter_s=0.00002)
# Between the default data centers: RTTs between AWS regions (us-east-1,
# us-west-1, eu-west-1: 73, 81 and 153 ms average ping, per the table quoted
# in "A computer scientist learns AWS: regions", 2017). Bandwidth: AWS caps
# traffic to other regions at 5 Gbit/s for instances under 32 vCPUs (EC2
# "instance network bandwidth"), but the embedded default emulates all data
# centers on one machine that moves ~420-580 MB/s through Ray
# (out/bench_migration.json), so the emulated links stay under that: 2 and
# 1 Gbit/s. Loss 1e-4 per chunk: PingER measures < 0.1% between North America
# and Europe, and cloud backbones an order of magnitude less (Haq et al.,
# "Measuring and Improving the Reliability of Wide-Area Cloud Paths").
# Jitter 1 ms is a stand-in, not a measurement; the tests sweep 0-5 ms.
DEFAULT_LINKS: dict[frozenset[str], LinkSpec] = {
    frozenset({"us-east", "us-west"}): LinkSpec(bandwidth_bps=2e9, rtt_s=0.073, jitter_s=0.001,
                                                loss=1e-4),
    frozenset({"us-east", "eu-west"}): LinkSpec(bandwidth_bps=2e9, rtt_s=0.081, jitter_s=0.001,
                                                loss=1e-4),
    frozenset({"us-west", "eu-west"}): LinkSpec(bandwidth_bps=1e9, rtt_s=0.153, jitter_s=0.001,
                                                loss=1e-4),
}


def default_link(src_dc: str, dst_dc: str) -> LinkSpec:
    """The embedded default's emulated link between two data centers (either order)."""
    if src_dc == dst_dc:
        return INTRA_DC_LINK
    try:
        return DEFAULT_LINKS[frozenset({src_dc, dst_dc})]
    except KeyError:
        known = sorted(sorted(pair) for pair in DEFAULT_LINKS)
        raise ConfigError(f"no default link between {src_dc!r} and {dst_dc!r}; "
                          f"known pairs: {known}") from None


class EmulatedLink:
    """One direction of a link: turns "leaves at t, size bytes" into an arrival time or a loss.

    Seeded: the same spec, seed and calls give the same arrivals. Departures
    must come in time order (the sender's poll() guarantees it).
    """

    def __init__(self, spec: LinkSpec, *, seed: int) -> None:
        self.spec = spec.validate()
        self._rng = random.Random(seed)
        self._rate = spec.bandwidth_bytes_per_s
        self._busy_until = 0.0
        self._last_departure = float("-inf")
        self.busy_s = 0.0  # time spent serializing chunks (including ones lost afterwards)
        self.bytes_serialized = 0
        self.chunks_dropped_queue = 0
        self.chunks_lost = 0
        self._down_until = 0.0

    @property
    def busy_until(self) -> float:
        """When the link finishes serializing what it has accepted so far."""
        return self._busy_until

    def set_bandwidth_bps(self, bandwidth_bps: float) -> None:
        """Change the rate from now on (cross traffic, a re-route); chunks already queued keep theirs."""
        self.spec = replace(self.spec, bandwidth_bps=bandwidth_bps)  # validates; pacing reads the spec
        self._rate = bandwidth_bps / 8

    def set_rtt_s(self, rtt_s: float) -> None:
        """Change the round-trip time from now on (a re-route); chunks in flight keep theirs."""
        self.spec = replace(self.spec, rtt_s=rtt_s)  # validates

    def set_down(self, until: float) -> None:
        """A partition: nothing crosses until `until` (chaos and recovery tests)."""
        self._down_until = max(self._down_until, until)

    def is_down(self, now: float) -> bool:
        """True while the link is partitioned."""
        return now < self._down_until

    def transmit(self, now: float, size: int) -> float | None:
        """A chunk of `size` bytes leaves the sender at `now`: when it arrives, or None if lost."""
        assert size > 0 and now >= self._last_departure, (now, self._last_departure)
        self._last_departure = now
        if self.is_down(now):
            self.chunks_lost += 1
            return None
        start = max(now, self._busy_until)
        if start - now > self.spec.queue_s_max:
            self.chunks_dropped_queue += 1
            return None
        serialize_s = size / self._rate
        self._busy_until = start + serialize_s
        self.busy_s += serialize_s
        self.bytes_serialized += size
        lost = self._rng.random() < self.spec.loss
        jitter = self._rng.random() * self.spec.jitter_s
        if lost:
            self.chunks_lost += 1
            return None
        return self._busy_until + self.spec.rtt_s / 2 + jitter

    def ack_arrival(self, now: float) -> float:
        """When an ack the receiver sends at `now` reaches the sender."""
        return now + self.spec.rtt_s / 2 + self._rng.random() * self.spec.jitter_s
