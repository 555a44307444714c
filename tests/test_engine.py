"""The migration engine, driven in-process on a virtual clock over a modelled link."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fabric.clock import ManualClock
from fabric.errors import ConfigError
from fabric.ledger import CommitMigration, RegisterVm, SingleWriterLedger
from fabric.memory import PageStore, ReplaySpec, RunState, SyntheticSpec, Vm, make_workload
from fabric.migration import (
    FaultPlan,
    IncomingMigration,
    MigrationConfig,
    MigrationEngine,
    migrate_in_process,
)
from fabric.migration import commands as cmd

LINK = 125e6  # 1 Gbit/s, in bytes per second
# Tests of convergence logic send raw pages, so the link, not the codec, sets the pace.
RAW = {"codec": "raw"}


def running_vm(spec, clock: ManualClock, warmup_s: float = 0.3) -> Vm:
    vm = Vm.boot("vm", spec)
    vm.resume(clock.now())
    clock.advance(warmup_s)
    vm.advance(clock.now())
    return vm


def setup(spec, warmup_s: float = 0.3):
    clock = ManualClock(1000.0)
    ledger = SingleWriterLedger()
    ledger.submit(RegisterVm(vm="vm", node="src"))
    return clock, ledger, running_vm(spec, clock, warmup_s)


def expected_memory(spec, guest_time_s: float) -> np.ndarray:
    """The memory the workload must produce by `guest_time_s`, recomputed from scratch."""
    w = make_workload(spec)
    mem = PageStore(w.pages)
    w.boot(mem)
    w.run(mem, 0.0, guest_time_s)
    return mem.view()


def migrate(vm, ledger, clock, **kw):
    kw.setdefault("link_bytes_per_s", LINK)
    kw.setdefault("command_latency_s", 0.0005)
    return migrate_in_process(vm, ledger=ledger, source="src", destination="dst", clock=clock, **kw)


# -- a migration that completes ------------------------------------------------------------------

def test_memory_arrives_byte_identical_while_the_workload_writes() -> None:
    spec = SyntheticSpec(memory_mib=64, dirty_rate_mbps=60, hot_set_mib=16, seed=1)
    clock, ledger, vm = setup(spec)
    res = migrate(vm, ledger, clock, config=MigrationConfig(downtime_ms_limit=30, **RAW))
    r = res.report
    assert r.status == "completed", r.abort_reason
    assert r.rounds >= 2, "a 60 MB/s writer over 125 MB/s under 30 ms needs several rounds"
    assert r.switchover_reason == "converged" and r.expected_downtime_ms <= 30
    assert sum(s.dirty_pages for s in r.round_stats) > 0
    # the destination holds exactly the source's memory at the moment it stopped...
    assert np.array_equal(res.destination.memory.view(), res.source.memory.view())
    # ...which is exactly what the workload had written by then (nothing lost, nothing stale)
    assert res.destination.guest_time_s == res.source.guest_time_s
    assert np.array_equal(res.destination.memory.view(), expected_memory(spec, vm.guest_time_s))
    assert r.source_digest == r.destination_digest == res.destination.memory.full_digest()
    # and the VM runs only at the destination
    assert res.source.state is RunState.STOPPED and res.destination.state is RunState.RUNNING
    assert ledger.record("vm").owner == "dst" and ledger.record("vm").migration is None
    assert r.vm_location == "dst"


def test_real_capture_replaying_during_migration_arrives_intact(kv_slice: Path) -> None:
    spec = ReplaySpec(path=str(kv_slice), time_scale=8.0)  # 8x: the slice's deltas land mid-migration
    clock, ledger, vm = setup(spec, warmup_s=0.1)
    writes_before = vm.page_writes
    res = migrate(vm, ledger, clock, link_bytes_per_s=10e6)
    assert res.report.status == "completed", res.report.abort_reason
    assert vm.page_writes > writes_before, "the replay must write during the migration"
    assert np.array_equal(res.destination.memory.view(), expected_memory(spec, vm.guest_time_s))


def test_report_has_query_migrate_fields_and_is_json() -> None:
    clock, ledger, vm = setup(SyntheticSpec(memory_mib=16, dirty_rate_mbps=10, seed=2))
    r = migrate(vm, ledger, clock, config=MigrationConfig(**RAW)).report
    d = json.loads(r.to_json())
    for field in ("total_time_ms", "setup_time_ms", "downtime_ms", "expected_downtime_ms", "rounds",
                  "pages_transferred", "raw_bytes", "wire_bytes", "zero_pages_skipped",
                  "dirty_pages_rate", "throughput_mbps", "remaining_bytes", "abort_reason"):
        assert field in d
    assert r.zero_pages_skipped > 0 and r.wire_bytes >= r.raw_bytes > 0
    assert r.pages_transferred == sum(s.pages for s in r.round_stats)
    assert r.downtime_ms == pytest.approx(sum(r.downtime_breakdown_ms.values()))
    assert r.total_time_ms >= r.setup_time_ms + r.downtime_ms
    assert 0 < r.throughput_mbps <= LINK / 1e6 * 1.01


def test_the_codec_cuts_wire_bytes_and_still_delivers_every_byte(kv_slice: Path) -> None:
    spec = ReplaySpec(path=str(kv_slice), time_scale=8.0)
    runs = {}
    for codec in ("raw", "adaptive"):
        clock, ledger, vm = setup(spec, warmup_s=0.1)
        res = migrate(vm, ledger, clock, link_bytes_per_s=10e6,
                      config=MigrationConfig(codec=codec, downtime_ms_limit=30, on_limit="switchover"))
        assert res.report.status == "completed", res.report.abort_reason
        assert np.array_equal(res.destination.memory.view(), expected_memory(spec, vm.guest_time_s))
        runs[codec] = res.report
    assert runs["adaptive"].wire_bytes < 0.6 * runs["raw"].wire_bytes  # real kv pages compress well
    used = runs["adaptive"].codec["encodings"]
    assert used["zstd"]["pages"] + used["delta"]["pages"] > 0
    assert runs["raw"].codec == {"encoder": "raw", "pages": runs["raw"].pages_transferred,
                                 "raw_bytes": runs["raw"].raw_bytes, "wire_bytes": runs["raw"].wire_bytes}


def test_pages_the_destination_cannot_resolve_are_resent_and_arrive() -> None:
    """A sender told the destination holds content it does not: those REFs come back missing."""
    spec = SyntheticSpec(memory_mib=8, dirty_rate_mbps=5, seed=13)
    clock, ledger, vm = setup(spec)
    from fabric.codec import content_keys
    claimed = content_keys(vm.memory.read(vm.memory.nonzero_pages()[:200]))

    def advertise_false_holdings(c) -> None:
        if isinstance(c, cmd.PrepareDestination):
            engine_encoder["e"].add_destination_holdings(claimed)
    engine_encoder: dict = {}
    original = MigrationEngine.__init__

    def capture(self, *a, **k):
        original(self, *a, **k)
        engine_encoder["e"] = self.encoder
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(MigrationEngine, "__init__", capture)
        res = migrate(vm, ledger, clock, intercept=advertise_false_holdings)
    assert res.report.status == "completed", res.report.abort_reason
    assert res.report.pages_resent > 0  # the false references did come back missing
    assert np.array_equal(res.destination.memory.view(), res.source.memory.view())
    assert np.array_equal(res.destination.memory.view(), expected_memory(spec, vm.guest_time_s))


def test_round_zero_skips_zero_pages() -> None:
    clock, ledger, vm = setup(SyntheticSpec(memory_mib=16, dirty_rate_mbps=0, seed=3), warmup_s=0)
    nonzero = vm.memory.nonzero_pages().size
    r = migrate(vm, ledger, clock).report
    assert r.round_stats[0].pages == nonzero
    assert r.zero_pages_skipped == vm.memory.pages - nonzero
    assert r.rounds == 1 and r.switchover_reason == "nothing_dirty"


def test_a_page_zeroed_during_migration_is_sent() -> None:
    clock, ledger, vm = setup(SyntheticSpec(memory_mib=8, dirty_rate_mbps=0, seed=3), warmup_s=0)
    target = int(vm.memory.nonzero_pages()[0])
    acks = {"n": 0}

    def zero_after_first_ack(c) -> None:
        if isinstance(c, cmd.AwaitAck):
            acks["n"] += 1
            if acks["n"] == 1:
                vm.memory.write_bytes(target * 4096, bytes(4096))
    res = migrate(vm, ledger, clock, intercept=zero_after_first_ack)
    assert res.report.status == "completed"
    assert not res.destination.memory.view()[target].any()
    assert np.array_equal(res.destination.memory.view(), res.source.memory.view())


# -- convergence limits ---------------------------------------------------------------------------

def test_a_writer_faster_than_the_link_hits_the_limit_and_switches_over_like_xen() -> None:
    spec = SyntheticSpec(memory_mib=32, dirty_rate_mbps=80, hot_set_mib=32, seed=4)
    clock, ledger, vm = setup(spec)
    res = migrate(vm, ledger, clock, link_bytes_per_s=20e6,
                  config=MigrationConfig(rounds_max=5, downtime_ms_limit=50, on_limit="switchover", **RAW))
    r = res.report
    assert r.status == "completed"
    assert r.switchover_reason in ("rounds_max", "bytes_max")
    assert r.rounds <= 5 and r.raw_bytes <= 3 * r.memory_bytes + 32 * 1024 * 4096
    assert r.downtime_ms > 50  # forced: the limit could not be met
    assert np.array_equal(res.destination.memory.view(), expected_memory(spec, vm.guest_time_s))


def test_with_on_limit_abort_it_gives_up_and_the_vm_keeps_running_at_the_source() -> None:
    spec = SyntheticSpec(memory_mib=32, dirty_rate_mbps=80, hot_set_mib=32, seed=4)
    clock, ledger, vm = setup(spec)
    res = migrate(vm, ledger, clock, link_bytes_per_s=20e6,
                  config=MigrationConfig(rounds_max=4, downtime_ms_limit=50, on_limit="abort", **RAW))
    r = res.report
    assert r.status == "aborted" and "did not converge" in r.abort_reason
    assert r.vm_location == "src" and vm.state is RunState.RUNNING
    assert ledger.record("vm").owner == "src" and ledger.record("vm").migration is None
    assert res.incoming is not None and res.incoming.state.value == "discarded"
    assert np.array_equal(vm.memory.view(), expected_memory(spec, vm.guest_time_s))


def test_bytes_max_stops_precopy() -> None:
    spec = SyntheticSpec(memory_mib=16, dirty_rate_mbps=200, hot_set_mib=16, seed=5)
    clock, ledger, vm = setup(spec)
    r = migrate(vm, ledger, clock, link_bytes_per_s=20e6,
                config=MigrationConfig(bytes_max_factor=1.5, downtime_ms_limit=10, on_limit="switchover",
                                       **RAW)).report
    assert r.switchover_reason == "bytes_max"
    precopy_bytes = sum(s.raw_bytes for s in r.round_stats if not s.final)
    assert precopy_bytes >= 1.5 * r.memory_bytes
    assert precopy_bytes - r.round_stats[-2].raw_bytes < 1.5 * r.memory_bytes


def test_bandwidth_cap_is_respected() -> None:
    clock, ledger, vm = setup(SyntheticSpec(memory_mib=16, dirty_rate_mbps=0, seed=6), warmup_s=0)
    r = migrate(vm, ledger, clock, link_bytes_per_s=None, command_latency_s=0,
                config=MigrationConfig(max_bandwidth_mbps=5.0, batch_pages_max=64)).report
    assert r.status == "completed"
    assert r.throughput_mbps == pytest.approx(5.0, rel=0.1)


def test_deadline_aborts() -> None:
    clock, ledger, vm = setup(SyntheticSpec(memory_mib=16, dirty_rate_mbps=0, seed=6), warmup_s=0)
    r = migrate(vm, ledger, clock, link_bytes_per_s=1e6,
                config=MigrationConfig(total_time_s_max=1.0)).report
    assert r.status == "aborted" and r.abort_reason.startswith("deadline")
    assert vm.state is RunState.RUNNING and ledger.record("vm").owner == "src"


# -- failures before the commit abort safely -------------------------------------------------------

def test_an_exception_inside_the_engine_aborts_and_the_source_keeps_running() -> None:
    spec = SyntheticSpec(memory_mib=32, dirty_rate_mbps=60, hot_set_mib=16, seed=7)
    clock, ledger, vm = setup(spec)
    res = migrate(vm, ledger, clock, faults=FaultPlan(engine_error_at_round=1),
                  config=MigrationConfig(downtime_ms_limit=30, **RAW))
    r = res.report
    assert r.status == "aborted" and "injected engine error at round 1" in r.abort_reason
    assert vm.state is RunState.RUNNING and r.vm_location == "src"
    assert ledger.record("vm").owner == "src" and ledger.record("vm").migration is None
    assert np.array_equal(vm.memory.view(), expected_memory(spec, vm.guest_time_s))


@pytest.mark.parametrize("failing", ["AwaitAck", "PauseSource", "VerifyDestination"])
def test_a_dead_destination_aborts_at_any_step_before_commit(failing: str) -> None:
    spec = SyntheticSpec(memory_mib=32, dirty_rate_mbps=40, hot_set_mib=16, seed=8)
    clock, ledger, vm = setup(spec)
    seen = {"acks": 0}

    def die(c) -> None:
        if isinstance(c, cmd.AwaitAck):
            seen["acks"] += 1
        if type(c).__name__ == failing and (failing != "AwaitAck" or seen["acks"] == 3):
            raise ConnectionError("destination actor died")
    res = migrate(vm, ledger, clock, intercept=die)
    r = res.report
    assert r.status == "aborted" and "destination actor died" in r.abort_reason
    assert vm.state is RunState.RUNNING  # resumed if it had been paused
    assert ledger.record("vm").owner == "src" and ledger.record("vm").migration is None
    assert np.array_equal(vm.memory.view(), expected_memory(spec, vm.guest_time_s))


def test_a_digest_mismatch_aborts(monkeypatch: pytest.MonkeyPatch) -> None:
    clock, ledger, vm = setup(SyntheticSpec(memory_mib=16, dirty_rate_mbps=10, seed=9))
    real_finish = IncomingMigration.finish

    def finish_after_bitrot(self, device_state, *, full):
        self.memory.write_bytes(12345, b"\xff")  # the received copy rots before the check
        return real_finish(self, device_state, full=full)
    monkeypatch.setattr(IncomingMigration, "finish", finish_after_bitrot)
    r = migrate(vm, ledger, clock).report
    assert r.status == "aborted" and r.abort_reason.startswith("digest mismatch")
    assert vm.state is RunState.RUNNING and ledger.record("vm").owner == "src"


# -- the commit and after ------------------------------------------------------------------------

def test_a_commit_that_fails_is_resolved_from_the_ledger_both_ways() -> None:
    # the commit never reached the ledger: abort
    clock, ledger, vm = setup(SyntheticSpec(memory_mib=16, dirty_rate_mbps=10, seed=10))

    def lost_request(c) -> None:
        if isinstance(c, cmd.CommitOwnership):
            raise TimeoutError("ledger did not answer")
    r = migrate(vm, ledger, clock, intercept=lost_request).report
    assert r.status == "aborted" and vm.state is RunState.RUNNING
    assert ledger.record("vm").owner == "src"

    # the commit was applied but its answer was lost: the destination takes over
    clock, ledger, vm = setup(SyntheticSpec(memory_mib=16, dirty_rate_mbps=10, seed=10))

    def lost_answer(c) -> None:
        if isinstance(c, cmd.CommitOwnership):
            ledger.submit(CommitMigration(vm="vm", epoch=c.epoch))
            raise TimeoutError("answer lost")
    res = migrate(vm, ledger, clock, intercept=lost_answer)
    assert res.report.status == "completed" and res.destination is not None
    assert vm.state is RunState.STOPPED and ledger.record("vm").owner == "dst"


def test_activation_failure_after_commit_is_reported_not_hidden() -> None:
    clock, ledger, vm = setup(SyntheticSpec(memory_mib=16, dirty_rate_mbps=10, seed=11))

    def no_start(c) -> None:
        if isinstance(c, cmd.ActivateDestination):
            raise ConnectionError("destination died after commit")
    r = migrate(vm, ledger, clock, intercept=no_start).report
    assert r.status == "failed" and "keeps its stopped copy" in r.abort_reason
    assert ledger.record("vm").owner == "dst"  # the ledger's word stands
    assert vm.state is RunState.PAUSED  # fenced: the source never runs it again on its own


# -- the engine's shape ------------------------------------------------------------------------------

def test_engine_asks_one_blocking_thing_at_a_time() -> None:
    vm = Vm.boot("vm", SyntheticSpec(memory_mib=4, seed=1))
    engine = MigrationEngine(vm="vm", source="a", destination="b", epoch=2, memory=vm.memory,
                             config=MigrationConfig(), requested_at=0.0)
    first = engine.next_command(0.0)
    assert isinstance(first, cmd.PrepareDestination) and first.pages == vm.memory.pages
    with pytest.raises(AssertionError, match="still outstanding"):
        engine.next_command(0.0)
    engine.command_done(0.01)
    assert isinstance(engine.next_command(0.01), cmd.SendBatch)
    assert engine.progress(0.02)["phase"] == "precopy"


def test_config_validation_names_the_bad_value() -> None:
    with pytest.raises(ConfigError, match="downtime_ms_limit"):
        MigrationConfig(downtime_ms_limit=0).validate()
    with pytest.raises(ConfigError, match="batch_pages_max"):
        MigrationConfig(batch_pages_max=100_000).validate()
    with pytest.raises(ConfigError, match="unknown migration config keys"):
        MigrationConfig.from_dict({"downtime": 5})
    with pytest.raises(ConfigError):
        FaultPlan.from_dict({"engine_error_at_round": -1})


def test_an_engine_error_after_the_destination_started_does_not_undo_the_migration(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock, ledger, vm = setup(SyntheticSpec(memory_mib=8, dirty_rate_mbps=5, seed=12))
    real_done = MigrationEngine.command_done

    def break_on_release(self, now, result=None):
        if isinstance(self._pending, cmd.ReleaseSource):
            raise RuntimeError("bug while releasing")
        return real_done(self, now, result)
    monkeypatch.setattr(MigrationEngine, "command_done", break_on_release)
    res = migrate(vm, ledger, clock)
    assert res.report.status == "completed" and "not released" in res.report.abort_reason
    assert res.destination is not None and res.destination.state is RunState.RUNNING
    assert ledger.record("vm").owner == "dst"


# -- convergence control ---------------------------------------------------------------------------

FAST_WRITER = SyntheticSpec(memory_mib=32, dirty_rate_mbps=80, hot_set_mib=32, seed=21)
SLOW_LINK = 20e6  # bytes/s: the writer dirties four times faster than the link sends


def test_a_writer_faster_than_the_link_converges_with_auto_converge() -> None:
    clock, ledger, vm = setup(FAST_WRITER)
    res = migrate(vm, ledger, clock, link_bytes_per_s=SLOW_LINK,
                  # throttling climbs 20, 30, ... %: it takes rounds, so Xen's 3x bytes limit is lifted
                  config=MigrationConfig(auto_converge=True, downtime_ms_limit=300, rounds_max=60,
                                         bytes_max_factor=30, **RAW))
    r = res.report
    assert r.status == "completed", r.abort_reason
    assert r.switchover_reason == "converged" and r.throttle_steps >= 2
    assert r.throttle_pct_max >= 30  # 20% first, then +10% per step, as QEMU
    assert np.array_equal(res.destination.memory.view(), expected_memory(FAST_WRITER, vm.guest_time_s))
    assert res.destination.throttle_pct == 0  # the guest runs at full speed at the destination


def test_with_auto_converge_and_post_copy_off_it_aborts_cleanly_and_the_guest_is_unthrottled() -> None:
    clock, ledger, vm = setup(FAST_WRITER)
    res = migrate(vm, ledger, clock, link_bytes_per_s=SLOW_LINK,
                  config=MigrationConfig(downtime_ms_limit=300, rounds_max=8, **RAW))
    r = res.report
    assert r.status == "aborted" and "did not converge" in r.abort_reason
    assert r.throttle_steps == 0 and vm.state is RunState.RUNNING and vm.throttle_pct == 0
    assert ledger.record("vm").owner == "src" and ledger.record("vm").migration is None


def test_the_stall_detector_aborts_or_throttles_by_policy() -> None:
    clock, ledger, vm = setup(FAST_WRITER)
    r = migrate(vm, ledger, clock, link_bytes_per_s=SLOW_LINK,
                config=MigrationConfig(on_stall="abort", stall_rounds=3, **RAW)).report
    assert r.status == "aborted" and r.abort_reason.startswith("stalled") and r.stalls >= 1
    assert r.rounds <= 3 + 2
    clock, ledger, vm = setup(FAST_WRITER)
    res = migrate(vm, ledger, clock, link_bytes_per_s=SLOW_LINK,
                  config=MigrationConfig(on_stall="throttle", stall_rounds=3, rounds_max=60,
                                         bytes_max_factor=30, **RAW))
    assert res.report.status == "completed" and res.report.throttle_steps >= 1
    assert vm.throttle_pct > 0  # the source stopped throttled; the destination is not
    assert res.destination.throttle_pct == 0


def test_a_throttled_guest_that_aborts_runs_at_full_speed_again() -> None:
    clock, ledger, vm = setup(FAST_WRITER)
    r = migrate(vm, ledger, clock, link_bytes_per_s=SLOW_LINK,
                config=MigrationConfig(auto_converge=True, rounds_max=4, downtime_ms_limit=10, **RAW)).report
    assert r.status == "aborted" and r.throttle_steps >= 1
    assert vm.throttle_pct == 0 and vm.state is RunState.RUNNING


def test_per_mode_downtime_targets() -> None:
    cfg = MigrationConfig()
    assert cfg.downtime_limit_for("datacenter") == 300 and cfg.downtime_limit_for("internet") == 1000
    assert MigrationConfig(downtime_ms_limit=50).downtime_limit_for("internet") == 50
    clock, ledger, vm = setup(SyntheticSpec(memory_mib=8, dirty_rate_mbps=5, seed=22))
    r = migrate(vm, ledger, clock, link_bytes_per_s=5e6).report  # a slow link: internet mode
    assert r.mode == "internet" and r.downtime_ms_limit == 1000


def test_the_switchover_guard_calls_off_an_overrunning_stop_and_copy() -> None:
    """A stop-and-copy that overruns its limit: the source resumes, pre-copy continues, and it lands."""
    spec = SyntheticSpec(memory_mib=32, dirty_rate_mbps=30, hot_set_mib=16, seed=23)
    clock, ledger, vm = setup(spec)
    slow = {"pauses": 0, "on": False}

    def the_link_slows_during_the_first_stop_and_copy(c) -> None:
        if isinstance(c, cmd.PauseSource):
            slow["pauses"] += 1
            slow["on"] = slow["pauses"] == 1
        if isinstance(c, cmd.ResumeSource):
            slow["on"] = False  # the congestion clears while the guest runs again
        if isinstance(c, cmd.AwaitAck) and slow["on"]:
            clock.advance(0.2)  # each final batch takes 200 ms more on a congested link
    res = migrate(vm, ledger, clock, intercept=the_link_slows_during_the_first_stop_and_copy,
                  config=MigrationConfig(downtime_ms_limit=100, switchover_guard_slack=0.5,
                                         batch_pages_max=256, inflight_batches_max=1, **RAW))
    r = res.report
    assert r.switchovers_cancelled == 1 and any(s.cancelled for s in r.round_stats)
    assert r.status == "completed", r.abort_reason
    assert slow["pauses"] == 2 and r.downtime_ms <= 100 * 1.5
    assert np.array_equal(res.destination.memory.view(), expected_memory(spec, vm.guest_time_s))


# -- post-copy ------------------------------------------------------------------------------------

def test_a_writer_faster_than_the_link_converges_with_post_copy() -> None:
    clock, ledger, vm = setup(FAST_WRITER)
    res = migrate(vm, ledger, clock, link_bytes_per_s=SLOW_LINK,
                  config=MigrationConfig(postcopy=True, postcopy_after_rounds=2, **RAW))
    r = res.report
    assert r.status == "completed", r.abort_reason
    assert r.postcopy and r.switchover_reason == "postcopy_rounds" and r.postcopy_pages > 0
    assert r.faults["faults"] > 0, "the guest ran at the destination and touched pages not yet there"
    assert r.source_digest == r.destination_digest  # every page arrived as the source froze it
    assert r.downtime_ms < 50  # the hand-off only: no stop-and-copy of the dirty set
    dst = res.destination
    assert dst.state is RunState.RUNNING and dst.memory.missing_count == 0
    assert dst.guest_time_s > vm.guest_time_s  # it kept running during post-copy
    # and what it holds is exactly the guest's own timeline, continued at the destination
    assert np.array_equal(dst.memory.view(), expected_memory(FAST_WRITER, dst.guest_time_s))
    assert ledger.record("vm").owner == "dst" and vm.state is RunState.STOPPED


def test_post_copy_survives_a_broken_path_and_resumes_when_it_is_back() -> None:
    clock, ledger, vm = setup(FAST_WRITER)
    state = {"postcopy_acks": 0, "breaks": 0}

    def the_path_breaks_twice_in_post_copy(c) -> None:
        if isinstance(c, cmd.AwaitAck) and res_engine["e"].phase.value == "postcopy":
            state["postcopy_acks"] += 1
            if state["postcopy_acks"] in (2, 3):
                state["breaks"] += 1
                raise ConnectionError("the link to the destination is down")
        if isinstance(c, cmd.ReopenChannel) and state["breaks"] == 1:
            state["breaks"] += 1
            raise ConnectionError("still down")  # the first reconnect fails too
    res_engine: dict = {}
    original = MigrationEngine.__init__

    def capture(self, *a, **k):
        original(self, *a, **k)
        res_engine["e"] = self
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(MigrationEngine, "__init__", capture)
        res = migrate(vm, ledger, clock, link_bytes_per_s=SLOW_LINK,
                      intercept=the_path_breaks_twice_in_post_copy,
                      config=MigrationConfig(postcopy=True, postcopy_after_rounds=2, **RAW))
    r = res.report
    assert r.status == "completed", r.abort_reason
    assert r.postcopy_recoveries >= 2 and state["breaks"] >= 2
    assert r.source_digest == r.destination_digest
    assert np.array_equal(res.destination.memory.view(),
                          expected_memory(FAST_WRITER, res.destination.guest_time_s))


def test_post_copy_gives_up_only_after_its_recovery_deadline_and_says_so() -> None:
    clock, ledger, vm = setup(FAST_WRITER)

    def never_again(c) -> None:
        if isinstance(c, cmd.ReopenChannel | cmd.AwaitAck) and vm.state is RunState.PAUSED:
            raise ConnectionError("the source lost its path for good")
    r = migrate(vm, ledger, clock, link_bytes_per_s=SLOW_LINK, intercept=never_again,
                config=MigrationConfig(postcopy=True, postcopy_after_rounds=1, postcopy_recovery_s_max=5,
                                       **RAW)).report
    assert r.status == "failed" and "post-copy lost its path" in r.abort_reason
    assert "waits at the destination" in r.abort_reason
    assert ledger.record("vm").owner == "dst"  # ownership moved at the hand-off; the source stays fenced
    assert vm.state is RunState.PAUSED
