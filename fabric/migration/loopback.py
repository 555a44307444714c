"""Run a migration in one process: the engine, a receiver and a ledger, no Ray.

With a ManualClock and a link rate, runs are deterministic: each batch takes
wire_bytes / rate of virtual time to deliver and the guest runs in between.
Tests use it to drive the same engine the NodeActor drives.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from fabric.clock import Clock, ManualClock
from fabric.ledger import AbortMigration, BeginMigration, CommitMigration, SingleWriterLedger
from fabric.memory.vm import Vm
from fabric.migration import commands as cmd
from fabric.migration.config import FaultPlan, MigrationConfig
from fabric.migration.engine import MigrationEngine
from fabric.migration.receiver import IncomingMigration
from fabric.migration.report import MigrationReport

STEPS_MAX = 10_000_000  # a migration that needs more engine steps than this is a bug


@dataclass
class LoopbackResult:
    """What a loopback migration left behind."""

    report: MigrationReport
    source: Vm
    destination: Vm | None
    incoming: IncomingMigration | None


def migrate_in_process(vm: Vm, *, ledger: SingleWriterLedger, source: str, destination: str,
                       clock: Clock, config: MigrationConfig | None = None,
                       faults: FaultPlan | None = None, link_bytes_per_s: float | None = None,
                       command_latency_s: float = 0.0,
                       intercept: Callable[[object], None] | None = None) -> LoopbackResult:
    """Migrate `vm` from `source` to `destination`; the guest keeps running on `clock`.

    `intercept(command)` runs before each command is carried out; raising there
    makes that command fail, as a dead peer would.
    """
    config = config or MigrationConfig()
    manual = isinstance(clock, ManualClock)
    begun = ledger.submit(BeginMigration(vm=vm.name, source=source, destination=destination))
    assert begun is not None and begun.migration is not None
    epoch = begun.migration.epoch
    engine = MigrationEngine(vm=vm.name, source=source, destination=destination, epoch=epoch,
                             memory=vm.memory, config=config, requested_at=clock.now(),
                             faults=faults, workload=vm.workload.describe())
    incoming: IncomingMigration | None = None
    restored: Vm | None = None
    sent: deque[cmd.SendBatch] = deque()

    def elapse(dt: float) -> None:
        if manual and dt > 0:
            assert isinstance(clock, ManualClock)
            clock.advance(dt)
        vm.advance(clock.now())

    for _ in range(STEPS_MAX):
        vm.advance(clock.now())
        now = clock.now()
        try:
            command = engine.next_command(now)
        except Exception as e:  # an engine bug or an injected fault
            engine.crash(e, now)
            continue
        if isinstance(command, cmd.Finished):
            return LoopbackResult(report=command.report, source=vm, destination=restored,
                                  incoming=incoming)
        if isinstance(command, cmd.Wait):
            clock.sleep_until(command.until)
            continue
        if isinstance(command, cmd.SendBatch):
            sent.append(command)
            continue
        try:
            if intercept is not None:
                intercept(command)
            if isinstance(command, cmd.AwaitAck):
                batch = sent.popleft()
                if link_bytes_per_s:
                    elapse(batch.wire_bytes / link_bytes_per_s)
                assert incoming is not None
                incoming.apply(batch.batch)
                engine.batch_acked(batch.seq, clock.now())
                continue
            elapse(command_latency_s)
            result: object = None
            if isinstance(command, cmd.PrepareDestination):
                incoming = IncomingMigration(vm=command.vm, epoch=command.epoch,
                                             pages=command.pages, source=command.source)
            elif isinstance(command, cmd.PauseSource):
                result = vm.pause(clock.now())
            elif isinstance(command, cmd.VerifyDestination):
                assert incoming is not None
                result = incoming.finish(command.device_state, full=command.full)
            elif isinstance(command, cmd.CommitOwnership):
                ledger.submit(CommitMigration(vm=vm.name, epoch=command.epoch))
            elif isinstance(command, cmd.QueryOwnership):
                rec = ledger.record(vm.name)
                assert rec is not None
                result = (rec.owner, rec.epoch)
            elif isinstance(command, cmd.ActivateDestination):
                assert incoming is not None
                restored = incoming.activate()
                restored.resume(clock.now())
            elif isinstance(command, cmd.ReleaseSource):
                vm.stop()
            elif isinstance(command, cmd.AbortOwnership):
                ledger.submit(AbortMigration(vm=vm.name, epoch=command.epoch, reason=command.reason))
            elif isinstance(command, cmd.DiscardDestination):
                if incoming is not None:
                    incoming.discard()
            elif isinstance(command, cmd.ResumeSource):
                vm.resume(clock.now())
            else:
                raise AssertionError(f"unhandled command {command}")
        except Exception as e:
            sent.clear()
            engine.command_failed(f"{type(e).__name__}: {e}", clock.now())
            continue
        engine.command_done(clock.now(), result)
    raise AssertionError(f"migration of {vm.name} did not finish in {STEPS_MAX} steps")
