"""`NodeActor`: one fabric node. Hosts VMs, runs outgoing migrations, receives incoming ones.

A thin shell: VMs, the engine and the receiver live in `fabric/`; this actor
moves batches between nodes, talks to the ledger, and runs the guests'
workloads on a vCPU thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from ray.exceptions import RayActorError, RayTaskError

from actors.consensus import (
    LedgerHandle,
    LedgerService,
    ReplicaHost,
    ReplicatedHandle,
    SingleWriterHandle,
)
from actors.incoming import IncomingApplier, PostcopyFaults
from actors.link_probe import WATCH_CHUNK_BYTES, WATCH_CHUNKS, packet_train, ping
from actors.metrics import LedgerMetrics, MigrationMetrics
from actors.names import LEDGER, NAMESPACE, node_actor
from actors.outgoing import OutgoingMigration, Peer
from actors.transfer import LinkShare
from fabric.clock import WallClock
from fabric.consensus.api import ClientReply, Committed
from fabric.consensus.signing import Ed25519Signer
from fabric.errors import (
    CapacityError,
    ConfigError,
    FencedError,
    MalformedBatchError,
    UnknownVmError,
    VmStateError,
)
from fabric.ledger import CommitMigration, RegisterVm, RemoveVm, command_to_dict
from fabric.ledger.hosting import LedgerConfig, build_replica, client_policy
from fabric.ledger.replicated import LedgerStateMachine
from fabric.memory import PAGE_SIZE, RunState, Vm, make_workload, spec_from_dict
from fabric.memory.cpu_meter import CpuMeter
from fabric.migration import (
    FaultPlan,
    IncomingMigration,
    IncomingState,
    MigrationConfig,
    MigrationEngine,
)
from fabric.migration.encoders import make_encoder
from fabric.secure import NodeIdentity, migration_context
from fabric.topology import NodeSpec, Topology
from fabric.transport import Ack, Chunk, EmulatedLink, LinkSpec, TransportConfig, default_link

log = logging.getLogger("novacron.node")

VCPU_TICK_S = 0.005  # how often running guests get their writes; 5 ms keeps bursts small
VCPU_STALL_S = 0.05  # an advance that took longer was stalled (post-copy faults), not computing
PROBE_BYTES_MAX = 1 << 20  # a setup probe chunk; anything larger is not a probe
RESULTS_WAIT_S_MAX = 5.0  # a long poll for batch results holds a call at most this long
LEDGER_LOAD_OPS_MAX = 100_000  # a benchmark's ledger load per call
MIB = 1 << 20


@dataclass
class _Hosted:
    vm: Vm
    epoch: int
    cpu: CpuMeter
    error: str = ""

    def describe(self, now: float) -> dict[str, Any]:
        """The VM's summary with its epoch, error and measured busy vCPUs."""
        return {**self.vm.describe(), "epoch": self.epoch, "error": self.error,
                "cpu_busy": round(self.cpu.busy(now), 4)}


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

    def __init__(self, spec: dict[str, Any], topology: dict[str, Any], state_dir: str) -> None:
        self.spec = NodeSpec(**spec)
        self._state_dir = state_dir  # this node's durable state (its ledger replica's log)
        self.topology = Topology.from_dict(topology)
        self._vms: dict[str, _Hosted] = {}
        self._incoming: dict[str, IncomingMigration] = {}
        self._appliers: dict[str, IncomingApplier] = {}
        self._postcopy_faults: dict[str, PostcopyFaults] = {}
        self._links: dict[tuple[str, Any], LinkShare] = {}  # per data center (and link override)
        self._outgoing: dict[str, OutgoingMigration] = {}
        self._reserved_mib: dict[str, float] = {}  # VMs being booted
        self._clock = WallClock()
        self._ledger_handle: LedgerHandle | None = None
        self._replica: ReplicaHost | None = None
        self._ledger_service: LedgerService | None = None
        # Signs this node's consensus messages and ledger requests (PBFT checks both).
        self._consensus_key = Ed25519PrivateKey.generate()
        # This life's ledger clients: a restarted node must never reuse the request ids
        # its previous life spent (the ledger would answer from its exactly-once cache).
        self._client_prefix = f"{node_actor(spec['name'])}@{secrets.token_hex(4)}"
        # This node's identity lives and dies with the actor: keys never leave it.
        self._identity = NodeIdentity.generate()
        self._peer_keys: dict[str, bytes] = {}
        self._metrics = MigrationMetrics(dc=self.spec.dc, node=self.spec.name)
        self._stopping = threading.Event()
        self._vcpu = threading.Thread(target=self._vcpu_loop, name="vcpu", daemon=True)
        self._vcpu.start()

    # -- plumbing ---------------------------------------------------------------

    @property
    def name(self) -> str:
        """This node's name."""
        return self.spec.name

    def _ledger(self) -> LedgerHandle:
        if self._ledger_handle is None:
            raise VmStateError(f"node {self.name} has not joined the ledger yet")
        return self._ledger_handle

    def _vcpu_loop(self) -> None:
        while not self._stopping.is_set():
            now = time.monotonic()
            for hosted in list(self._vms.values()):
                if hosted.vm.state is not RunState.RUNNING:
                    continue
                try:
                    cpu_start = time.thread_time()  # this thread's CPU: what the guest really used
                    hosted.vm.advance(now)
                    done = time.monotonic()
                    hosted.cpu.add(time.thread_time() - cpu_start, done)
                    if done - now > VCPU_STALL_S:
                        hosted.vm.rebase(done)  # stalled on page faults: that time is gone, not owed
                except Exception as e:  # a workload bug must not take the node down
                    log.exception("workload of %s failed; pausing it", hosted.vm.name)
                    hosted.error = f"workload failed: {e!r}"
                    hosted.vm.pause(now, run_due=False)
            time.sleep(VCPU_TICK_S)

    def _hosted(self, name: str) -> _Hosted:
        hosted = self._vms.get(name)
        if hosted is None:
            raise UnknownVmError(f"node {self.name} does not host VM {name!r}")
        return hosted

    def memory_mib_used(self) -> float:
        """Guest memory held here: hosted VMs, incoming copies and VMs being booted."""
        used = sum(h.vm.memory.nbytes for h in self._vms.values())
        # A post-copy VM is both hosted and still incoming: one memory, counted once.
        used += sum(i.memory.nbytes for i in self._incoming.values() if i.vm not in self._vms)
        return used / MIB + sum(self._reserved_mib.values())

    def _reserve(self, memory_mib: float, what: str) -> None:
        free = self.spec.memory_mib_max - self.memory_mib_used()
        if memory_mib > free:
            raise CapacityError(f"node {self.name} has {free:.0f} MiB free, {what} needs "
                                f"{memory_mib:.0f} MiB")

    async def _check_owner(self, vm: str, epoch: int) -> None:
        """Fencing: raise unless the ledger names this node as owner of `vm` at `epoch`."""
        rec = await self._ledger().read(vm)
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
            "vms": [h.describe(time.monotonic()) for h in self._vms.values()],
            "incoming": [{"vm": i.vm, "epoch": i.epoch, "state": i.state.value,
                          "pages_received": i.pages_received} for i in self._incoming.values()],
            "outgoing": [o.engine.progress(now) for o in self._outgoing.values()],
            "public_key": self._identity.public_bytes.hex(),
            "consensus_public_key": self._consensus_key.public_key().public_bytes(
                Encoding.Raw, PublicFormat.Raw).hex(),
            "client_prefix": self._client_prefix,
            "replica": self._replica.status() if self._replica is not None else None,
            "ray_node_id": ray.get_runtime_context().get_node_id(),
        }

    def vm_info(self, name: str) -> dict[str, Any]:
        """One hosted VM's summary."""
        h = self._hosted(name)
        return h.describe(time.monotonic())

    def vm_digest(self, name: str, full: bool = False) -> str:
        """Digest of a hosted VM's memory (full: rehash every page)."""
        mem = self._hosted(name).vm.memory
        return mem.full_digest() if full else mem.digest()

    def vm_memory(self, name: str) -> np.ndarray:
        """A copy of a hosted VM's whole memory (for checks; large)."""
        return self._hosted(name).vm.memory.view().copy()

    def migration_progress(self, vm: str) -> dict[str, Any] | None:
        """Progress of the outgoing migration of `vm`, or None."""
        outgoing = self._outgoing.get(vm)
        return outgoing.engine.progress(self._clock.now()) if outgoing else None

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
        self._vms[name] = _Hosted(vm=vm, epoch=epoch, cpu=CpuMeter(time.monotonic()))
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

    async def prepare_incoming(self, vm: str, epoch: int, pages: int, source: str,
                               hello: bytes) -> tuple[bytes, np.ndarray]:
        """Open an incoming migration the ledger has begun; answer the handshake.

        Returns the handshake reply and the content keys of the other VMs' pages
        on this node, which the source may send by reference.
        """
        rec = await self._ledger().read(vm)
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
        inc = IncomingMigration(vm=vm, epoch=epoch, pages=pages, source=source,
                                holdings=[h.vm.memory for h in self._vms.values()])
        self._incoming[vm] = inc
        context = migration_context(vm=vm, epoch=epoch, source=source, destination=self.name)
        reply = inc.respond(self._identity, self._peer_key(source), context, hello)
        return reply, inc.decoder.holdings_keys()

    def confirm_incoming(self, vm: str, epoch: int, finished: bytes, transport: dict[str, Any]) -> None:
        """The source's last handshake message; the channel opens and batches may flow."""
        inc = self._incoming_for(vm, epoch)
        inc.confirm(finished, TransportConfig.from_dict(transport))
        self._appliers[vm] = IncomingApplier(inc)

    def _applier(self, vm: str, epoch: int) -> IncomingApplier:
        self._incoming_for(vm, epoch)
        applier = self._appliers.get(vm)
        if applier is None:
            raise VmStateError(f"incoming migration of {vm} has no open channel")
        return applier

    def receive_chunks(self, vm: str, epoch: int, chunks: list[Chunk]) -> tuple[Ack, list[dict[str, Any]]]:
        """Chunks in; out the ack and results of batches applied since (bad input writes nothing)."""
        if not isinstance(chunks, list) or not all(isinstance(c, Chunk) for c in chunks):
            raise MalformedBatchError("receive_chunks takes a list of transport chunks")
        applier = self._applier(vm, epoch)
        ack, messages = applier.incoming.receive(chunks, self._clock.now())
        applier.put(messages)
        return ack, applier.drain()

    async def await_results(self, vm: str, epoch: int, timeout_s: float) -> list[dict[str, Any]]:
        """Results of applied batches, waiting up to `timeout_s` (bounded) for one."""
        return await self._applier(vm, epoch).wait_results(min(max(timeout_s, 0.0), RESULTS_WAIT_S_MAX))

    def probe(self, vm: str, epoch: int, payload: np.ndarray) -> int:
        """The setup probe's chunks land here; only the size matters."""
        self._incoming_for(vm, epoch)
        size = int(getattr(payload, "nbytes", -1))
        if not 0 < size <= PROBE_BYTES_MAX:
            raise MalformedBatchError(f"a probe carries 1..{PROBE_BYTES_MAX} bytes, not {size}")
        return size

    async def finish_incoming(self, vm: str, epoch: int, device_state: dict[str, Any], full: bool) -> str:
        """Take the device state once every batch is applied; return the received memory's digest."""
        await self._applier(vm, epoch).wait_idle()
        return self._incoming_for(vm, epoch).finish(device_state, full=full)

    async def activate_incoming(self, vm: str, epoch: int) -> None:
        """Start the received VM, once the ledger says this node owns it at `epoch` (idempotent)."""
        hosted = self._vms.get(vm)
        if hosted is not None and hosted.epoch == epoch:
            return  # already started: by the ledger's commit, or by an earlier call
        inc = self._incoming_for(vm, epoch)
        await self._check_owner(vm, epoch)
        hosted = self._vms.get(vm)
        if hosted is not None and hosted.epoch == epoch:
            return  # the other path started it while we read the ledger
        restored = inc.activate()
        if not inc.postcopy:
            del self._incoming[vm]
            applier = self._appliers.pop(vm, None)
            if applier is not None:
                applier.close()
        # In post-copy the copy stays incoming too: its last pages still arrive.
        self._vms[vm] = _Hosted(vm=restored, epoch=epoch, cpu=CpuMeter(time.monotonic()))
        restored.resume(self._clock.now())

    # -- post-copy ----------------------------------------------------------------------

    def postcopy_missing(self, vm: str) -> int:
        """Pages a post-copy guest here still waits for from its source (0 if none is in post-copy)."""
        inc = self._incoming.get(vm)
        return int(inc.memory.missing_count) if inc is not None and inc.postcopy else 0

    def start_postcopy(self, vm: str, epoch: int, device_state: dict[str, Any], missing: np.ndarray,
                       fault_retry_s: float, recovery_s_max: float) -> None:
        """The source hands over early: pages `missing` will fault in from it once the VM runs here."""
        inc = self._incoming_for(vm, epoch)
        source = ray.get_actor(node_actor(inc.source), namespace=NAMESPACE)
        faults = PostcopyFaults(memory=inc.memory, retry_s=fault_retry_s, recovery_s_max=recovery_s_max,
                                request=lambda pages: source.postcopy_request.remote(vm, epoch, pages))
        inc.begin_postcopy(device_state, missing, faults)
        self._postcopy_faults[vm] = faults

    async def finish_postcopy(self, vm: str, epoch: int) -> tuple[str, dict[str, Any]]:
        """Every page is in: the received image's digest and the fault stats; it stops being incoming."""
        applier = self._applier(vm, epoch)
        await applier.wait_idle()
        inc = self._incoming_for(vm, epoch)
        digest = inc.end_postcopy()
        faults = self._postcopy_faults.pop(vm)
        del self._incoming[vm]
        self._appliers.pop(vm).close()
        return digest, faults.stats()

    async def reopen_incoming(self, vm: str, epoch: int, hello: bytes) -> bytes:
        """The source reconnects during post-copy: a new handshake, a fresh stream, the same memory."""
        inc = self._incoming_for(vm, epoch)
        if not inc.postcopy:
            raise VmStateError(f"incoming {vm} is not in post-copy; a broken pre-copy aborts instead")
        old = self._appliers.pop(vm, None)
        if old is not None:
            with contextlib.suppress(Exception):  # what it held is sent again on the new stream
                await asyncio.wait_for(old.wait_idle(), RESULTS_WAIT_S_MAX)
            old.close()
        inc.reset_stream()
        context = migration_context(vm=vm, epoch=epoch, source=inc.source, destination=self.name)
        return inc.respond(self._identity, self._peer_key(inc.source), context, hello)

    def postcopy_request(self, vm: str, epoch: int, pages: list[int]) -> None:
        """The destination faulted on `pages`: the outgoing migration sends them first."""
        outgoing = self._outgoing.get(vm)
        if outgoing is not None and outgoing.epoch == epoch and isinstance(pages, list):
            outgoing.request_pages(pages)

    async def _activate_committed(self, vm: str, epoch: int) -> None:
        try:
            await self.activate_incoming(vm, epoch)
        except Exception:  # the source's own activate call may have won the race, or the read failed
            log.exception("starting %s@%d from the committed log", vm, epoch)

    async def discard_incoming(self, vm: str, epoch: int) -> None:
        """Drop a partial copy (idempotent); never a verified copy the ledger says is now ours."""
        inc = self._incoming.get(vm)
        if inc is not None and inc.epoch == epoch and inc.state is IncomingState.VERIFIED:
            rec = await self._ledger().read(vm)
            if rec is not None and rec["owner"] == self.name and rec["epoch"] == epoch:
                raise FencedError(f"{vm}@{epoch} committed to {self.name}: its copy is the VM now")
        inc = self._incoming.get(vm)
        if inc is not None and inc.epoch == epoch:
            inc.discard()
            del self._incoming[vm]
            applier = self._appliers.pop(vm, None)
            if applier is not None:
                applier.close()
            self._postcopy_faults.pop(vm, None)

    # -- the ledger -----------------------------------------------------------------------

    async def start_ledger(self, config: dict[str, Any], replicas: dict[str, str],
                           keys: dict[str, str], seed: int) -> None:
        """Join the ledger: host this node's replica (if it has one) and start its clients.

        `replicas` maps replica id -> node name; `keys` maps each node's actor
        name and each actor's ledger client prefix to its consensus public key
        (hex), as the controller collected them.
        """
        cfg = LedgerConfig.from_dict(config)
        if self._ledger_handle is not None:
            return  # already joined: a restarted controller boots again, the ledger stays
        if cfg.protocol == "single-writer":
            self._ledger_handle = SingleWriterHandle(ray.get_actor(LEDGER, namespace=NAMESPACE))
            return
        rids = {int(k): v for k, v in replicas.items()}
        replica_ids = tuple(sorted(rids))
        replica_actors = {rid: node_actor(n) for rid, n in rids.items()}
        policy = client_policy(cfg, replica_ids)
        self._ledger_service = LedgerService(actor_name=self._client_prefix, config=cfg, policy=policy,
                                             replica_actors=replica_actors, key=self._consensus_key,
                                             clock=self._clock)
        self._ledger_handle = ReplicatedHandle(self._ledger_service, cfg, replica_actors)
        mine = [rid for rid, n in rids.items() if n == self.name]
        if not mine:
            return
        rid = mine[0]
        client_keys = {f"{prefix}#{k}": bytes.fromhex(pub) for prefix, pub in keys.items() if "@" in prefix
                       for k in range(cfg.clients_per_actor)}
        state = LedgerStateMachine()
        replica, storage = build_replica(
            cfg, rid=rid, replica_ids=replica_ids, state_machine=state,
            signer=Ed25519Signer(rid, self._consensus_key),
            replica_keys={r: bytes.fromhex(keys[node_actor(n)]) for r, n in rids.items()},
            client_keys=client_keys, storage_dir=Path(self._state_dir) / "ledger", seed=seed,
            now_ms=int(self._clock.now() * 1000))
        self._replica = ReplicaHost(rid=rid, replica=replica, storage=storage, state=state,
                                    replica_actors=replica_actors, clock=self._clock, tick_ms=cfg.tick_ms,
                                    on_committed=self._on_committed, metrics=LedgerMetrics(
                                        dc=self.spec.dc, node=self.name, protocol=cfg.protocol))

    def consensus_deliver(self, messages: list[Any]) -> None:
        """Consensus messages from another replica."""
        if self._replica is not None and isinstance(messages, list):
            self._replica.deliver(messages)

    def consensus_request(self, requests: list[Any]) -> None:
        """Ledger requests from clients."""
        if self._replica is not None and isinstance(requests, list):
            self._replica.request(requests)

    def consensus_change_mode(self, mode: str) -> dict[str, Any] | None:
        """The link mode changed: an ACP ledger switches protocol (ConfigError for the others).
        This node's replica status after proposing the switch, or None if it hosts no replica."""
        if self._replica is None:
            return None
        self._replica.change_mode(mode)
        return self._replica.status()

    def consensus_reply(self, sender: int, replies: list[ClientReply]) -> None:
        """Replies to this node's ledger clients."""
        if self._ledger_service is not None and isinstance(replies, list):
            self._ledger_service.on_replies(sender, replies)

    async def ledger_load(self, count: int, concurrency: int, prefix: str) -> dict[str, Any]:
        """Benchmark load: register `count` throwaway VMs through this node's ledger clients,
        `concurrency` at a time; commit latencies (ms) and the wall time it took."""
        if not 1 <= count <= LEDGER_LOAD_OPS_MAX or not 1 <= concurrency <= LEDGER_LOAD_OPS_MAX:
            raise ConfigError(f"ledger_load: count and concurrency must be 1..{LEDGER_LOAD_OPS_MAX}")
        ledger = self._ledger()
        gate = asyncio.Semaphore(concurrency)
        latencies: list[float] = []

        async def one(i: int) -> None:
            async with gate:
                t0 = time.monotonic()
                cmd = RegisterVm(vm=f"{prefix}-{self.name}-{i}", node=self.name)
                await ledger.submit(command_to_dict(cmd))
                latencies.append((time.monotonic() - t0) * 1000)
        start = time.monotonic()
        await asyncio.gather(*(one(i) for i in range(count)))
        return {"latencies_ms": latencies, "seconds": time.monotonic() - start}

    async def ping(self) -> None:
        """Nothing: the yardstick of a bare actor round trip."""

    def consensus_status(self) -> dict[str, Any] | None:
        """This node's replica status, or None."""
        return self._replica.status() if self._replica is not None else None

    def consensus_records(self) -> tuple[int, list[dict[str, Any]]] | None:
        """(applied index, records) of this node's replica, or None."""
        return self._replica.local_records() if self._replica is not None else None

    def _on_committed(self, entry: Committed) -> None:
        """The committed log drives this node: a VM moved away stops here (fencing); a VM moved
        here starts from its verified copy, even if the source died right after the commit."""
        result, op = entry.result, entry.request.op
        if not getattr(result, "accepted", False) or not isinstance(op, CommitMigration | RemoveVm):
            return
        rec = result.record
        if isinstance(op, CommitMigration) and rec is not None and rec.owner == self.name:
            inc = self._incoming.get(op.vm)
            if inc is not None and inc.epoch == op.epoch and inc.state is IncomingState.VERIFIED:
                asyncio.get_running_loop().create_task(self._activate_committed(op.vm, op.epoch))
            return
        hosted = self._vms.get(op.vm)
        rec = result.record
        still_ours = rec is not None and rec.owner == self.name
        if hosted is None or still_ours or hosted.epoch >= op.epoch:
            return
        if hosted.vm.state is RunState.RUNNING:
            log.warning("fencing %s: the ledger committed epoch %d elsewhere", op.vm, op.epoch)
            hosted.vm.pause(self._clock.now())
        hosted.error = f"fenced: the ledger moved it on at epoch {op.epoch}"

    # -- outgoing migrations ------------------------------------------------------------

    def set_peer_keys(self, keys: dict[str, str]) -> None:
        """The public keys of every node (hex), as the controller collected them at boot."""
        self._peer_keys = {name: bytes.fromhex(k) for name, k in keys.items()}

    def _peer_key(self, node: str) -> bytes:
        key = self._peer_keys.get(node)
        if key is None:
            raise FencedError(f"node {self.name} has no public key for {node}: it cannot authenticate it")
        return key

    def _link_spec(self, dst: NodeSpec, cfg: MigrationConfig) -> LinkSpec | None:
        """The emulated WAN link to `dst`, or None where the network between them is real."""
        if cfg.link is not None:
            return LinkSpec.from_dict(dict(cfg.link))
        if self.topology.emulated:
            return default_link(self.spec.dc, dst.dc)
        return None

    def _link_share(self, dst: NodeSpec, spec: LinkSpec | None) -> LinkShare:
        """The link to `dst`'s data center, shared by every migration from here on it."""
        key = (dst.dc, None if spec is None else tuple(sorted(spec.to_dict().items())))
        share = self._links.get(key)
        if share is None:
            seed = zlib.crc32(f"{self.name}->{dst.dc}".encode())  # hash() of a str differs per process
            link = EmulatedLink(spec, seed=seed) if spec is not None else None
            share = self._links[key] = LinkShare(link)
        return share

    def link_fault(self, dc: str, down_s: float = 0.0, bandwidth_bps: float | None = None,
                   rtt_s: float | None = None) -> int:
        """Partition (for `down_s`), slow (to `bandwidth_bps`) or re-route (to `rtt_s`) this node's
        emulated links to `dc`.

        Chaos runs and the ledger's mode tests use it; it reaches every migration on
        those links. Returns how many links it changed (0 where the network is real:
        nothing to emulate).
        """
        if not 0 <= down_s <= 3600 or (bandwidth_bps is not None and not 1e3 <= bandwidth_bps <= 1e13) \
                or (rtt_s is not None and not 0 <= rtt_s <= 10):
            raise ConfigError("link_fault: down_s in 0..3600, bandwidth_bps in 1e3..1e13, rtt_s in 0..10")
        if self.topology.emulated and dc in self.topology.dcs and (dc != self.spec.dc or rtt_s is not None
                                                                   or bandwidth_bps is not None):
            self._link_share(self.topology.nodes_in(dc)[0], default_link(self.spec.dc, dc))
        changed = 0
        for (to_dc, _), share in self._links.items():
            if to_dc != dc or share.link is None:
                continue
            if down_s:
                share.set_down(self._clock.now() + down_s)
            if bandwidth_bps is not None:
                share.link.set_bandwidth_bps(bandwidth_bps)
            if rtt_s is not None:
                share.link.set_rtt_s(rtt_s)
            changed += 1
        return changed

    async def probe_link(self, destination: str) -> dict[str, float] | None:
        """A packet train to node `destination` through this node's link to its data center:
        {"rtt_s", "bandwidth_bps"}, or None if too little came back (the link is down)."""
        dst_spec = self.topology.node(destination)
        if dst_spec.name == self.name:
            raise ConfigError(f"node {self.name} cannot probe a link to itself")
        share = self._link_share(dst_spec, default_link(self.spec.dc, dst_spec.dc)
                                 if self.topology.emulated else None)
        if share.is_down(self._clock.now()):
            return None
        peer = ray.get_actor(node_actor(destination), namespace=NAMESPACE)
        flow = share.join()
        try:
            rtt_s = await ping(share, flow, self._clock, peer.link_probe.remote)
            train = await packet_train(share, flow, self._clock, peer.link_probe.remote,
                                       chunks=WATCH_CHUNKS, chunk_bytes=WATCH_CHUNK_BYTES)
        finally:
            share.leave(flow)
        if rtt_s is None or train is None:
            return None
        return {"rtt_s": rtt_s, "bandwidth_bps": train.bandwidth_bytes_per_s * 8}

    def link_probe(self, payload: np.ndarray) -> int:
        """A link probe's chunk or ping lands here; only its size matters."""
        size = int(getattr(payload, "nbytes", -1))
        if not 0 < size <= WATCH_CHUNK_BYTES:
            raise MalformedBatchError(f"a link probe carries 1..{WATCH_CHUNK_BYTES} bytes, not {size}")
        return size

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
        if dst_spec.name == self.name:
            raise ConfigError(f"{vm} is already on {self.name}")
        link_spec = self._link_spec(dst_spec, cfg)
        where = f"{self.spec.dc} -> {dst_spec.dc}"
        link = (f"{where}: emulated WAN link, {link_spec.describe()}" if link_spec is not None
                else f"{where}: the Ray cluster's real network (rate limit only)")
        engine = MigrationEngine(
            vm=vm, source=self.name, destination=destination, epoch=epoch,
            memory=hosted.vm.memory, config=cfg, requested_at=self._clock.now() - pre_elapsed_s,
            faults=FaultPlan.from_dict(faults), workload=hosted.vm.workload.describe(), link=link,
            # The profile until the setup probe measures the link's mode.
            encoder=make_encoder(cfg, hosted.vm.memory.pages, "datacenter"))
        outgoing = OutgoingMigration(
            node=self.name, identity=self._identity, engine=engine, vm=hosted.vm, epoch=epoch,
            source_epoch=hosted.epoch,
            peer=Peer(name=destination, actor=ray.get_actor(node_actor(destination), namespace=NAMESPACE),
                      public_key=self._peer_key(destination)),
            ledger=self._ledger(), clock=self._clock, config=cfg, link_spec=link_spec,
            link=self._link_share(dst_spec, link_spec),
            check_owner=self._check_owner, release=lambda: self._vms.pop(vm, None),
            describe_error=describe_error)
        self._outgoing[vm] = outgoing
        self._metrics.migration_started(dst_spec.dc, in_flight=len(self._outgoing))
        try:
            report = await outgoing.run()
        finally:
            del self._outgoing[vm]
            self._metrics.set_in_flight(len(self._outgoing))  # also when run() raised
        self._metrics.migration_finished(report, dst_spec.dc)
        return report

    def shutdown(self) -> None:
        """Stop the vCPU thread (the actor is going away)."""
        self._stopping.set()
