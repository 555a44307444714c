"""`NodeActor`: one fabric node. Hosts VMs, runs outgoing migrations, receives incoming ones.

A thin shell: VMs, the engine and the receiver live in `fabric/`; this actor
moves batches between nodes, talks to the ledger, and runs the guests'
workloads on a vCPU thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
from ray.exceptions import RayActorError, RayTaskError

from actors.metrics import MigrationMetrics
from actors.names import LEDGER, NAMESPACE, node_actor
from fabric.clock import WallClock
from fabric.errors import (
    CapacityError,
    FabricError,
    FencedError,
    UnknownVmError,
    VmStateError,
)
from fabric.ledger import AbortMigration, CommitMigration, command_to_dict
from fabric.memory import PAGE_SIZE, RunState, Vm, make_workload, spec_from_dict
from fabric.migration import (
    FaultPlan,
    IncomingMigration,
    MigrationConfig,
    MigrationEngine,
)
from fabric.migration import commands as cmd
from fabric.topology import NodeSpec, Topology

log = logging.getLogger("novacron.node")

VCPU_TICK_S = 0.005  # how often running guests get their writes; 5 ms keeps bursts small
ENGINE_CRASHES_MAX = 3  # engine exceptions tolerated per migration before a hard abort
MIB = 1 << 20


@dataclass
class _Hosted:
    vm: Vm
    epoch: int
    error: str = ""


def describe_error(e: BaseException) -> str:
    """A short, readable cause for reports: the remote exception, not Ray's traceback."""
    if isinstance(e, RayTaskError):
        cause = e.cause if getattr(e, "cause", None) is not None else e
        return f"{type(cause).__name__}: {str(cause).strip().splitlines()[-1][:300]}"
    if isinstance(e, RayActorError):
        return f"peer actor died ({type(e).__name__})"
    if isinstance(e, TimeoutError | asyncio.TimeoutError):
        return "peer did not answer in time"
    return f"{type(e).__name__}: {e}"


@ray.remote(num_cpus=0)
class NodeActor:
    """One node of the fabric, pinned to its data center."""

    def __init__(self, spec: dict[str, Any], topology: dict[str, Any]) -> None:
        self.spec = NodeSpec(**spec)
        self.topology = Topology.from_dict(topology)
        self._vms: dict[str, _Hosted] = {}
        self._incoming: dict[str, IncomingMigration] = {}
        self._outgoing: dict[str, MigrationEngine] = {}
        self._reserved_mib: dict[str, float] = {}  # VMs being booted
        self._clock = WallClock()
        self._ledger_handle: Any = None
        self._metrics = MigrationMetrics(dc=self.spec.dc, node=self.spec.name)
        self._stopping = threading.Event()
        self._vcpu = threading.Thread(target=self._vcpu_loop, name="vcpu", daemon=True)
        self._vcpu.start()

    # -- plumbing ---------------------------------------------------------------

    @property
    def name(self) -> str:
        """This node's name."""
        return self.spec.name

    def _ledger(self) -> Any:
        if self._ledger_handle is None:
            self._ledger_handle = ray.get_actor(LEDGER, namespace=NAMESPACE)
        return self._ledger_handle

    def _vcpu_loop(self) -> None:
        while not self._stopping.is_set():
            now = time.monotonic()
            for hosted in list(self._vms.values()):
                if hosted.vm.state is not RunState.RUNNING:
                    continue
                try:
                    hosted.vm.advance(now)
                except Exception as e:  # a workload bug must not take the node down
                    log.exception("workload of %s failed; pausing it", hosted.vm.name)
                    hosted.error = f"workload failed: {e!r}"
                    hosted.vm.pause(now)
            time.sleep(VCPU_TICK_S)

    def _hosted(self, name: str) -> _Hosted:
        hosted = self._vms.get(name)
        if hosted is None:
            raise UnknownVmError(f"node {self.name} does not host VM {name!r}")
        return hosted

    def memory_mib_used(self) -> float:
        """Guest memory held here: hosted VMs, incoming copies and VMs being booted."""
        used = sum(h.vm.memory.nbytes for h in self._vms.values())
        used += sum(i.memory.nbytes for i in self._incoming.values())
        return used / MIB + sum(self._reserved_mib.values())

    def _reserve(self, memory_mib: float, what: str) -> None:
        free = self.spec.memory_mib_max - self.memory_mib_used()
        if memory_mib > free:
            raise CapacityError(f"node {self.name} has {free:.0f} MiB free, {what} needs "
                                f"{memory_mib:.0f} MiB")

    async def _check_owner(self, vm: str, epoch: int) -> None:
        """Fencing: raise unless the ledger names this node as owner of `vm` at `epoch`."""
        rec = await self._ledger().read.remote(vm)
        if rec is None or rec["owner"] != self.name or rec["epoch"] != epoch:
            raise FencedError(f"node {self.name} does not own {vm} at epoch {epoch} "
                              f"(ledger: {rec})")

    # -- queries -----------------------------------------------------------------

    def ready(self) -> str:
        """The node's name, once constructed."""
        return self.name

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary: VMs, incoming and outgoing migrations, memory."""
        now = self._clock.now()
        return {
            "name": self.name, "dc": self.spec.dc, "memory_mib_max": self.spec.memory_mib_max,
            "memory_mib_used": round(self.memory_mib_used(), 1),
            "vms": [{**h.vm.describe(), "epoch": h.epoch, "error": h.error}
                    for h in self._vms.values()],
            "incoming": [{"vm": i.vm, "epoch": i.epoch, "state": i.state.value,
                          "pages_received": i.pages_received} for i in self._incoming.values()],
            "outgoing": [e.progress(now) for e in self._outgoing.values()],
            "ray_node_id": ray.get_runtime_context().get_node_id(),
        }

    def vm_info(self, name: str) -> dict[str, Any]:
        """One hosted VM's summary."""
        h = self._hosted(name)
        return {**h.vm.describe(), "epoch": h.epoch, "error": h.error}

    def vm_digest(self, name: str, full: bool = False) -> str:
        """Digest of a hosted VM's memory (full: rehash every page)."""
        mem = self._hosted(name).vm.memory
        return mem.full_digest() if full else mem.digest()

    def vm_memory(self, name: str) -> np.ndarray:
        """A copy of a hosted VM's whole memory (for checks; large)."""
        return self._hosted(name).vm.memory.view().copy()

    def migration_progress(self, vm: str) -> dict[str, Any] | None:
        """Progress of the outgoing migration of `vm`, or None."""
        engine = self._outgoing.get(vm)
        return engine.progress(self._clock.now()) if engine else None

    # -- VM lifecycle ---------------------------------------------------------------

    async def create_vm(self, name: str, workload: dict[str, Any], epoch: int) -> dict[str, Any]:
        """Boot a VM the ledger has registered here at `epoch`, and start it."""
        if name in self._vms or name in self._reserved_mib or name in self._incoming:
            raise VmStateError(f"node {self.name} already has a VM {name!r}")
        spec = spec_from_dict(workload)
        memory_mib = make_workload(spec).pages * PAGE_SIZE / MIB
        self._reserve(memory_mib, f"VM {name}")
        self._reserved_mib[name] = memory_mib
        try:
            await self._check_owner(name, epoch)
            vm = await asyncio.to_thread(Vm.boot, name, spec)
        finally:
            del self._reserved_mib[name]
        self._vms[name] = _Hosted(vm=vm, epoch=epoch)
        vm.resume(self._clock.now())
        return self.vm_info(name)

    def pause_vm(self, name: str) -> dict[str, Any]:
        """Pause a hosted VM."""
        h = self._hosted(name)
        if name in self._outgoing:
            raise VmStateError(f"VM {name} is migrating")
        h.vm.pause(self._clock.now())
        return self.vm_info(name)

    async def resume_vm(self, name: str) -> dict[str, Any]:
        """Resume a hosted VM, if this node still owns it (fencing)."""
        h = self._hosted(name)
        await self._check_owner(name, h.epoch)
        h.vm.resume(self._clock.now())
        h.error = ""
        return self.vm_info(name)

    async def delete_vm(self, name: str) -> None:
        """Stop and drop a VM this node owns (the caller removes it from the ledger)."""
        h = self._hosted(name)
        if name in self._outgoing:
            raise VmStateError(f"VM {name} is migrating")
        h.vm.stop()
        del self._vms[name]

    # -- incoming migrations ---------------------------------------------------------

    def _incoming_for(self, vm: str, epoch: int) -> IncomingMigration:
        inc = self._incoming.get(vm)
        if inc is None or inc.epoch != epoch:
            raise VmStateError(f"node {self.name} has no incoming migration of {vm} at epoch {epoch}")
        return inc

    async def prepare_incoming(self, vm: str, epoch: int, pages: int, source: str) -> None:
        """Allocate an empty memory for an incoming VM, if the ledger has that migration open."""
        rec = await self._ledger().read.remote(vm)
        mig = (rec or {}).get("migration") or {}
        if mig.get("destination") != self.name or mig.get("epoch") != epoch or mig.get("source") != source:
            raise FencedError(f"no migration of {vm} from {source} to {self.name} is open at "
                              f"epoch {epoch} (ledger: {rec})")
        if vm in self._vms:
            raise VmStateError(f"node {self.name} already hosts {vm}")
        old = self._incoming.get(vm)
        if old is not None and old.epoch >= epoch:
            raise VmStateError(f"incoming {vm} at epoch {old.epoch} is not older than {epoch}")
        self._incoming.pop(vm, None)  # a stale copy from an aborted attempt
        self._reserve(pages * PAGE_SIZE / MIB, f"incoming VM {vm}")
        self._incoming[vm] = IncomingMigration(vm=vm, epoch=epoch, pages=pages, source=source)

    def apply_batch(self, vm: str, epoch: int, batch: Any) -> int:
        """Check and write one batch; returns its sequence number. A bad batch writes nothing."""
        return self._incoming_for(vm, epoch).apply(batch)["seq"]

    def finish_incoming(self, vm: str, epoch: int, device_state: dict[str, Any], full: bool) -> str:
        """Take the device state; return the received memory's digest."""
        return self._incoming_for(vm, epoch).finish(device_state, full=full)

    async def activate_incoming(self, vm: str, epoch: int) -> None:
        """Start the received VM, once the ledger says this node owns it at `epoch`."""
        inc = self._incoming_for(vm, epoch)
        await self._check_owner(vm, epoch)
        restored = inc.activate()
        del self._incoming[vm]
        self._vms[vm] = _Hosted(vm=restored, epoch=epoch)
        restored.resume(self._clock.now())

    def discard_incoming(self, vm: str, epoch: int) -> None:
        """Drop a partial copy (idempotent)."""
        inc = self._incoming.get(vm)
        if inc is not None and inc.epoch == epoch:
            inc.discard()
            del self._incoming[vm]

    # -- outgoing migrations ------------------------------------------------------------

    def _link(self, dst: NodeSpec) -> str:
        where = f"{self.spec.dc} -> {dst.dc}"
        if self.topology.emulated:
            return (f"{where}: emulated data centers on shared hardware; pages move through "
                    f"Ray's object store, no WAN link is emulated")
        return f"{where}: the Ray cluster's real network"

    async def migrate_out(self, vm: str, destination: str, epoch: int,
                          config: dict[str, Any] | None = None, faults: dict[str, Any] | None = None,
                          pre_elapsed_s: float = 0.0) -> dict[str, Any]:
        """Run the migration of hosted `vm` to node `destination` (Begin already committed)."""
        hosted = self._hosted(vm)
        if vm in self._outgoing:
            raise VmStateError(f"VM {vm} is already migrating")
        if hosted.vm.state is not RunState.RUNNING:
            raise VmStateError(f"VM {vm} is {hosted.vm.state.value}; only running VMs migrate")
        cfg = MigrationConfig.from_dict(config)
        dst_spec = self.topology.node(destination)
        dst = ray.get_actor(node_actor(destination), namespace=NAMESPACE)
        engine = MigrationEngine(
            vm=vm, source=self.name, destination=destination, epoch=epoch,
            memory=hosted.vm.memory, config=cfg, requested_at=self._clock.now() - pre_elapsed_s,
            faults=FaultPlan.from_dict(faults), workload=hosted.vm.workload.describe(),
            link=self._link(dst_spec))
        self._outgoing[vm] = engine
        self._metrics.migration_started(dst_spec.dc)
        try:
            report = await self._drive(engine, hosted, dst, cfg)
        finally:
            del self._outgoing[vm]
        self._metrics.migration_finished(report, dst_spec.dc)
        return report

    async def _drive(self, engine: MigrationEngine, hosted: _Hosted, dst: Any,
                     cfg: MigrationConfig) -> dict[str, Any]:
        """Carry out the engine's commands until it finishes."""
        inflight: deque[tuple[int, Any]] = deque()
        crashes = 0
        while True:
            try:
                command = engine.next_command(self._clock.now())
                if isinstance(command, cmd.Finished):
                    return command.report.to_dict()
                if isinstance(command, cmd.Wait):
                    # Pacing: take the acks that arrive meanwhile, so progress stays current.
                    timeout = max(0.0, command.until - self._clock.now())
                    if not inflight:
                        await asyncio.sleep(timeout)
                        continue
                    done, _ = await asyncio.wait({inflight[0][1]}, timeout=timeout)
                    if not done:
                        continue
                    command = cmd.AwaitAck()
                if isinstance(command, cmd.SendBatch):
                    ref = dst.apply_batch.remote(engine.report.vm, engine.epoch, command.batch)
                    inflight.append((command.seq, asyncio.ensure_future(ref)))
                    continue
                try:
                    result = await asyncio.wait_for(
                        self._execute(command, engine, hosted, dst, inflight), cfg.peer_timeout_s)
                except Exception as e:  # the peer, the ledger or this node's I/O failed
                    inflight.clear()
                    engine.command_failed(describe_error(e), self._clock.now())
                    continue
                if isinstance(command, cmd.AwaitAck):
                    engine.batch_acked(result, self._clock.now())
                else:
                    engine.command_done(self._clock.now(), result)
            except Exception as e:  # the engine itself raised
                crashes += 1
                log.exception("migration engine error (%d)", crashes)
                if crashes > ENGINE_CRASHES_MAX:
                    return await self._hard_abort(engine, hosted, dst, e)
                inflight.clear()
                engine.crash(e, self._clock.now())

    async def _execute(self, command: Any, engine: MigrationEngine, hosted: _Hosted, dst: Any,
                       inflight: deque[tuple[int, Any]]) -> Any:
        vm, epoch = engine.report.vm, engine.epoch
        if isinstance(command, cmd.AwaitAck):
            seq, ref = inflight.popleft()
            acked = await ref
            assert acked == seq, (acked, seq)
            return seq
        if isinstance(command, cmd.PrepareDestination):
            return await dst.prepare_incoming.remote(vm, epoch, command.pages, self.name)
        if isinstance(command, cmd.PauseSource):
            return hosted.vm.pause(self._clock.now())
        if isinstance(command, cmd.VerifyDestination):
            return await dst.finish_incoming.remote(vm, epoch, command.device_state, command.full)
        if isinstance(command, cmd.CommitOwnership):
            return await self._ledger().submit.remote(
                command_to_dict(CommitMigration(vm=vm, epoch=command.epoch)))
        if isinstance(command, cmd.QueryOwnership):
            rec = await self._ledger().read.remote(vm)
            if rec is None:
                raise UnknownVmError(f"ledger has no record of {vm}")
            return rec["owner"], rec["epoch"]
        if isinstance(command, cmd.ActivateDestination):
            return await dst.activate_incoming.remote(vm, command.epoch)
        if isinstance(command, cmd.ReleaseSource):
            hosted.vm.stop()
            self._vms.pop(vm, None)
            return None
        if isinstance(command, cmd.AbortOwnership):
            return await self._ledger().submit.remote(command_to_dict(
                AbortMigration(vm=vm, epoch=command.epoch, reason=command.reason[:500])))
        if isinstance(command, cmd.DiscardDestination):
            return await dst.discard_incoming.remote(vm, command.epoch)
        if isinstance(command, cmd.ResumeSource):
            await self._check_owner(vm, hosted.epoch)
            hosted.vm.resume(self._clock.now())
            return None
        raise AssertionError(f"unhandled command {command}")

    async def _hard_abort(self, engine: MigrationEngine, hosted: _Hosted, dst: Any,
                          error: BaseException) -> dict[str, Any]:
        """The engine keeps failing: abort without it, step by step, best effort."""
        report = engine.report
        report.status = "aborted"
        report.abort_reason = f"engine failed repeatedly: {error!r}"
        report.vm_location = self.name
        steps = [
            self._ledger().submit.remote(command_to_dict(
                AbortMigration(vm=report.vm, epoch=engine.epoch, reason="engine failure"))),
            dst.discard_incoming.remote(report.vm, engine.epoch),
        ]
        for ref in steps:
            try:
                await ref
            except Exception as e:
                report.abort_reason += f"; {describe_error(e)}"
        if hosted.vm.state is RunState.PAUSED:
            try:
                await self._check_owner(report.vm, hosted.epoch)
                hosted.vm.resume(self._clock.now())
            except (FabricError, RayActorError, RayTaskError) as e:
                report.status = "failed"
                report.vm_location = ""
                report.abort_reason += f"; source could not resume: {describe_error(e)}"
        return report.to_dict()

    def shutdown(self) -> None:
        """Stop the vCPU thread (the actor is going away)."""
        self._stopping.set()
