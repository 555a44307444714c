"""Run a migration in one process: the engine, a receiver and a ledger, no Ray.

With a ManualClock and a link rate, runs are deterministic: each batch takes
wire_bytes / rate of virtual time to deliver and the guest runs in between.
Tests use it to drive the same engine the NodeActor drives.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fabric.clock import Clock, ManualClock
from fabric.ledger import AbortMigration, BeginMigration, CommitMigration, SingleWriterLedger
from fabric.memory.vm import Vm
from fabric.migration import commands as cmd
from fabric.migration.config import FaultPlan, MigrationConfig
from fabric.migration.encoders import make_encoder
from fabric.migration.engine import MigrationEngine
from fabric.migration.receiver import IncomingMigration
from fabric.migration.report import MigrationReport
from fabric.transport import classify

STEPS_MAX = 10_000_000  # a migration that needs more engine steps than this is a bug


@dataclass
class LoopbackResult:
    """What a loopback migration left behind."""

    report: MigrationReport
    source: Vm
    destination: Vm | None
    incoming: IncomingMigration | None


class _LoopbackShell:
    """Carries out the engine's blocking commands against in-process peers."""

    def __init__(self, vm: Vm, ledger: SingleWriterLedger, clock: Clock) -> None:
        self.vm = vm
        self.ledger = ledger
        self.clock = clock
        self.incoming: IncomingMigration | None = None
        self.restored: Vm | None = None
        self.engine: MigrationEngine | None = None
        self.faults = 0

    def _fault_in(self, pages: np.ndarray) -> None:
        """A page fault at the destination. One thread cannot wait for the engine, so the page
        comes straight from the frozen source (as a demand fetch would); the engine is told too."""
        assert self.incoming is not None and self.engine is not None
        self.faults += int(pages.size)
        self.engine.request_pages(pages, self.clock.now())
        contents, hashes = self.vm.memory.snapshot_for_send(pages)
        self.incoming.memory.apply_received(pages, contents, hashes)

    def carry_out(self, command: object) -> object:
        """Do one blocking command; its result, or an exception as a failed peer would raise."""
        vm, ledger, now = self.vm, self.ledger, self.clock.now()
        if isinstance(command, cmd.PrepareDestination):
            self.incoming = IncomingMigration(vm=command.vm, epoch=command.epoch,
                                              pages=command.pages, source=command.source)
        elif isinstance(command, cmd.PauseSource):
            return vm.pause(now)
        elif isinstance(command, cmd.VerifyDestination):
            assert self.incoming is not None
            return self.incoming.finish(command.device_state, full=command.full)
        elif isinstance(command, cmd.StartPostcopy):
            assert self.incoming is not None
            self.incoming.begin_postcopy(command.device_state, command.missing, self._fault_in)
        elif isinstance(command, cmd.VerifyReceived):
            assert self.incoming is not None
            return self.incoming.end_postcopy(), {"faults": self.faults}
        elif isinstance(command, cmd.ReopenChannel):
            # A new stream, as after a reconnect: fresh decoder here, fresh encoder there.
            assert self.incoming is not None and self.engine is not None
            self.incoming.reset_stream()
            self.engine.reset_stream(make_encoder(self.engine.config, vm.memory.pages, "datacenter"))
        elif isinstance(command, cmd.CommitOwnership):
            ledger.submit(CommitMigration(vm=vm.name, epoch=command.epoch))
        elif isinstance(command, cmd.QueryOwnership):
            rec = ledger.record(vm.name)
            assert rec is not None
            return rec.owner, rec.epoch
        elif isinstance(command, cmd.ActivateDestination):
            assert self.incoming is not None
            self.restored = self.incoming.activate()
            self.restored.resume(now)
        elif isinstance(command, cmd.ReleaseSource):
            vm.stop()
        elif isinstance(command, cmd.AbortOwnership):
            ledger.submit(AbortMigration(vm=vm.name, epoch=command.epoch, reason=command.reason))
        elif isinstance(command, cmd.DiscardDestination):
            if self.incoming is not None:
                self.incoming.discard()
        elif isinstance(command, cmd.ResumeSource):
            vm.resume(now)
        elif isinstance(command, cmd.ThrottleSource):
            vm.set_throttle(command.pct)
        else:
            raise AssertionError(f"unhandled command {command}")
        return None


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
    begun = ledger.submit(BeginMigration(vm=vm.name, source=source, destination=destination))
    assert begun is not None and begun.migration is not None
    # The mode a link of this rate would measure as (no RTT in this model).
    mode = classify(0.0, link_bytes_per_s * 8) if link_bytes_per_s else "datacenter"
    engine = MigrationEngine(vm=vm.name, source=source, destination=destination,
                             epoch=begun.migration.epoch, memory=vm.memory, config=config,
                             requested_at=clock.now(), faults=faults, workload=vm.workload.describe(),
                             encoder=make_encoder(config, vm.memory.pages, str(mode)))
    engine.observe_mode(str(mode))
    engine.observe_link(link_bytes_per_s)
    shell = _LoopbackShell(vm, ledger, clock)
    shell.engine = engine
    sent: deque[cmd.SendBatch] = deque()

    def elapse(dt: float) -> None:
        if isinstance(clock, ManualClock) and dt > 0:
            clock.advance(dt)
        vm.advance(clock.now())

    for _ in range(STEPS_MAX):
        vm.advance(clock.now())
        if shell.restored is not None and shell.incoming is not None and shell.incoming.postcopy:
            shell.restored.advance(clock.now())  # post-copy: the guest runs at the destination
        try:
            command = engine.next_command(clock.now())
            if isinstance(command, cmd.Finished):
                return LoopbackResult(report=command.report, source=vm, destination=shell.restored,
                                      incoming=shell.incoming)
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
                    assert shell.incoming is not None
                    result: object = shell.incoming.apply(batch.batch)
                else:
                    elapse(command_latency_s)
                    result = shell.carry_out(command)
            except Exception as e:  # a failed peer, ledger or guest
                sent.clear()
                engine.command_failed(f"{type(e).__name__}: {e}", clock.now())
                continue
            if isinstance(command, cmd.AwaitAck):
                assert isinstance(result, dict)
                engine.batch_acked(batch.seq, clock.now(), np.asarray(result["missing"], dtype=np.uint32))
            else:
                engine.command_done(clock.now(), result)
        except Exception as e:  # the engine itself raised: the same path as in the Ray shell
            sent.clear()
            engine.crash(e, clock.now())
    raise AssertionError(f"migration of {vm.name} did not finish in {STEPS_MAX} steps")
