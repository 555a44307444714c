"""Limits and knobs of one transport endpoint pair, validated together.

Both ends of a transfer use the same `TransportConfig`. The defaults are
sized for the largest link the issue names, 10 Gbit/s at 150 ms RTT: its
bandwidth-delay product is 1.25e9 B/s x 0.15 s = 187.5 MB (179 MiB).
Smaller links use less memory: the windows follow the measured BDP, and the
bounds below only cap them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from fabric.errors import ConfigError

KiB = 1 << 10
MiB = 1 << 20


@dataclass(frozen=True, kw_only=True)
class TransportConfig:
    """What a sender and its receiver may hold and do; `validate()` says how to fix a bad value."""

    # -- chunking ---------------------------------------------------------------
    # 1 MiB chunks. Bounded below by the shell's per-call cost: at 10 Gbit/s
    # this is already ~1200 chunks (and acks) per second (not measured on Ray
    # here; the shell may group the chunks of one arrival instant per call).
    # Bounded above by the first window (cwnd_min_chunks of them), which must
    # fit the link queue at 1 Gbit/s.
    chunk_bytes: int = 1 * MiB
    # Chunks are dealt round-robin over this many streams (concurrent lanes of
    # the shell, e.g. Ray calls in flight); loss detection is time-based
    # (RACK), so the number does not change how reordering is judged.
    streams: int = 4
    # A sealed batch frame: a full raw batch of 4096 pages measured 16,863,592
    # bytes (16 MiB + 84 KiB of Arrow columns); 32 MiB leaves room for framing.
    message_bytes_max: int = 32 * MiB

    # -- sender memory -----------------------------------------------------------
    # Unacked messages the sender keeps for retransmission. The bytes between
    # the cumulative ack and the send point never exceed the receiver's window
    # (`reassembly_bytes_max`); two more messages keep the next ones ready.
    send_buffer_bytes_max: int = 512 * MiB + 2 * 32 * MiB
    # Accepted but not yet sent (a message is accepted only if it fits): two
    # batches queue behind the window, so the engine encodes the next batch
    # while the current one goes out.
    unsent_bytes_max: int = 2 * 32 * MiB

    # -- windows -----------------------------------------------------------------
    # Cap of the congestion window: cwnd_gain x BDP + cwnd_min at 10 Gbit/s x
    # 150 ms is 1.25 x 187.5 MB + 4 MiB = 238.6 MB, under 256 MiB (268 MB).
    inflight_bytes_max: int = 256 * MiB
    # Receiver reassembly memory. After a loss the receiver holds everything
    # behind the hole until the retransmission lands, about one RTT plus
    # detection: 1.5 x 187.5 MB plus the hole's message (32 MiB) fits twice.
    reassembly_bytes_max: int = 512 * MiB
    # Chunks between the cumulative ack and the send point (sender) or held for
    # reassembly (receiver): with messages of at least one chunk, a window of
    # 512 MiB holds at most 512 full chunks plus one short tail per message.
    window_chunks_max: int = 1024
    # The smallest window, and the first one, which is also the bandwidth probe
    # train: 4 chunks give 3 gaps between acks to measure the bottleneck, and
    # 4 MiB serializes in 34 ms at 1 Gbit/s, inside a 50 ms link queue.
    cwnd_min_chunks: int = 4
    # cwnd = cwnd_gain x bandwidth x min RTT, at least cwnd_min. BBR's ProbeBW
    # gain. Measured (jobs/bench_transport_sim.py --sweep-gain, 3 s transfers at
    # 1 and 10 Gbit/s, 50 and 150 ms, 1e-4 and 1% loss): 1.0 cannot discover
    # bandwidth (0.62 at 1 Gbit/s x 50 ms), 1.1 trails 1.25 under loss (0.93 vs
    # 0.97 at 1 Gbit/s x 50 ms x 1%), 1.5 and 2.0 overflow the 50 ms queue at
    # 150 ms (0.75 at 10 Gbit/s). 1.25 was never worse than 1.1 by > 0.1%.
    cwnd_gain: float = 1.25
    # Chunks leave at pacing_gain x the estimated bandwidth, so a larger window
    # does not go out as one burst into the link's queue (BBR: 1.25 up-probe).
    pacing_gain: float = 1.25
    # How far ahead of `now` poll() books departures: 5 ms keeps the shell's
    # pacing wakeups under 200 per second, and 5 ms of chunks (6 at 10 Gbit/s)
    # leaving early is a tenth of the 50 ms link queue.
    pacing_horizon_s: float = 0.005

    # -- acks ----------------------------------------------------------------------
    # Sack ranges per ack (the lowest ones: those holes block in-order
    # delivery). At 5% loss a 512-chunk window has ~26 holes; TCP fits only
    # 3-4 ranges, but each of our acks also echoes the chunks it answers.
    sack_ranges_max: int = 32
    # Echoes per ack, the newest chunks of the call; this bounds the ack's size
    # (~40 bytes each). Chunks left out are still covered by the cumulative
    # ack and the sack ranges; only their RTT samples are lost.
    ack_echo_max: int = 64

    # -- retransmission -------------------------------------------------------------
    # Retransmissions per chunk before the path is declared dead. With backed-off
    # RTOs from 0.2 s the verdict comes after ~25 s, before the migration's
    # peer_timeout_s (30 s); at 5% loss a chunk is lost 7 times in a row with
    # p = 0.05^7 = 8e-10.
    chunk_retries_max: int = 6
    # RFC 6298: 1 s before any RTT sample; minimum 200 ms as in Linux
    # (TCP_RTO_MIN) rather than RFC's 1 s; maximum 60 s (RFC 6298 2.5).
    rto_s_initial: float = 1.0
    rto_s_min: float = 0.2
    rto_s_max: float = 60.0
    # -- estimation ---------------------------------------------------------------
    # BBR's filter lengths: max bandwidth over 10 round trips, min RTT over 10 s.
    bw_window_rounds: int = 10
    min_rtt_window_s: float = 10.0

    # -- rate limit -----------------------------------------------------------------
    # QEMU's max-bandwidth, in bytes per second; None: as fast as the path allows.
    max_bandwidth_bytes_per_s: float | None = None
    # QEMU checks its rate limit every BUFFER_DELAY = 100 ms (migration/options.h,
    # limit / XFER_LIMIT_RATIO per period): a burst of 100 ms at the cap, at
    # least one chunk.
    rate_limit_burst_s: float = 0.1

    @property
    def cwnd_min_bytes(self) -> int:
        """The smallest (and first) congestion window."""
        return self.cwnd_min_chunks * self.chunk_bytes

    @property
    def rate_limit_burst_bytes(self) -> float | None:
        """Token bucket depth, or None without a rate limit."""
        if self.max_bandwidth_bytes_per_s is None:
            return None
        return max(float(self.chunk_bytes), self.max_bandwidth_bytes_per_s * self.rate_limit_burst_s)

    def validate(self) -> TransportConfig:
        """Return self, or raise ConfigError naming the bad value and what to use instead."""
        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"transport config {name}={getattr(self, name)!r}: {why}")

        def need_int(name: str, low: int, high: int) -> None:
            value = getattr(self, name)
            if type(value) is not int or not low <= value <= high:
                raise bad(name, f"use an int in {low}..{high}")

        def need_float(name: str, low: float, high: float) -> None:
            value = getattr(self, name)
            if not isinstance(value, int | float) or not low <= value <= high:
                raise bad(name, f"use a number in {low:g}..{high:g}")

        need_int("chunk_bytes", 4 * KiB, 16 * MiB)
        need_int("streams", 1, 64)
        need_int("message_bytes_max", self.chunk_bytes, 1 << 30)
        need_int("reassembly_bytes_max", self.message_bytes_max, 1 << 34)
        need_int("inflight_bytes_max", self.cwnd_min_chunks * self.chunk_bytes, self.reassembly_bytes_max)
        need_int("send_buffer_bytes_max", self.message_bytes_max, 1 << 35)
        need_int("unsent_bytes_max", self.message_bytes_max, self.send_buffer_bytes_max)
        chunks_per_message = -(-self.message_bytes_max // self.chunk_bytes)
        need_int("window_chunks_max", max(chunks_per_message, self.cwnd_min_chunks), 1 << 20)
        need_int("cwnd_min_chunks", 1, 1024)
        need_float("cwnd_gain", 1.0, 4.0)
        need_float("pacing_gain", 1.0, 4.0)
        need_float("pacing_horizon_s", 0.0, 1.0)
        need_int("sack_ranges_max", 1, 1024)
        need_int("ack_echo_max", 1, 4096)
        need_int("chunk_retries_max", 0, 64)
        need_float("rto_s_min", 1e-4, 60.0)
        need_float("rto_s_max", self.rto_s_min, 3600.0)
        need_float("rto_s_initial", self.rto_s_min, self.rto_s_max)
        need_int("bw_window_rounds", 1, 1000)
        need_float("min_rtt_window_s", 0.1, 3600.0)
        if self.max_bandwidth_bytes_per_s is not None:
            need_float("max_bandwidth_bytes_per_s", 1e3, 1e12)
        need_float("rate_limit_burst_s", 0.0, 10.0)
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> TransportConfig:
        """Parse and validate; unknown keys are an error, not ignored."""
        raw = dict(raw or {})
        unknown = set(raw) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown transport config keys {sorted(unknown)}")
        return cls(**raw).validate()
