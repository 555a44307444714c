"""`FabricController`: the topology, the VM registry, and the start of every migration.

Named `fabric/controller` in the `novacron` namespace. It creates the ledger
and node actors at boot, places new VMs, picks migration targets, commits
Begin in the ledger and hands the migration to the source node.

Placement: when more than one node could take a VM (a new VM without a node, a
migration or evacuation to a data center), the controller asks the placement
service (`fabric/placement`, `actors.placement.PlacementService`, started on first
use with the controller's `placement` config: by default the shipped MADDPG
checkpoint, which itself falls back to a heuristic and says why). If the service
fails, times out, or answers with no usable node, the controller places the VM with
`least_loaded_node` and logs why; a VM is never refused while a candidate has room.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import ray
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.consensus import LedgerHandle, LedgerService, ReplicatedHandle, SingleWriterHandle
from actors.ledger import LedgerActor
from actors.link_watch import LedgerLinkWatch
from actors.metrics import PlacementMetrics
from actors.names import CONTROLLER, LEDGER, NAMESPACE, PLACEMENT, node_actor
from actors.node import NodeActor, describe_error
from actors.placement import PlacementService
from actors.placement_client import PlacementClient
from fabric.clock import WallClock
from fabric.errors import (
    CapacityError,
    ConfigError,
    FabricError,
    LedgerRejected,
    UnknownVmError,
    VmStateError,
)
from fabric.ledger import AbortMigration, BeginMigration, RegisterVm, RemoveVm, command_to_dict
from fabric.ledger.hosting import LedgerConfig, client_policy
from fabric.memory import PAGE_SIZE, make_workload, spec_from_dict
from fabric.migration import FaultPlan, MigrationConfig, MigrationReport
from fabric.topology import DC_PREFIX, NodeSpec, Topology
from policies.advisor import DEFAULT_FALLBACK, AdvisorConfig
from policies.fabric_input import shared_cores

log = logging.getLogger("novacron.controller")

MIGRATIONS_KEPT_MAX = 200  # finished migrations remembered for status and result queries
EVACUATION_CONCURRENCY_MAX = 16  # migrations an evacuation runs at once
# Migrations running at once across the fabric, and per pair of data centers (one
# WAN link): a link split many ways converges no migration; more wait in a queue.
MIGRATIONS_CONCURRENT_MAX = 8
MIGRATIONS_PER_LINK_MAX = 4
VMS_MAX = 10_000
NODE_CALL_S_MAX = 10.0  # a node that does not describe itself in this time reads as unreachable
PLACEMENT_VIEW_S_MAX = 2.0  # ... for a placement's view of nodes that are not candidates
DC_RESOURCE_PER_ACTOR = 0.001  # a token amount: pins the actor, never limits how many fit
MIB = 1 << 20


@ray.remote(num_cpus=0)
class FabricController:
    """Boots the fabric and starts migrations; the single place operators talk to."""

    def __init__(self, topology: dict[str, Any], *, state_dir: str,
                 ledger: dict[str, Any] | None = None, migrations_max: int = MIGRATIONS_CONCURRENT_MAX,
                 migrations_per_link_max: int = MIGRATIONS_PER_LINK_MAX,
                 placement: dict[str, Any] | None = None) -> None:
        if not 1 <= migrations_per_link_max <= migrations_max <= MIGRATIONS_KEPT_MAX:
            raise ConfigError(f"migration limits: need 1 <= per link ({migrations_per_link_max}) <= "
                              f"total ({migrations_max}) <= {MIGRATIONS_KEPT_MAX}")
        self.topology = Topology.from_dict(topology)
        # Migrations running at once, in all and per pair of data centers; more wait their turn.
        self._slots = asyncio.Semaphore(migrations_max)
        self._link_slots: dict[frozenset[str], asyncio.Semaphore] = {}
        self._per_link_max = migrations_per_link_max
        self._state_dir = Path(state_dir)
        self._ledger_config = LedgerConfig.from_dict(ledger)
        self._ledger: LedgerHandle | None = None
        self._ledger_service: LedgerService | None = None
        self._link_watch: LedgerLinkWatch | None = None  # ACP following the links
        self._cores: dict[str, float] = {}  # node -> its share of its Ray node's CPUs (at boot)
        self._consensus_key = Ed25519PrivateKey.generate()
        # Ray restarts a dead controller; each life's ledger clients get their own ids.
        self._client_prefix = f"{CONTROLLER}@{secrets.token_hex(4)}"
        self._nodes: dict[str, Any] = {}
        self._boot_lock = asyncio.Lock()
        self._booted = False
        self._migrations: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._tasks: dict[str, asyncio.Task] = {}
        self._placement_metrics = PlacementMetrics()
        # Which policy places VMs: {"checkpoint": PATH} or {"heuristic": NAME} (policies.advisor).
        # By default the best policy jobs/bench_placement.py measured on held-out traces: the
        # heuristic beat the shipped MADDPG checkpoint (policies/README.md), which is one
        # setting away: placement={"checkpoint": str(DEFAULT_CHECKPOINT)}.
        self._placement_config = AdvisorConfig.from_dict(
            placement if placement is not None else {"heuristic": DEFAULT_FALLBACK}).to_dict()
        self._placement = PlacementClient(self._start_placement_service)

    # -- boot --------------------------------------------------------------------

    def _actor_options(self, name: str, spec: NodeSpec | None = None) -> dict[str, Any]:
        # Always detached: an actor's owner takes it down when it dies, and the nodes and
        # ledger replicas must outlive a controller crash (Ray restarts the controller). On
        # an embedded Ray they still end with the session.
        opts: dict[str, Any] = {"name": name, "namespace": NAMESPACE, "get_if_exists": True,
                                "lifetime": "detached"}
        if spec is None:
            # The ledger's files live on this controller's machine: keep it here.
            opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
                ray.get_runtime_context().get_node_id(), soft=False)
        elif spec.ray_node_id is not None:
            opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(spec.ray_node_id, soft=False)
        elif self.topology.pinning == "resources":
            opts["resources"] = {f"{DC_PREFIX}{spec.dc}": DC_RESOURCE_PER_ACTOR}
        return opts

    async def boot(self, vms: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Create the ledger and node actors (idempotent); seed `vms` into an empty fabric."""
        async with self._boot_lock:
            if not self._booted:
                if self._ledger_config.protocol == "single-writer":
                    writer = LedgerActor.options(**self._actor_options(LEDGER)).remote(
                        str(self._state_dir / "ledger"))
                    await writer.ready.remote()
                    self._ledger = SingleWriterHandle(writer)
                for spec in self.topology.nodes:
                    self._nodes[spec.name] = NodeActor.options(
                        **self._actor_options(node_actor(spec.name), spec)).remote(
                            asdict(spec), self.topology.to_dict(), str(self._state_dir / "nodes" / spec.name))
                await asyncio.gather(*(n.ready.remote() for n in self._nodes.values()))
                await self._share_keys_and_start_ledger()
                self._booted = True
                if vms and not await self._ledger.records():
                    for v in vms:
                        await self.create_vm(v["name"], v["workload"], v.get("where"))
        return await self.status()

    async def _share_keys_and_start_ledger(self) -> None:
        """Every node learns every node's keys (migration handshakes, consensus); the ledger starts."""
        infos = await asyncio.gather(*(n.describe.remote() for n in self._nodes.values()))
        identity = {i["name"]: i["public_key"] for i in infos}
        # Each node's share of its Ray node's CPUs: the placement policy's "cores" per host.
        cpus = {r["NodeID"]: float(r.get("Resources", {}).get("CPU", 0.0)) for r in ray.nodes() if r["Alive"]}
        self._cores = shared_cores({i["name"]: i["ray_node_id"] for i in infos}, cpus)
        await asyncio.gather(*(n.set_peer_keys.remote(identity) for n in self._nodes.values()))
        cfg = self._ledger_config
        # Replica keys by node actor, client keys by each life's client prefix.
        consensus_keys = {node_actor(i["name"]): i["consensus_public_key"] for i in infos}
        consensus_keys.update({i["client_prefix"]: i["consensus_public_key"] for i in infos})
        consensus_keys[self._client_prefix] = self._consensus_key.public_key().public_bytes(
            Encoding.Raw, PublicFormat.Raw).hex()
        replicas: dict[str, str] = {}
        if cfg.protocol != "single-writer":
            names = cfg.replica_nodes([spec.name for spec in self.topology.nodes])
            replicas = {str(rid): name for rid, name in zip(cfg.replica_ids(len(names)), names, strict=True)}
        if cfg.follows_links and self._link_watch is None:
            cfg = await self._watch_ledger_links(cfg, list(replicas.values()))
        seed = secrets.randbits(32)  # election jitter only
        await asyncio.gather(*(n.start_ledger.remote(cfg.to_dict(), replicas, consensus_keys, seed)
                               for n in self._nodes.values()))
        if cfg.protocol != "single-writer" and self._ledger_service is None:
            replica_actors = {int(rid): node_actor(name) for rid, name in replicas.items()}
            self._ledger_service = LedgerService(
                actor_name=self._client_prefix, config=cfg,
                policy=client_policy(cfg, tuple(sorted(replica_actors))),
                replica_actors=replica_actors, key=self._consensus_key, clock=WallClock())
            self._ledger = ReplicatedHandle(self._ledger_service, cfg, replica_actors)
        if self._link_watch is not None:
            self._link_watch.start()

    async def _watch_ledger_links(self, cfg: LedgerConfig, replicas: list[str]) -> LedgerConfig:
        """Measure the ledger's links once; an ACP ledger starts in their mode (unless configured)."""
        self._link_watch = LedgerLinkWatch([(n, self.topology.node(n).dc) for n in replicas],
                                           self._node, probe_s=cfg.link_probe_s)
        mode = await self._link_watch.probe_all()
        if mode is not None and await self._ledger_running():
            await self._link_watch.tell_replicas(mode)  # a restarted controller: the ledger runs on
        elif mode is not None and "initial_mode" not in cfg.options:
            cfg = replace(cfg, options={**cfg.options, "initial_mode": mode.value})
            self._ledger_config = cfg
        return cfg

    async def _ledger_running(self) -> bool:
        """Does some node already host a running replica (this controller is a restarted one)?"""
        states = await asyncio.gather(*(n.consensus_status.remote() for n in self._nodes.values()),
                                      return_exceptions=True)
        return any(isinstance(s, dict) for s in states)

    def consensus_reply(self, sender: int, replies: list[Any]) -> None:
        """Replies to the controller's ledger clients."""
        if self._ledger_service is not None and isinstance(replies, list):
            self._ledger_service.on_replies(sender, replies)

    async def _ensure_booted(self) -> None:
        """A controller Ray restarted after a crash boots again (idempotently) on first use."""
        if not self._booted:
            await self.boot()

    async def restart_node(self, name: str) -> dict[str, Any]:
        """Bring back a node whose actor died: same name and state directory; it rejoins the ledger
        from its durable log. The VMs it hosted died with it."""
        await self._ensure_booted()
        spec = self.topology.node(name)
        if await self._alive(self._nodes[name]):
            raise ConfigError(f"node {name} is alive; only a dead node restarts")
        node = NodeActor.options(**self._actor_options(node_actor(name), spec)).remote(
            asdict(spec), self.topology.to_dict(), str(self._state_dir / "nodes" / name))
        await node.ready.remote()
        self._nodes[name] = node
        await self._share_keys_and_start_ledger()
        return await node.describe.remote()

    async def _alive(self, node: Any) -> bool:
        try:
            await asyncio.wait_for(node.ready.remote(), NODE_CALL_S_MAX)
            return True
        except Exception:
            return False

    async def link_fault(self, dc_a: str, dc_b: str, down_s: float = 0.0,
                         bandwidth_bps: float | None = None, rtt_s: float | None = None) -> int:
        """Partition, slow or re-route the emulated links between two data centers, both ways;
        links changed."""
        await self._ensure_booted()
        pairs = ([(n, dc_b) for n in self.topology.nodes_in(dc_a)]
                 + [(n, dc_a) for n in self.topology.nodes_in(dc_b)])
        counts = await asyncio.gather(
            *(self._nodes[n.name].link_fault.remote(dc, down_s, bandwidth_bps, rtt_s) for n, dc in pairs),
            return_exceptions=True)
        return sum(c for c in counts if isinstance(c, int))

    async def forget_vm(self, name: str) -> None:
        """Remove from the ledger a VM that no live node hosts (its host died with it)."""
        await self._ensure_booted()
        rec = await self._record(name)
        hosted = False
        with contextlib.suppress(Exception):  # a dead node, or one that lost the VM: not hosted
            await asyncio.wait_for(self._nodes[rec["owner"]].vm_info.remote(name), NODE_CALL_S_MAX)
            hosted = True
        if hosted:
            raise VmStateError(f"VM {name} still runs on {rec['owner']}; delete it instead")
        await self._ledger.submit(command_to_dict(RemoveVm(vm=name, epoch=rec["epoch"])))

    def _node(self, name: str) -> Any:
        self.topology.node(name)  # UnknownNodeError for a name not in the topology
        return self._nodes[name]

    # -- VMs -----------------------------------------------------------------------

    async def _describe_nodes(self, names: list[str] | None = None,
                              wait_s: dict[str, float] | None = None) -> list[dict[str, Any]]:
        """Every (or the named) node's self-description; a dead node reads as unreachable.
        `wait_s` shortens the wait for some nodes (default NODE_CALL_S_MAX each)."""
        names = names if names is not None else list(self._nodes)
        wait_s = wait_s or {}

        async def one(name: str) -> dict[str, Any]:
            try:
                d = await asyncio.wait_for(self._nodes[name].describe.remote(),
                                           wait_s.get(name, NODE_CALL_S_MAX))
                return {**d, "cores": self._cores.get(name)}
            except Exception as e:
                spec = self.topology.node(name)
                return {"name": name, "dc": spec.dc, "memory_mib_max": spec.memory_mib_max,
                        "memory_mib_used": None, "vms": [], "incoming": [], "outgoing": [],
                        "ray_node_id": "", "error": f"unreachable: {describe_error(e)}"}
        return list(await asyncio.gather(*(one(n) for n in names)))

    async def create_vm(self, name: str, workload: dict[str, Any],
                        where: str | None = None) -> dict[str, Any]:
        """Register, place and start a VM; `where` names a data center or node (default: any)."""
        await self._ensure_booted()
        if not name or len(name) > 64 or "/" in name:
            raise ConfigError(f"VM names are 1-64 characters without '/', not {name!r}")
        spec = spec_from_dict(workload)
        memory_mib = make_workload(spec).pages * PAGE_SIZE / MIB
        records = await self._ledger.records()
        if len(records) >= VMS_MAX:
            raise ConfigError(f"the fabric holds at most {VMS_MAX} VMs")
        candidates = self.topology.resolve(where) if where else list(self.topology.nodes)
        node = await self._choose_node("create", name, memory_mib, candidates, self.topology.dcs[0])
        rec = await self._ledger.submit(command_to_dict(RegisterVm(vm=name, node=node)))
        try:
            return await self._nodes[node].create_vm.remote(name, workload, rec["epoch"])
        except Exception:
            await self._ledger.submit(command_to_dict(RemoveVm(vm=name, epoch=rec["epoch"])))
            raise

    async def _choose_node(self, decision: str, vm: str, memory_mib: float, pool: list[NodeSpec],
                           origin_dc: str) -> str:
        """The node of `pool` for `vm` (see PlacementClient); the decision is counted with its policy."""
        # The service sees every node, but a slow node outside the pool only drops out of its view.
        names = {n.name for n in pool}
        nodes = await self._describe_nodes(
            None if len(pool) > 1 else [pool[0].name],
            wait_s={n: PLACEMENT_VIEW_S_MAX for n in self._nodes if n not in names})
        node, policy = await self._placement.choose(vm, memory_mib, [(n.name, n.dc) for n in pool], nodes,
                                                    dc_order=self.topology.dcs, origin_dc=origin_dc)
        self._placement_metrics.decided(decision, dc=self.topology.node(node).dc, node=node, policy=policy)
        return node

    def _start_placement_service(self) -> Any:
        """The placement service actor (started once, next to this controller, so paths resolve the same)."""
        return PlacementService.options(
            name=PLACEMENT, namespace=NAMESPACE, get_if_exists=True, lifetime="detached",
            scheduling_strategy=NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(),
                                                               soft=False),
        ).remote(self._placement_config)

    async def delete_vm(self, name: str) -> None:
        """Stop a VM and remove it from the ledger."""
        await self._ensure_booted()
        rec = await self._record(name)
        await self._nodes[rec["owner"]].delete_vm.remote(name)
        await self._ledger.submit(command_to_dict(RemoveVm(vm=name, epoch=rec["epoch"])))

    async def _record(self, vm: str) -> dict[str, Any]:
        rec = await self._ledger.read(vm)
        if rec is None:
            raise UnknownVmError(f"no VM {vm!r} in the fabric")
        return rec

    async def list_vms(self) -> list[dict[str, Any]]:
        """Every VM: the ledger's owner and epoch, and what its node reports."""
        await self._ensure_booted()
        records = await self._ledger.records()
        nodes = await self._describe_nodes()
        hosted = {(v["name"], n["name"]): v for n in nodes for v in n["vms"]}
        unreachable = {n["name"] for n in nodes if "error" in n}
        out = []
        for r in records:
            node = self.topology.node(r["owner"])
            info = hosted.get((r["vm"], r["owner"]), {})
            out.append({"vm": r["vm"], "node": r["owner"], "dc": node.dc, "epoch": r["epoch"],
                        "state": info.get("state", "unreachable" if r["owner"] in unreachable
                                          else "missing"),
                        "memory_mib": info.get("memory_mib"), "cpu_busy": info.get("cpu_busy"),
                        "migrating_to": (r["migration"] or {}).get("destination"),
                        "workload": info.get("workload", "")})
        return out

    # -- migrations ---------------------------------------------------------------------

    async def start_migration(self, vm: str, to: str, config: dict[str, Any] | None = None,
                              faults: dict[str, Any] | None = None) -> str:
        """Commit Begin and start the migration in the background; returns its id."""
        await self._ensure_booted()
        return await self._start(vm, [c.name for c in self.topology.resolve(to)], config, faults)

    async def _start(self, vm: str, candidates: list[str], config: dict[str, Any] | None,
                     faults: dict[str, Any] | None) -> str:
        """Begin a migration of `vm` to the best of `candidates` (placement), and run it."""
        t0 = time.monotonic()
        MigrationConfig.from_dict(config)
        FaultPlan.from_dict(faults)
        rec = await self._record(vm)
        source = rec["owner"]
        pool = [self.topology.node(c) for c in candidates if c != source]
        if not pool:
            raise ConfigError(f"VM {vm} is already on {source}; pick another node or data center")
        info = await self._nodes[source].vm_info.remote(vm)
        destination = await self._choose_node("migrate", vm, info["memory_mib"], pool,
                                              self.topology.node(source).dc)
        begun = await self._ledger.submit(command_to_dict(
            BeginMigration(vm=vm, source=source, destination=destination)))
        epoch = begun["migration"]["epoch"]
        mid = f"{vm}@{epoch}"
        self._migrations[mid] = {"id": mid, "vm": vm, "source": source,
                                 "destination": destination, "epoch": epoch,
                                 "status": "active", "report": None}
        while len(self._migrations) > MIGRATIONS_KEPT_MAX:
            oldest = next(iter(self._migrations))
            if self._migrations[oldest]["status"] == "active":
                break
            del self._migrations[oldest]
        self._tasks[mid] = asyncio.create_task(
            self._run(mid, config, faults, time.monotonic() - t0))
        return mid

    async def _run(self, mid: str, config: dict[str, Any] | None, faults: dict[str, Any] | None,
                   pre_elapsed_s: float) -> None:
        m = self._migrations[mid]
        pair = frozenset({self.topology.node(m["source"]).dc, self.topology.node(m["destination"]).dc})
        link_slots = self._link_slots.setdefault(pair, asyncio.Semaphore(self._per_link_max))
        queued_at = time.monotonic()
        m["queued"] = True  # still "active": it has begun, it waits for a slot
        try:
            async with self._slots, link_slots:
                m["queued"] = False
                waited = time.monotonic() - queued_at
                report = await self._nodes[m["source"]].migrate_out.remote(
                    m["vm"], m["destination"], m["epoch"], config, faults, pre_elapsed_s + waited)
        except Exception as e:
            # The engine never ran or its node died: close Begin so the VM is not stuck.
            report = await self._abandon(m, describe_error(e))
        m["report"], m["status"] = report, report["status"]
        self._tasks.pop(mid, None)

    async def _abandon(self, m: dict[str, Any], reason: str) -> dict[str, Any]:
        """The source's engine is gone (its node died, or it never started): settle by the ledger.

        If the migration committed, the destination owns the VM: make sure it runs
        there. Otherwise close Begin and drop the destination's copy.
        """
        vm, epoch, dst = m["vm"], m["epoch"], m["destination"]
        try:
            await self._ledger.submit(command_to_dict(
                AbortMigration(vm=vm, epoch=epoch, reason=reason[:500])))
        except LedgerRejected:
            pass  # closed already: committed, or aborted by the engine
        except Exception as e:
            reason += f"; ledger abort failed: {describe_error(e)}"
        committed = False
        with contextlib.suppress(Exception):
            rec = await self._ledger.read(vm)
            committed = rec is not None and rec["owner"] == dst and rec["epoch"] == epoch
        if committed:
            try:  # idempotent: the destination may have started it from the committed log already
                await self._nodes[dst].activate_incoming.remote(vm, epoch)
                missing = await self._nodes[dst].postcopy_missing.remote(vm)
                if missing:  # post-copy: those pages existed only at the lost source
                    return MigrationReport(
                        vm=vm, source=m["source"], destination=dst, epoch=epoch, status="failed",
                        vm_location=dst, abort_reason=(
                            f"the source's engine was lost in post-copy ({reason}); the guest at {dst} "
                            f"waits for {missing} pages that existed only at the source")).to_dict()
                return MigrationReport(vm=vm, source=m["source"], destination=dst, epoch=epoch,
                                       status="completed", vm_location=dst,
                                       abort_reason=f"the source's engine was lost after the commit "
                                                    f"({reason}); the destination started the VM").to_dict()
            except Exception as e:
                return MigrationReport(vm=vm, source=m["source"], destination=dst, epoch=epoch,
                                       status="failed", abort_reason=f"{reason}; committed, but the "
                                       f"destination did not start it: {describe_error(e)}").to_dict()
        try:
            await self._nodes[dst].discard_incoming.remote(vm, epoch)
        except Exception as e:
            log.warning("discard on %s failed: %s", dst, describe_error(e))
        try:
            await self._nodes[m["source"]].vm_info.remote(vm)
            location, status = m["source"], "aborted"
        except Exception as e:
            reason += f"; source unreachable: {describe_error(e)}"
            location, status = "", "failed"
        return MigrationReport(vm=vm, source=m["source"], destination=dst, epoch=epoch, status=status,
                               abort_reason=reason, vm_location=location).to_dict()

    async def migration_progress(self, mid: str) -> dict[str, Any]:
        """Status of migration `mid`, with the engine's progress while it runs."""
        await self._ensure_booted()
        m = self._migration(mid)
        out = {k: v for k, v in m.items() if k != "report"}
        if m["status"] == "active":
            try:
                out["progress"] = await self._nodes[m["source"]].migration_progress.remote(m["vm"])
            except Exception as e:
                out["progress"] = {"error": describe_error(e)}
        return out

    async def migration_result(self, mid: str) -> dict[str, Any]:
        """The report of migration `mid`, once it has finished."""
        await self._ensure_booted()
        self._migration(mid)
        task = self._tasks.get(mid)
        if task is not None:
            await asyncio.shield(task)
        return self._migrations[mid]["report"]

    def _migration(self, mid: str) -> dict[str, Any]:
        if mid not in self._migrations:
            raise FabricError(f"no migration {mid!r} (the last {MIGRATIONS_KEPT_MAX} are kept)")
        return self._migrations[mid]

    async def evacuate(self, target: str, concurrency: int = 2,
                       config: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Move every VM off a node or a whole data center, `concurrency` at a time; their reports.

        Targets are placed among the nodes left: in the same data center when a
        single node is evacuated and its data center has room, else anywhere outside
        the evacuated set.
        """
        await self._ensure_booted()
        if not 1 <= concurrency <= EVACUATION_CONCURRENCY_MAX:
            raise ConfigError(f"concurrency must be 1..{EVACUATION_CONCURRENCY_MAX}, not {concurrency}")
        MigrationConfig.from_dict(config)
        leaving = {n.name for n in self.topology.resolve(target)}
        whole_dc = target in self.topology.dcs
        records = [r for r in await self._ledger.records() if r["owner"] in leaving]
        gate = asyncio.Semaphore(concurrency)

        async def move(rec: dict[str, Any]) -> dict[str, Any]:
            async with gate:
                src = self.topology.node(rec["owner"])
                same_dc = [n.name for n in self.topology.nodes_in(src.dc) if n.name not in leaving]
                anywhere = [n.name for n in self.topology.nodes if n.name not in leaving]
                pools = ([same_dc] if same_dc and not whole_dc else []) + [anywhere]
                last: Exception | None = None
                for pool in pools:
                    try:
                        mid = await self._start(rec["vm"], pool, config, None)
                        return await self.migration_result(mid)
                    except CapacityError as e:  # that pool is full: try further away
                        last = e
                raise last or CapacityError(f"nowhere to evacuate {rec['vm']} to")
        results = await asyncio.gather(*(move(r) for r in records), return_exceptions=True)
        out = []
        for rec, res in zip(records, results, strict=True):
            if isinstance(res, BaseException):
                out.append(MigrationReport(vm=rec["vm"], source=rec["owner"], destination="",
                                           epoch=rec["epoch"], status="aborted", vm_location=rec["owner"],
                                           abort_reason=f"not started: {describe_error(res)}").to_dict())
            else:
                out.append(res)
        return out

    async def migrate(self, vm: str, to: str, config: dict[str, Any] | None = None,
                      faults: dict[str, Any] | None = None) -> dict[str, Any]:
        """Migrate and wait; returns the report."""
        return await self.migration_result(await self.start_migration(vm, to, config, faults))

    # -- status ------------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        """Topology, nodes, VMs, migrations and ledger health, JSON-ready."""
        await self._ensure_booted()
        nodes = await self._describe_nodes()
        return {
            "topology": self.topology.to_dict(),
            "nodes": nodes,
            "vms": await self.list_vms() if self._booted else [],
            "ledger": await self._describe_ledger(),
            "migrations": [{k: v for k, v in m.items() if k != "report"}
                           for m in self._migrations.values()],
            "placement": {"config": self._placement_config, **self._placement.state,
                          "decisions": dict(self._placement.state["decisions"])},
        }

    async def _describe_ledger(self) -> dict[str, Any] | None:
        """The ledger's health, and the mode of its links where ACP follows them."""
        if self._ledger is None:
            return None
        d = await self._ledger.describe()
        if self._link_watch is not None:
            d["links"] = self._link_watch.describe()
        return d

    def topology_dict(self) -> dict[str, Any]:
        """The topology, JSON-ready."""
        return self.topology.to_dict()
