"""The pre-copy migration engine: a sans-IO state machine.

Round 0 sends every non-zero page; round k sends the pages dirtied during
round k-1. Each round measures bandwidth and dirty rate; when the expected
downtime (remaining dirty bytes / bandwidth) fits the limit, or a limit on
rounds or bytes is hit, the source pauses and the last dirty pages go
(stop-and-copy). The destination's digest must equal the source's before the
ledger commits. Any failure before that commit aborts: the ledger records it,
the destination drops its copy and the source resumes.

The shell calls `next_command(now)` and carries the command out; see
`fabric.migration.commands`. Time is always passed in.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from fabric.memory.layout import PAGE_SIZE
from fabric.memory.pagestore import PageStore
from fabric.memory.vm import THROTTLE_PCT_MAX, DeviceState
from fabric.migration import commands as cmd
from fabric.migration.config import FaultPlan, MigrationConfig
from fabric.migration.encoders import BatchEncoder, RawBatchEncoder
from fabric.migration.report import MB, MigrationReport, RoundStats
from fabric.transport import BandwidthPredictor
from fabric.wire import BatchHeader

# Passes of the stop-and-copy round: the first sends the last dirty pages; more
# are only needed when the destination could not resolve a page sent by
# reference. A peer that keeps missing pages after this many passes is broken.
FINAL_PASSES_MAX = 4
# The stall detector counts a round as progress when what remains fell by this much.
STALL_PROGRESS_MIN = 0.10
# Auto-converge steps when a round dirties at least this share of what it sent,
# this many rounds running (QEMU's mig_throttle_guest_down heuristic: 50%, twice).
THROTTLE_DIRTY_SHARE = 0.5
THROTTLE_ROUNDS = 2


class InjectedEngineError(RuntimeError):
    """A fault the FaultPlan asked for; behaves like any bug inside the engine."""


class Phase(StrEnum):
    """Where the engine is. Transitions only go down this list (or to ABORTING)."""

    SETUP = "setup"
    PRECOPY = "precopy"
    PAUSING = "pausing"
    STOPCOPY = "stop-and-copy"
    VERIFYING = "verifying"
    POSTCOPY_HANDOFF = "postcopy-handoff"  # pages the destination lacks and the device state go over
    COMMITTING = "committing"
    RESOLVING = "resolving"  # the commit call failed; reading the ledger to learn its outcome
    ACTIVATING = "activating"
    POSTCOPY = "postcopy"  # the VM runs at the destination; the rest of its pages follow
    POSTCOPY_RECOVERING = "postcopy-recovering"  # the path to the destination failed: reconnecting
    POSTCOPY_VERIFY = "postcopy-verify"
    RELEASING = "releasing"
    ABORTING = "aborting"
    DONE = "done"


@dataclass
class _Round:
    index: int
    pages: np.ndarray
    started: float
    final: bool = False
    cursor: int = 0
    acked_pages: int = 0
    raw_bytes: int = 0
    wire_bytes: int = 0


@dataclass(frozen=True)
class _InFlight:
    round: int
    pages: int
    raw_bytes: int
    wire_bytes: int
    idx: np.ndarray | None = None  # post-copy: which pages, to send again after a reconnect


class MigrationEngine:
    """Drives one outgoing migration of one VM."""

    def __init__(self, *, vm: str, source: str, destination: str, epoch: int,
                 memory: PageStore, config: MigrationConfig, requested_at: float,
                 faults: FaultPlan | None = None, workload: str = "",
                 link: str | None = None, encoder: BatchEncoder | None = None) -> None:
        self.config = config.validate()
        self.faults = (faults or FaultPlan()).validate()
        self.memory = memory
        self.epoch = epoch
        self._t0 = requested_at
        self.phase = Phase.SETUP
        self.report = MigrationReport(
            vm=vm, source=source, destination=destination, epoch=epoch,
            memory_bytes=memory.nbytes, downtime_ms_limit=config.downtime_limit_for(None),
            verify=config.verify, workload=workload, vm_location=source)
        if link is not None:
            self.report.link = link
        self._pending: Any = None  # the blocking command the shell is carrying out
        self._round: _Round | None = None
        self._inflight: OrderedDict[int, _InFlight] = OrderedDict()
        self._seq = 0
        self._send_allowed_at = requested_at
        self._transfer_s = 0.0  # time spent in rounds, for the bandwidth estimate
        self._paused_at: float | None = None
        self._device: DeviceState | None = None
        self._source_digest: str | None = None
        self._abort_steps: list[Any] = []
        self._precopy_rounds = 0
        self._resolving_reason = ""
        self.encoder: BatchEncoder = encoder or RawBatchEncoder()
        self._resend: set[int] = set()  # pages the destination reported missing
        self._final_passes = 0
        self._link_bytes_per_s: float | None = None
        self._rtt_s = 0.0
        self.predictor = BandwidthPredictor()
        self._mode: str | None = None
        # Blocking commands to carry out before anything else, each with what to do once done.
        self._queued: list[tuple[Any, Any]] = []
        self._throttle_pct = 0
        self._throttling = config.auto_converge  # the stall detector may switch it on too
        self._heavy_rounds = 0
        self._remaining_history: list[float] = []
        self._switchover_cancels = 0
        self._guard_tripped = False
        self._postcopy = False
        self._pc_needed: np.ndarray | None = None  # post-copy: pages the destination still lacks, unsent
        self._pc_order: np.ndarray | None = None
        self._pc_cursor = 0
        self._pc_urgent: deque[int] = deque()  # demand-faulted pages, sent first
        self._pc_started: float | None = None
        self._pc_recover_deadline: float | None = None
        self._pc_retry_at = 0.0

    # -- inputs ---------------------------------------------------------------

    def next_command(self, now: float) -> cmd.Command:
        """The next thing for the shell to do."""
        assert self._pending is None, f"{self._pending} is still outstanding"
        if self.phase is Phase.DONE:
            return cmd.Finished(report=self.report)
        if self.phase is Phase.ABORTING:
            return self._next_abort_step(now)
        if self._queued:
            return self._block(self._queued[0][0])
        if self.phase in (Phase.PRECOPY, Phase.STOPCOPY) and \
                now - self._t0 > self.config.total_time_s_max:
            self._begin_abort(f"deadline: not finished within {self.config.total_time_s_max:g} s", now)
            return self._next_abort_step(now)
        if self.phase is Phase.SETUP:
            return self._block(cmd.PrepareDestination(
                vm=self.report.vm, epoch=self.epoch, pages=self.memory.pages,
                source=self.report.source))
        if self.phase in (Phase.PRECOPY, Phase.STOPCOPY):
            return self._next_transfer_command(now)
        if self.phase is Phase.PAUSING:
            return self._block(cmd.PauseSource())
        if self.phase is Phase.VERIFYING:
            assert self._device is not None
            return self._block(cmd.VerifyDestination(device_state=self._device.to_dict(),
                                                     full=self.config.verify == "full"))
        if self.phase is Phase.POSTCOPY_HANDOFF:
            assert self._device is not None and self._pc_order is not None
            return self._block(cmd.StartPostcopy(
                device_state=self._device.to_dict(), missing=self._pc_order,
                fault_retry_s=self.config.postcopy_fault_retry_s,
                recovery_s_max=self.config.postcopy_recovery_s_max))
        if self.phase is Phase.POSTCOPY:
            return self._next_postcopy_command(now)
        if self.phase is Phase.POSTCOPY_RECOVERING:
            if now < self._pc_retry_at:
                return cmd.Wait(until=self._pc_retry_at)
            return self._block(cmd.ReopenChannel())
        if self.phase is Phase.POSTCOPY_VERIFY:
            return self._block(cmd.VerifyReceived())
        if self.phase is Phase.COMMITTING:
            return self._block(cmd.CommitOwnership(epoch=self.epoch))
        if self.phase is Phase.RESOLVING:
            return self._block(cmd.QueryOwnership())
        if self.phase is Phase.ACTIVATING:
            return self._block(cmd.ActivateDestination(epoch=self.epoch))
        if self.phase is Phase.RELEASING:
            return self._block(cmd.ReleaseSource())
        raise AssertionError(f"no command in phase {self.phase}")

    def batch_acked(self, seq: int, now: float, missing: np.ndarray | None = None) -> None:
        """The destination applied batch `seq`, except the `missing` pages it could not resolve."""
        sent = self._inflight.pop(seq)
        rnd = self._round
        assert rnd is not None and rnd.index == sent.round
        lost = 0 if missing is None else int(missing.size)
        if lost:
            assert lost <= sent.pages
            self.encoder.forget(missing)
            if self.phase is Phase.POSTCOPY:
                self._requeue(missing)
            else:
                self._resend.update(int(p) for p in missing)
            self.report.pages_resent += lost
        applied = sent.pages - lost
        raw = applied * PAGE_SIZE
        rnd.acked_pages += applied
        rnd.raw_bytes += raw
        rnd.wire_bytes += sent.wire_bytes
        self.report.pages_transferred += applied
        self.report.raw_bytes += raw
        self.report.wire_bytes += sent.wire_bytes

    def observe_link(self, bytes_per_s: float | None, rtt_s: float | None = None) -> None:
        """The transport's current estimates of the link (None: unknown or unbounded)."""
        self._link_bytes_per_s = bytes_per_s
        if rtt_s is not None:
            self._rtt_s = rtt_s
        if bytes_per_s:
            self.predictor.seed(bytes_per_s)  # only takes effect before the first round ends

    def observe_mode(self, mode: str) -> None:
        """The link's mode (PBA); it sets the downtime target unless the config fixes one."""
        self._mode = mode
        self.report.mode = mode
        self.report.downtime_ms_limit = self.config.downtime_limit_for(mode)

    def _limit_ms(self) -> float:
        return self.config.downtime_limit_for(self._mode)

    def command_done(self, now: float, result: Any = None) -> None:
        """The outstanding blocking command succeeded, with `result` where it has one."""
        pending, self._pending = self._pending, None
        assert pending is not None, "no command outstanding"
        if self._queued and self._queued[0][0] is pending:
            _, then = self._queued.pop(0)
            if then is not None:
                then(now)
            return
        if isinstance(pending, cmd.PrepareDestination):
            self.report.setup_time_ms = (now - self._t0) * 1000
            self.phase = Phase.PRECOPY
            self._start_round(0, now)
        elif isinstance(pending, cmd.PauseSource):
            assert isinstance(result, DeviceState)
            self._paused_at = now
            self._device = result
            if self._postcopy:
                self._begin_postcopy(now)
            else:
                self.phase = Phase.STOPCOPY
                self._start_final_round(now)
        elif isinstance(pending, cmd.StartPostcopy):
            self.phase = Phase.COMMITTING
        elif isinstance(pending, cmd.ReopenChannel):
            self._pc_recover_deadline = None
            self.report.postcopy_recoveries += 1
            self.phase = Phase.POSTCOPY
        elif isinstance(pending, cmd.VerifyReceived):
            self._finish_postcopy(result, now)
        elif isinstance(pending, cmd.VerifyDestination):
            self._mark_downtime("verify", now)
            self.report.destination_digest = str(result)
            assert self._source_digest is not None
            if result != self._source_digest:
                self._begin_abort(f"digest mismatch: source {self._source_digest[:16]}, "
                                  f"destination {str(result)[:16]}", now)
            else:
                self.phase = Phase.COMMITTING
        elif isinstance(pending, cmd.CommitOwnership):
            self._mark_downtime("commit", now)
            self.phase = Phase.ACTIVATING
        elif isinstance(pending, cmd.QueryOwnership):
            owner, epoch = result
            if owner == self.report.destination and epoch == self.epoch:
                self.phase = Phase.ACTIVATING
            else:
                self._begin_abort(self._resolving_reason, now)
        elif isinstance(pending, cmd.ActivateDestination):
            assert self._paused_at is not None
            self._mark_downtime("activate", now)
            self.report.downtime_ms = (now - self._paused_at) * 1000
            self.report.vm_location = self.report.destination
            if self._postcopy:
                self._pc_started = now
                self.phase = Phase.POSTCOPY
            else:
                self.phase = Phase.RELEASING
        elif isinstance(pending, cmd.ReleaseSource):
            self._finish("completed", now)
        elif isinstance(pending, cmd.AbortOwnership | cmd.DiscardDestination | cmd.ResumeSource
                        | cmd.ThrottleSource):
            self._abort_step_done(pending, now, error=None)
        else:
            raise AssertionError(f"unexpected completion of {pending}")

    def command_failed(self, reason: str, now: float) -> None:
        """The outstanding command (or the transfer) failed; the engine aborts if it still can."""
        pending, self._pending = self._pending, None
        if self._queued and self._queued[0][0] is pending:
            self._queued.pop(0)
            self._begin_abort(f"{type(pending).__name__} failed: {reason}", now)
        elif isinstance(pending, cmd.AbortOwnership | cmd.DiscardDestination | cmd.ResumeSource
                        | cmd.ThrottleSource):
            self._abort_step_done(pending, now, error=reason)
        elif isinstance(pending, cmd.CommitOwnership):
            # The commit may or may not have been applied: ask before deciding.
            self._resolving_reason = f"commit failed: {reason}"
            self.phase = Phase.RESOLVING
        elif isinstance(pending, cmd.QueryOwnership):
            # Neither resuming nor activating is safe without knowing the outcome.
            self._finish("failed", now, reason=f"{self._resolving_reason}; ledger unreadable "
                         f"({reason}): outcome unknown, VM left paused at the source")
        elif isinstance(pending, cmd.ActivateDestination):
            self._finish("failed", now, reason=f"committed, but the destination did not start "
                         f"the VM ({reason}); the source keeps its stopped copy")
            self.report.vm_location = ""
        elif isinstance(pending, cmd.ReleaseSource):
            self._finish("completed", now, reason=f"source copy not released: {reason}")
        elif self.phase in (Phase.DONE, Phase.ABORTING):
            pass  # already ending; a late failure changes nothing
        elif self.phase in (Phase.POSTCOPY, Phase.POSTCOPY_VERIFY, Phase.POSTCOPY_RECOVERING):
            self._postcopy_path_failed(reason, now)
        else:
            self._begin_abort(reason, now)

    def crash(self, error: BaseException, now: float) -> None:
        """An exception escaped the engine itself: abort, or settle what the commit decided."""
        self._pending = None
        reason = f"engine error: {error!r}"
        if self.phase in (Phase.DONE, Phase.ABORTING):
            return
        if self.phase in (Phase.COMMITTING, Phase.RESOLVING):
            self._resolving_reason = reason
            self.phase = Phase.RESOLVING
        elif self.phase in (Phase.POSTCOPY, Phase.POSTCOPY_VERIFY, Phase.POSTCOPY_RECOVERING):
            self._postcopy_path_failed(reason, now)
        elif self.phase is Phase.ACTIVATING:
            self.report.vm_location = ""
            self._finish("failed", now, reason=f"{reason} after the commit, before the "
                         f"destination started the VM; the source keeps its stopped copy")
        elif self.phase is Phase.RELEASING:
            # The VM already runs at the destination; only freeing the source copy is in doubt.
            self._finish("completed", now, reason=f"source copy not released: {reason}")
        else:
            self._begin_abort(reason, now)

    # -- progress -------------------------------------------------------------

    def progress(self, now: float) -> dict[str, Any]:
        """A JSON-ready snapshot for progress bars and status pages."""
        rnd = self._round
        return {
            "vm": self.report.vm, "phase": self.phase.value, "epoch": self.epoch,
            "round": rnd.index if rnd else None, "final_round": bool(rnd and rnd.final),
            "round_pages_total": int(rnd.pages.size) if rnd else 0,
            "round_pages_done": rnd.acked_pages if rnd else 0,
            "pages_transferred": self.report.pages_transferred,
            "raw_bytes": self.report.raw_bytes, "wire_bytes": self.report.wire_bytes,
            "elapsed_ms": (now - self._t0) * 1000,
            "rounds_done": [r.__dict__.copy() for r in self.report.round_stats],
        }

    # -- transfer ---------------------------------------------------------------

    def _block(self, command: Any) -> Any:
        self._pending = command
        return command

    def _start_round(self, index: int, now: float) -> None:
        if self.faults.engine_error_at_round == index:
            raise InjectedEngineError(f"injected engine error at round {index}")
        if index == 0:
            # Everything goes in round 0; clear first so writes from now on are caught.
            self.memory.take_dirty()
            pages = self.memory.nonzero_pages()
            self.report.zero_pages_skipped = self.memory.pages - int(pages.size)
        else:
            pages = self._with_resends(self.memory.take_dirty())
        self._round = _Round(index=index, pages=pages, started=now)

    def _with_resends(self, pages: np.ndarray) -> np.ndarray:
        """`pages` plus those the destination reported missing, once each, in order."""
        if not self._resend:
            return pages
        extra = np.fromiter(self._resend, dtype=np.uint32, count=len(self._resend))
        self._resend.clear()
        return np.union1d(pages, extra).astype(np.uint32)

    def _start_final_round(self, now: float) -> None:
        index = self._round.index + 1 if self._round else 0
        self._final_passes += 1
        self._round = _Round(index=index, pages=self._with_resends(self.memory.take_dirty()),
                             started=now, final=True)

    def _next_transfer_command(self, now: float) -> cmd.Command:
        rnd = self._round
        assert rnd is not None
        if rnd.final and self._guard_should_trip(rnd, now):
            self._guard_tripped = True
        if self._guard_tripped:
            if self._inflight:
                return cmd.AwaitAck()  # let what is on the wire land, then call the switchover off
            self._cancel_switchover(rnd, now)
            return self.next_command(now)
        if rnd.cursor < rnd.pages.size:
            if len(self._inflight) >= self.config.inflight_batches_max:
                return cmd.AwaitAck()
            if now < self._send_allowed_at:
                return cmd.Wait(until=self._send_allowed_at)
            return self._send_next_batch(rnd, now)
        if rnd.final and self._source_digest is None:
            # Every last page is out; hash the frozen source while the acks come back.
            self._source_digest = self.memory.digest()
            self.report.source_digest = self._source_digest
        if self._inflight:
            return cmd.AwaitAck()
        self._end_round(rnd, now)
        return self.next_command(now)

    def _send_next_batch(self, rnd: _Round, now: float) -> cmd.SendBatch:
        idx = rnd.pages[rnd.cursor:rnd.cursor + self.config.batch_pages_max]
        rnd.cursor += idx.size
        return self._send_pages(rnd, idx, now)

    def _send_pages(self, rnd: _Round, idx: np.ndarray, now: float, *,
                    keep_idx: bool = False) -> cmd.SendBatch:
        contents, hashes = self.memory.snapshot_for_send(idx)
        header = BatchHeader(vm=self.report.vm, epoch=self.epoch, round=rnd.index, seq=self._seq)
        encoded = self.encoder.encode(header, idx, contents, hashes,
                                      link_bytes_per_s=self._link_bytes_per_s)
        size = encoded.wire_bytes
        send = cmd.SendBatch(seq=self._seq, round=rnd.index, batch=encoded.batch, pages=int(idx.size),
                             raw_bytes=encoded.raw_bytes, wire_bytes=size)
        self._inflight[self._seq] = _InFlight(round=rnd.index, pages=send.pages, raw_bytes=send.raw_bytes,
                                              wire_bytes=size, idx=idx if keep_idx else None)
        self._seq += 1
        start = max(self._send_allowed_at, now)
        if self.config.max_bandwidth_mbps is not None:
            start += size / (self.config.max_bandwidth_mbps * MB)
        self._send_allowed_at = start + self.faults.delay_per_batch_s
        return send

    def _bandwidth_bps(self) -> float:
        """Wire bytes per second over all rounds so far (0 before any)."""
        return self.report.wire_bytes / self._transfer_s if self._transfer_s > 0 else 0.0

    def _end_round(self, rnd: _Round, now: float) -> None:
        duration = max(now - rnd.started, 1e-9)
        self._transfer_s += duration
        stats = RoundStats(
            index=rnd.index, pages=rnd.acked_pages, raw_bytes=rnd.raw_bytes,
            wire_bytes=rnd.wire_bytes, started_s=rnd.started - self._t0, duration_s=duration,
            bandwidth_mbps=rnd.wire_bytes / duration / MB, final=rnd.final)
        self.report.round_stats.append(stats)
        if rnd.final:
            assert self.memory.dirty_count() == 0, "the guest wrote memory while paused"
            if self._resend:
                if self._final_passes >= FINAL_PASSES_MAX:
                    self._begin_abort(f"destination still missing {len(self._resend)} pages after "
                                      f"{FINAL_PASSES_MAX} stop-and-copy passes", now)
                    return
                self._start_final_round(now)
                return
            self._mark_downtime("stop_and_copy", now)
            self.phase = Phase.VERIFYING
            return
        self._precopy_rounds += 1
        self.report.rounds = self._precopy_rounds
        dirty = self.memory.dirty_count() + len(self._resend)
        if rnd.wire_bytes > 0:
            self.predictor.observe(rnd.wire_bytes, duration, self._rtt_s)
        # The last round's bytes on the wire at this round's compression ratio, over
        # the bandwidth PBA predicts for a round of that size (it counts the RTT).
        ratio = rnd.wire_bytes / rnd.raw_bytes if rnd.raw_bytes else 1.0
        final_bytes = dirty * PAGE_SIZE * ratio
        bandwidth = self.predictor.predict(int(final_bytes) or None, self._rtt_s) or self._bandwidth_bps()
        expected_ms = final_bytes / bandwidth * 1000 if bandwidth > 0 else float("inf")
        stats.dirty_pages = dirty
        stats.dirty_rate_mbps = dirty * PAGE_SIZE / duration / MB
        stats.expected_downtime_ms = expected_ms
        self.report.dirty_pages_rate = dirty / duration
        self.report.dirty_rate_mbps = stats.dirty_rate_mbps
        self.report.expected_downtime_ms = expected_ms
        self.report.remaining_bytes = dirty * PAGE_SIZE
        self.report.downtime_ms_limit = limit_ms = self._limit_ms()
        if dirty == 0 or expected_ms <= limit_ms:
            self._switchover("converged" if dirty else "nothing_dirty")
            return
        self._remaining_history.append(final_bytes)
        stalled = self._stalled()
        if stalled:
            self.report.stalls += 1
        if self.config.postcopy and (self._precopy_rounds >= self.config.postcopy_after_rounds
                                     or (stalled and self.config.on_stall == "postcopy")):
            self._switchover("postcopy_stall" if stalled else "postcopy_rounds", postcopy=True)
            return
        if stalled and self.config.on_stall == "abort":
            self._begin_abort(f"stalled: what remains did not fall by {STALL_PROGRESS_MIN:.0%} over "
                              f"{self.config.stall_rounds} rounds", now)
            return
        force_throttle = stalled and self.config.on_stall == "throttle"
        if force_throttle:
            self._throttling = True
        limit = None
        if self._precopy_rounds >= self.config.rounds_max:
            limit = "rounds_max"
        elif self.report.raw_bytes >= self.config.bytes_max_factor * self.memory.nbytes:
            limit = "bytes_max"
        if limit is not None:
            if self.config.on_limit == "switchover":
                self._switchover(limit)
            else:
                self._begin_abort(f"did not converge: {limit} reached with expected downtime "
                                  f"{expected_ms:.0f} ms over the {limit_ms:g} ms limit", now)
            return
        self._start_round(rnd.index + 1, now)
        self._maybe_throttle(dirty * PAGE_SIZE, rnd.raw_bytes, force=force_throttle)

    def _stalled(self) -> bool:
        """What remains has not fallen by STALL_PROGRESS_MIN over the last stall_rounds rounds."""
        h, n = self._remaining_history, self.config.stall_rounds
        return len(h) > n and h[-1] > (1 - STALL_PROGRESS_MIN) * h[-1 - n]

    def _maybe_throttle(self, dirty_bytes: int, sent_bytes: int, *, force: bool = False) -> None:
        """Auto-converge: step the guest's throttle after two rounds running that dirty half of what
        they sent (QEMU), or at once when the stall detector calls for it (`force`)."""
        if not self._throttling:
            return
        heavy = sent_bytes > 0 and dirty_bytes >= THROTTLE_DIRTY_SHARE * sent_bytes
        self._heavy_rounds = self._heavy_rounds + 1 if heavy else 0
        if self._heavy_rounds < THROTTLE_ROUNDS and not force:
            return
        self._heavy_rounds = 0
        cfg = self.config
        step = cfg.throttle_initial_pct if self._throttle_pct == 0 else cfg.throttle_increment_pct
        pct = min(THROTTLE_PCT_MAX, self._throttle_pct + step)
        if pct == self._throttle_pct:
            return

        def applied(now: float, pct: int = pct) -> None:
            self._throttle_pct = pct
            self.report.throttle_pct_max = max(self.report.throttle_pct_max, pct)
            self.report.throttle_steps += 1
        self._queued.append((cmd.ThrottleSource(pct=pct), applied))

    # -- post-copy ----------------------------------------------------------------------

    def request_pages(self, idx: np.ndarray, now: float) -> None:
        """The destination faulted on pages `idx`: send them ahead of the background push."""
        if self._pc_needed is None:
            return
        for p in idx.tolist():
            if 0 <= p < self._pc_needed.size and self._pc_needed[p]:
                self._pc_urgent.append(p)
                self.report.postcopy_demand_requests += 1

    def _begin_postcopy(self, now: float) -> None:
        pages = self._with_resends(self.memory.take_dirty())
        self._pc_order = pages
        self._pc_needed = np.zeros(self.memory.pages, dtype=bool)
        self._pc_needed[pages] = True
        self._pc_cursor = 0
        self.report.postcopy = True
        self.report.postcopy_pages = int(pages.size)
        # The guest is frozen here from now on: this digest is what must arrive.
        self._source_digest = self.memory.digest()
        self.report.source_digest = self._source_digest
        self._mark_downtime("postcopy_handoff", now)
        self.phase = Phase.POSTCOPY_HANDOFF
        self._round = _Round(index=(self._round.index + 1 if self._round else 0), pages=pages,
                             started=now, final=True)

    def _next_postcopy_batch(self) -> np.ndarray:
        """Up to postcopy_batch_pages pages: demanded ones first, then the next in order."""
        assert self._pc_needed is not None and self._pc_order is not None
        limit = self.config.postcopy_batch_pages
        out: list[int] = []
        while self._pc_urgent and len(out) < limit:
            p = self._pc_urgent.popleft()
            if self._pc_needed[p]:
                self._pc_needed[p] = False
                out.append(p)
        order = self._pc_order
        while len(out) < limit and self._pc_cursor < order.size:
            p = int(order[self._pc_cursor])
            self._pc_cursor += 1
            if self._pc_needed[p]:
                self._pc_needed[p] = False
                out.append(p)
        return np.array(sorted(out), dtype=np.uint32)

    def _next_postcopy_command(self, now: float) -> cmd.Command:
        assert self._pc_needed is not None
        rnd = self._round
        assert rnd is not None
        if len(self._inflight) < self.config.postcopy_inflight_batches:
            idx = self._next_postcopy_batch()
            if idx.size:
                return self._send_pages(rnd, idx, now, keep_idx=True)
        if self._inflight:
            return cmd.AwaitAck()
        assert not self._pc_needed.any(), "post-copy pages neither queued nor sent"
        duration = max(now - rnd.started, 1e-9)
        self._transfer_s += duration
        self.report.round_stats.append(RoundStats(
            index=rnd.index, pages=rnd.acked_pages, raw_bytes=rnd.raw_bytes, wire_bytes=rnd.wire_bytes,
            started_s=rnd.started - self._t0, duration_s=duration,
            bandwidth_mbps=rnd.wire_bytes / duration / MB, final=True))
        self.phase = Phase.POSTCOPY_VERIFY
        return self.next_command(now)

    def _requeue(self, idx: np.ndarray) -> None:
        """Pages that may not have arrived: send them again, first."""
        assert self._pc_needed is not None
        for p in idx.tolist():
            if not self._pc_needed[p]:
                self._pc_needed[p] = True
                self._pc_urgent.append(p)

    def _postcopy_path_failed(self, reason: str, now: float) -> None:
        """Post-copy lost its path to the destination: keep trying until the recovery deadline."""
        for sent in self._inflight.values():
            if sent.idx is not None:
                self._requeue(sent.idx)
        self._inflight.clear()
        if self._pc_recover_deadline is None:
            self._pc_recover_deadline = now + self.config.postcopy_recovery_s_max
        if now > self._pc_recover_deadline:
            left = int(self._pc_needed.sum()) if self._pc_needed is not None else 0
            self._finish("failed", now, reason=(
                f"post-copy lost its path to the destination for {self.config.postcopy_recovery_s_max:g} s "
                f"({reason}); the guest waits at the destination for {left} pages it cannot get"))
            self.report.vm_location = ""
            return
        self._pc_retry_at = now + min(2.0, 0.1 * (1 + self.report.postcopy_recoveries))
        self.phase = Phase.POSTCOPY_RECOVERING

    def reset_stream(self, encoder: BatchEncoder) -> None:
        """After a reconnect: a fresh codec and sequence (the destination starts a new decoder)."""
        self.encoder = encoder
        self._seq = 0

    def _finish_postcopy(self, result: Any, now: float) -> None:
        digest, faults = result
        self.report.destination_digest = str(digest)
        self.report.faults = dict(faults)
        if self._pc_started is not None:
            self.report.postcopy_ms = (now - self._pc_started) * 1000
        if digest != self._source_digest:
            self._finish("failed", now, reason=(
                f"post-copy image differs: source {str(self._source_digest)[:16]}, received "
                f"{str(digest)[:16]}; the VM runs at the destination"))
            return
        self.phase = Phase.RELEASING

    def _mark_downtime(self, step: str, now: float) -> None:
        """Charge the time since the last downtime step (or the pause) to `step`."""
        assert self._paused_at is not None
        spent = sum(self.report.downtime_breakdown_ms.values()) / 1000
        self.report.downtime_breakdown_ms[step] = (now - self._paused_at - spent) * 1000

    def _guard_should_trip(self, rnd: _Round, now: float) -> bool:
        """The switchover guard: the stop-and-copy has overrun limit x (1 + slack) with pages unsent."""
        cfg = self.config
        return (not self._guard_tripped and self._paused_at is not None
                and self._switchover_cancels < cfg.switchover_cancels_max
                and rnd.cursor < rnd.pages.size
                and (now - self._paused_at) * 1000 > self._limit_ms() * (1 + cfg.switchover_guard_slack))

    def _cancel_switchover(self, rnd: _Round, now: float) -> None:
        """Resume the source and go back to pre-copy; the final round's unsent pages go next round."""
        self._guard_tripped = False
        self._switchover_cancels += 1
        self.report.switchovers_cancelled = self._switchover_cancels
        self._resend.update(int(p) for p in rnd.pages[rnd.cursor:])
        duration = max(now - rnd.started, 1e-9)
        self._transfer_s += duration
        self.report.round_stats.append(RoundStats(
            index=rnd.index, pages=rnd.acked_pages, raw_bytes=rnd.raw_bytes, wire_bytes=rnd.wire_bytes,
            started_s=rnd.started - self._t0, duration_s=duration,
            bandwidth_mbps=rnd.wire_bytes / duration / MB, cancelled=True))

        def resumed(t: float, index: int = rnd.index + 1) -> None:
            self._paused_at = None
            self._device = None
            self._source_digest = None
            self._final_passes = 0
            self.report.downtime_breakdown_ms = {}
            self.phase = Phase.PRECOPY
            self._start_round(index, t)
        self._queued.append((cmd.ResumeSource(), resumed))

    def _switchover(self, reason: str, *, postcopy: bool = False) -> None:
        self.report.switchover_reason = reason
        self._postcopy = postcopy
        self.phase = Phase.PAUSING

    # -- ending ---------------------------------------------------------------

    def _begin_abort(self, reason: str, now: float) -> None:
        self.report.abort_reason = reason
        self.phase = Phase.ABORTING
        self._inflight.clear()  # the shell drops its in-flight sends
        steps: list[Any] = [cmd.AbortOwnership(epoch=self.epoch, reason=reason),
                            cmd.DiscardDestination(epoch=self.epoch)]
        if self._throttle_pct:
            steps.append(cmd.ThrottleSource(pct=0))
        if self._paused_at is not None:
            steps.append(cmd.ResumeSource())
        self._queued.clear()
        self._abort_steps = steps

    def _next_abort_step(self, now: float) -> cmd.Command:
        if not self._abort_steps:
            self._finish("aborted", now)
            return cmd.Finished(report=self.report)
        return self._block(self._abort_steps[0])

    def _abort_step_done(self, step: Any, now: float, error: str | None) -> None:
        assert self._abort_steps and self._abort_steps[0] is step
        self._abort_steps.pop(0)
        if error is None:
            return
        if isinstance(step, cmd.ResumeSource):
            self.report.vm_location = ""
            self._finish("failed", now, reason=f"{self.report.abort_reason}; and the source "
                         f"could not resume the VM: {error}")
            self._abort_steps = []
        else:
            kind = "ledger abort" if isinstance(step, cmd.AbortOwnership) else "destination discard"
            self.report.abort_reason += f" ({kind} failed: {error})"

    def _finish(self, status: str, now: float, reason: str | None = None) -> None:
        self.report.status = status
        self.report.bandwidth_prediction = self.predictor.summary()
        self.report.codec = self.encoder.stats()
        if reason:
            self.report.abort_reason = reason
        self.report.total_time_ms = (now - self._t0) * 1000
        if self._transfer_s > 0:
            self.report.throughput_mbps = self.report.wire_bytes / self._transfer_s / MB
        self.phase = Phase.DONE
