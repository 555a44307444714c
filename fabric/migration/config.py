"""Limits and knobs of one migration, validated together."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from fabric.errors import ConfigError
from fabric.transport import LinkSpec
from fabric.wire import BATCH_PAGES_MAX

# Batches a sender may have in flight (the transport delivers them in order).
INFLIGHT_BATCHES_MAX = 64


@dataclass(frozen=True, kw_only=True)
class MigrationConfig:
    """What a migration may do; `validate()` says how to fix a bad value."""

    # The downtime the switchover must fit; None: the target of the link's mode.
    downtime_ms_limit: float | None = None
    # Per-mode targets. Datacenter: QEMU's default downtime-limit. Over a WAN the
    # stop-and-copy alone waits for one RTT of acks (up to 150 ms here) and the
    # ledger commit is a WAN round trip too, so 300 ms would rarely be met.
    downtime_targets_ms: dict[str, float] = field(
        default_factory=lambda: {"datacenter": 300.0, "hybrid": 500.0, "internet": 1000.0})
    # Xen stops pre-copy after 30 iterations...
    rounds_max: int = 30
    # ...or once it has sent 3x the guest's memory.
    bytes_max_factor: float = 3.0
    # What to do when a limit is hit before the downtime fits: give up and leave
    # the VM running at the source, or stop and copy anyway (Xen).
    on_limit: Literal["switchover", "abort"] = "abort"
    # Auto-converge (QEMU): when a round dirties at least half of what it sent,
    # twice running, throttle the guest: 20% first, then 10% more each step.
    auto_converge: bool = False
    throttle_initial_pct: int = 20
    throttle_increment_pct: int = 10
    # The stall detector: remaining bytes not down by 10% over this many rounds.
    stall_rounds: int = 3
    # What a stall does: keep going (until a limit), throttle the guest, switch to
    # post-copy, or abort.
    on_stall: Literal["continue", "throttle", "postcopy", "abort"] = "continue"
    # The switchover guard: a stop-and-copy that has run limit x (1 + slack)
    # without finishing is cancelled and the source resumes; at most this often.
    switchover_guard_slack: float = 0.5
    switchover_cancels_max: int = 2
    # Post-copy: after this many pre-copy rounds without converging (or on a stall
    # with on_stall="postcopy"), run the VM at the destination and pull the rest.
    postcopy: bool = False
    postcopy_after_rounds: int = 3
    # Post-copy batches are small and few in flight: a demand-faulted page waits
    # behind at most 2 x 1 MiB of background pages (16 ms at 1 Gbit/s), plus an RTT.
    postcopy_batch_pages: int = 256
    postcopy_inflight_batches: int = 2
    # The destination asks again for a page it faulted on if it has not come in this
    # long (a lost request, or a source busy reconnecting).
    postcopy_fault_retry_s: float = 1.0
    # How long post-copy keeps trying to reach the destination (or the destination
    # its source) before the guest is declared lost.
    postcopy_recovery_s_max: float = 300.0
    # 16 MiB batches, 4 in flight: fewer Ray calls, whose fixed cost dominates
    # small batches. Measured against 4 MiB x 8 with jobs/bench_migration.py
    # --batch-pages 1024 --window 8 on the 2-core dev machine: kv 581 vs 452 MB/s,
    # 1 GiB idle 422 vs 420 MB/s (equal within noise, never worse).
    batch_pages_max: int = 4096
    # In flight, counted until the destination has applied them: enough to cover a
    # WAN's bandwidth-delay product with compressed batches (2 Gbit/s x 81 ms is
    # 20 MB, about five batches at kv's ratio of 4).
    inflight_batches_max: int = 8
    # QEMU's max-bandwidth; None means as fast as the path allows.
    max_bandwidth_mbps: float | None = None
    # A migration that has not finished by then aborts.
    total_time_s_max: float = 600.0
    # A peer (destination, ledger) that does not answer one call in this time
    # is treated as failed.
    peer_timeout_s: float = 30.0
    # "incremental": the destination digest comes from page hashes verified on
    # arrival; "full": the destination also rehashes every page before commit.
    verify: Literal["incremental", "full"] = "incremental"
    # "adaptive": the HDE codec (zero pages, references, deltas, zstd; chosen per
    # batch from the measured link rate); "raw": every page as 4 KiB, for comparison.
    codec: Literal["adaptive", "raw"] = "adaptive"
    # Train a zstd dictionary on the VM's own pages and offer it to the selector.
    zstd_dictionary: bool = False
    # An emulated WAN link for this migration (LinkSpec fields: bandwidth_bps,
    # rtt_s, jitter_s, loss), instead of the topology's; for benchmarks and tests.
    link: dict[str, float] | None = None

    def validate(self) -> MigrationConfig:
        """Return self, or raise ConfigError naming the bad value and its allowed range."""
        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"migration config {name}={getattr(self, name)!r}: {why}")
        if self.downtime_ms_limit is not None and not 1 <= self.downtime_ms_limit <= 60_000:
            raise bad("downtime_ms_limit", "use 1..60000 ms, or None for the mode's target")
        if set(self.downtime_targets_ms) != {"datacenter", "hybrid", "internet"} or \
                not all(1 <= v <= 60_000 for v in self.downtime_targets_ms.values()):
            raise bad("downtime_targets_ms", "give datacenter, hybrid and internet targets in 1..60000 ms")
        if not 1 <= self.throttle_initial_pct <= 99 or not 1 <= self.throttle_increment_pct <= 99:
            raise bad("throttle_initial_pct", "throttle steps are 1..99 %")
        if not 2 <= self.stall_rounds <= 100:
            raise bad("stall_rounds", "use 2..100")
        if self.on_stall not in ("continue", "throttle", "postcopy", "abort"):
            raise bad("on_stall", "use continue, throttle, postcopy or abort")
        if self.on_stall == "postcopy" and not self.postcopy:
            raise bad("on_stall", "postcopy on a stall needs postcopy=True")
        if not 0 <= self.switchover_guard_slack <= 10 or not 0 <= self.switchover_cancels_max <= 10:
            raise bad("switchover_guard_slack", "slack 0..10, cancels 0..10")
        if not 1 <= self.postcopy_after_rounds <= 1000:
            raise bad("postcopy_after_rounds", "use 1..1000")
        if not 1 <= self.postcopy_batch_pages <= BATCH_PAGES_MAX:
            raise bad("postcopy_batch_pages", f"use 1..{BATCH_PAGES_MAX}")
        if not 1 <= self.postcopy_inflight_batches <= INFLIGHT_BATCHES_MAX:
            raise bad("postcopy_inflight_batches", f"use 1..{INFLIGHT_BATCHES_MAX}")
        if not 0.01 <= self.postcopy_fault_retry_s <= 60 or not 1 <= self.postcopy_recovery_s_max <= 86_400:
            raise bad("postcopy_fault_retry_s", "fault retry 0.01..60 s, recovery 1..86400 s")
        if not 1 <= self.rounds_max <= 1000:
            raise bad("rounds_max", "use 1..1000")
        if not 1.0 <= self.bytes_max_factor <= 100.0:
            raise bad("bytes_max_factor", "use 1..100 (times the guest memory)")
        if self.on_limit not in ("switchover", "abort"):
            raise bad("on_limit", "use 'switchover' or 'abort'")
        if not 1 <= self.batch_pages_max <= BATCH_PAGES_MAX:
            raise bad("batch_pages_max", f"use 1..{BATCH_PAGES_MAX}")
        if not 1 <= self.inflight_batches_max <= INFLIGHT_BATCHES_MAX:
            raise bad("inflight_batches_max", f"use 1..{INFLIGHT_BATCHES_MAX}")
        if self.max_bandwidth_mbps is not None and not 0.1 <= self.max_bandwidth_mbps <= 1e6:
            raise bad("max_bandwidth_mbps", "use 0.1..1000000 MB/s, or None for no cap")
        if not 0.1 <= self.total_time_s_max <= 86_400:
            raise bad("total_time_s_max", "use 0.1..86400 s")
        if not 0.1 <= self.peer_timeout_s <= 3600:
            raise bad("peer_timeout_s", "use 0.1..3600 s")
        if self.verify not in ("incremental", "full"):
            raise bad("verify", "use 'incremental' or 'full'")
        if self.codec not in ("adaptive", "raw"):
            raise bad("codec", "use 'adaptive' or 'raw'")
        if self.link is not None:
            LinkSpec.from_dict(dict(self.link)).validate()
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    def downtime_limit_for(self, mode: str | None) -> float:
        """The downtime limit in ms: the explicit one, or the target of the link's mode."""
        if self.downtime_ms_limit is not None:
            return self.downtime_ms_limit
        return self.downtime_targets_ms.get(mode or "datacenter", self.downtime_targets_ms["datacenter"])

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> MigrationConfig:
        """Parse and validate; unknown keys are an error, not ignored."""
        raw = dict(raw or {})
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ConfigError(f"unknown migration config keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**raw).validate()


@dataclass(frozen=True, kw_only=True)
class FaultPlan:
    """Faults to inject into one migration, for tests and chaos runs."""

    # Raise inside the engine when this pre-copy round starts.
    engine_error_at_round: int | None = None
    # Add this much wall time before each batch is sent (slows a migration down
    # so a test can act in the middle of it).
    delay_per_batch_s: float = 0.0
    # Flip one bit of the sealed message of this batch on its way out (a tampered frame).
    tamper_batch_seq: int | None = None
    # Send the sealed message of this batch a second time (a replayed frame).
    replay_batch_seq: int | None = None
    # Never send the sealed message of this batch (a frame lost for good).
    drop_batch_seq: int | None = None
    # Partition the (emulated) link for this long once post-copy starts.
    link_down_in_postcopy_s: float = 0.0

    def validate(self) -> FaultPlan:
        """Return self, or raise ConfigError."""
        if self.engine_error_at_round is not None and self.engine_error_at_round < 0:
            raise ConfigError("engine_error_at_round must be >= 0")
        if not 0 <= self.delay_per_batch_s <= 10:
            raise ConfigError("delay_per_batch_s must be in 0..10 s")
        if not 0 <= self.link_down_in_postcopy_s <= 3600:
            raise ConfigError("link_down_in_postcopy_s must be in 0..3600 s")
        for name in ("tamper_batch_seq", "replay_batch_seq", "drop_batch_seq"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"{name} must be >= 0")
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> FaultPlan:
        """Parse and validate."""
        try:
            return cls(**dict(raw or {})).validate()
        except TypeError as e:
            raise ConfigError(f"bad fault plan: {e}") from e
