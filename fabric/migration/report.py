"""`MigrationReport`: what a migration did, with at least the fields of QEMU's query-migrate."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from fabric.memory.layout import PAGE_SIZE

MB = 1_000_000


@dataclass(kw_only=True)
class RoundStats:
    """One pre-copy round (or the stop-and-copy round, `final=True`)."""

    index: int
    pages: int
    raw_bytes: int
    wire_bytes: int
    started_s: float  # since the migration was requested
    duration_s: float
    bandwidth_mbps: float  # wire MB/s over the round
    dirty_pages: int = 0  # pages dirtied while this round ran
    dirty_rate_mbps: float = 0.0
    expected_downtime_ms: float = 0.0  # remaining / bandwidth, as the round ended
    final: bool = False
    cancelled: bool = False  # a stop-and-copy the switchover guard called off


@dataclass(kw_only=True)
class MigrationReport:
    """One migration, JSON-serialisable. Times in ms, rates in MB/s (10^6 bytes)."""

    vm: str
    source: str
    destination: str
    epoch: int
    status: str = "active"  # active | completed | aborted | failed
    abort_reason: str = ""
    vm_location: str = ""  # where the VM runs after this migration
    memory_bytes: int = 0
    # times (QEMU: total-time, setup-time, downtime, expected-downtime)
    total_time_ms: float = 0.0
    setup_time_ms: float = 0.0
    downtime_ms: float = 0.0
    expected_downtime_ms: float = 0.0
    downtime_ms_limit: float = 0.0
    # where the downtime went: stop_and_copy, verify, commit, activate
    downtime_breakdown_ms: dict[str, float] = field(default_factory=dict)
    # pages and bytes (QEMU: ram.transferred, normal, normal-bytes, duplicate, remaining)
    rounds: int = 0  # pre-copy rounds before switchover (QEMU: dirty-sync-count - 1)
    pages_transferred: int = 0
    raw_bytes: int = 0
    wire_bytes: int = 0
    zero_pages_skipped: int = 0
    pages_resent: int = 0  # sent by reference, unresolved at the destination, sent again in full
    remaining_bytes: int = 0
    # rates (QEMU: dirty-pages-rate, mbps)
    dirty_pages_rate: float = 0.0  # pages/s over the last round
    dirty_rate_mbps: float = 0.0
    throughput_mbps: float = 0.0  # wire bytes over the transfer time
    switchover_reason: str = ""  # converged | nothing_dirty | rounds_max | bytes_max | postcopy_*
    # convergence control
    throttle_steps: int = 0  # auto-converge steps taken
    throttle_pct_max: int = 0  # the deepest throttle the guest ran under
    stalls: int = 0  # rounds the stall detector flagged
    switchovers_cancelled: int = 0  # stop-and-copies the guard called off (the source resumed)
    # post-copy (the VM ran at the destination while these pages were still pulled in)
    postcopy: bool = False
    postcopy_pages: int = 0
    postcopy_ms: float = 0.0  # from the destination starting the VM to the last page verified
    postcopy_demand_requests: int = 0  # pages the destination asked for ahead of the push
    postcopy_recoveries: int = 0  # times the channel was reopened after the path failed
    faults: dict[str, Any] = field(default_factory=dict)  # the destination's page-fault stats
    source_digest: str = ""
    destination_digest: str = ""
    verify: str = ""
    link: str = ""
    link_emulated: bool = False
    link_bytes: int = 0  # every byte put on the link: framing, encryption, retransmissions
    link_bandwidth_mbps: float | None = None  # the emulated link's rate; None on a real network
    link_utilisation: float | None = None  # bytes on the link / (rate x transfer time), emulated links
    effective_rate: float | None = None  # guest bytes per second over the link rate
    mode: str = ""  # datacenter | hybrid | internet, as measured by PBA
    bandwidth_prediction: dict[str, Any] = field(default_factory=dict)  # PBA's per-round errors
    codec: dict[str, Any] = field(default_factory=dict)  # per encoding: pages, bytes, seconds
    transport: dict[str, Any] = field(default_factory=dict)  # chunks, retransmissions, RTT, window
    workload: str = ""
    round_stats: list[RoundStats] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    def to_json(self) -> str:
        """One JSON object."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> MigrationReport:
        """Parse `to_dict()` output."""
        raw = dict(raw)
        rounds = [RoundStats(**r) for r in raw.pop("round_stats", [])]
        return cls(**raw, round_stats=rounds)

    @property
    def pages_total(self) -> int:
        """Guest memory size in pages."""
        return self.memory_bytes // PAGE_SIZE
