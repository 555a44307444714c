"""The driver API: attach to the running fabric, or boot it, and operate it.

`connect()` is re-exported as `fabric.connect()`.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import RayTaskError

from actors.controller import FabricController
from actors.names import CONTROLLER, NAMESPACE, node_actor
from fabric.errors import FabricError, MigrationFailed
from fabric.fleet import default_fleet
from fabric.ledger.hosting import LedgerConfig
from fabric.memory import spec_to_dict
from fabric.memory.workloads import WorkloadSpec
from fabric.migration import FaultPlan, MigrationConfig, MigrationReport
from fabric.topology import DC_PREFIX, DEFAULT_DCS, Topology, from_ray_nodes
from policies.advisor import AdvisorConfig

# Custom resource units per emulated data center on the embedded Ray: far more
# than the token each node actor takes.
EMBEDDED_DC_UNITS = 1000


def _get(ref: Any, timeout: float | None = None) -> Any:
    """ray.get that raises the fabric's own error (not Ray's wrapper) for typed failures."""
    try:
        return ray.get(ref, timeout=timeout)
    except RayTaskError as e:
        cause = getattr(e, "cause", None)
        if isinstance(cause, FabricError):
            raise cause from None
        raise


def start_ray(address: str | None = None, **init_kwargs: Any) -> tuple[bool, str | None]:
    """Join `address` (or $RAY_ADDRESS), else start an embedded Ray with emulated data centers.

    Returns (embedded, dashboard address): embedded is True when this process
    started the Ray instance.
    """
    if ray.is_initialized():
        return False, None
    if address is None and not os.environ.get("RAY_ADDRESS"):
        init_kwargs.setdefault("resources", {f"{DC_PREFIX}{dc}": EMBEDDED_DC_UNITS
                                             for dc in DEFAULT_DCS})
        ctx = ray.init(address="local", namespace=NAMESPACE, **init_kwargs)
        return True, ctx.dashboard_url or None
    ctx = ray.init(address=address, namespace=NAMESPACE, **init_kwargs)
    return False, ctx.dashboard_url or None


@dataclass
class MigrationHandle:
    """A migration running in the background."""

    id: str
    _controller: Any

    def progress(self) -> dict[str, Any]:
        """Status and, while it runs, the engine's progress (round, pages, bytes)."""
        return _get(self._controller.migration_progress.remote(self.id))

    def done(self) -> bool:
        """True once the migration has finished, whatever its outcome."""
        return self.progress()["status"] != "active"

    def result(self, timeout: float | None = None, *, check: bool = False) -> MigrationReport:
        """Wait for the report; with `check`, raise MigrationFailed unless it completed."""
        report = MigrationReport.from_dict(
            _get(self._controller.migration_result.remote(self.id), timeout))
        if check and report.status != "completed":
            raise MigrationFailed(f"migration {self.id} {report.status}: {report.abort_reason}",
                                  report.to_dict())
        return report


class FabricHandle:
    """Operate a running fabric from a driver script."""

    def __init__(self, controller: Any, *, embedded: bool, dashboard_url: str | None = None) -> None:
        self._controller = controller
        self.embedded = embedded
        self.dashboard_url = dashboard_url

    def create_vm(self, name: str, workload: WorkloadSpec | dict[str, Any],
                  where: str | None = None) -> dict[str, Any]:
        """Boot and start a VM on a node of `where` (a data center or node; default: any)."""
        raw = workload if isinstance(workload, dict) else spec_to_dict(workload)
        return _get(self._controller.create_vm.remote(name, raw, where))

    def delete_vm(self, name: str) -> None:
        """Stop a VM and remove it from the ledger."""
        _get(self._controller.delete_vm.remote(name))

    def list_vms(self) -> list[dict[str, Any]]:
        """Every VM with its node, data center, epoch and run state."""
        return _get(self._controller.list_vms.remote())

    def migrate(self, vm: str, to: str, *, wait: bool = True,
                config: MigrationConfig | dict[str, Any] | None = None,
                faults: FaultPlan | dict[str, Any] | None = None,
                check: bool = False) -> MigrationReport | MigrationHandle:
        """Live-migrate `vm` to a data center or node; the report, or a handle with `wait=False`."""
        cfg = config.to_dict() if isinstance(config, MigrationConfig) else config
        flt = faults.to_dict() if isinstance(faults, FaultPlan) else faults
        handle = MigrationHandle(_get(self._controller.start_migration.remote(vm, to, cfg, flt)),
                                 self._controller)
        return handle.result(check=check) if wait else handle

    def evacuate(self, target: str, *, concurrency: int = 2,
                 config: MigrationConfig | dict[str, Any] | None = None) -> list[MigrationReport]:
        """Move every VM off a node or a data center, `concurrency` migrations at a time; their reports."""
        cfg = config.to_dict() if isinstance(config, MigrationConfig) else config
        return [MigrationReport.from_dict(r)
                for r in _get(self._controller.evacuate.remote(target, concurrency, cfg))]

    def status(self) -> dict[str, Any]:
        """Topology, nodes, VMs, migrations and ledger health."""
        return _get(self._controller.status.remote())

    def topology(self) -> Topology:
        """The fabric's data centers and nodes."""
        return Topology.from_dict(_get(self._controller.topology_dict.remote()))

    def restart_node(self, name: str) -> dict[str, Any]:
        """Bring back a node whose actor died (its VMs died with it); it rejoins the ledger."""
        return _get(self._controller.restart_node.remote(name))

    def link_fault(self, dc_a: str, dc_b: str, *, down_s: float = 0.0,
                   bandwidth_bps: float | None = None, rtt_s: float | None = None) -> int:
        """Partition (for `down_s`), slow (to `bandwidth_bps`) or re-route (to `rtt_s`) the emulated
        links between two data centers."""
        return _get(self._controller.link_fault.remote(dc_a, dc_b, down_s, bandwidth_bps, rtt_s))

    def forget_vm(self, name: str) -> None:
        """Remove from the ledger a VM that died with its host."""
        _get(self._controller.forget_vm.remote(name))

    def node(self, name: str) -> Any:
        """The actor handle of fabric node `name` (for operations and checks)."""
        self.topology().node(name)
        return ray.get_actor(node_actor(name), namespace=NAMESPACE)


def connect(address: str | None = None, *, boot: bool = True,
            fleet: list[dict[str, Any]] | None = None, nodes_per_dc: int = 2,
            ledger: LedgerConfig | dict[str, Any] | None = None, migrations_max: int | None = None,
            migrations_per_link_max: int | None = None, placement: dict[str, Any] | None = None,
            **ray_init_kwargs: Any) -> FabricHandle:
    """Attach to the fabric on `address` (or $RAY_ADDRESS, or a new embedded Ray); boot it if absent.

    A booted fabric starts with `fleet` (default: `default_fleet()`; [] for none)
    and the ownership ledger `ledger` describes (default: Raft on up to 7 nodes);
    at most `migrations_max` migrations run at once, `migrations_per_link_max`
    per pair of data centers (defaults in actors.controller). `placement` picks
    the placement policy: {"checkpoint": PATH} or {"heuristic": NAME}, optionally
    with "fallback" (default: the shipped MADDPG checkpoint; see policies.advisor).
    On an embedded Ray the actors end with this driver; on a cluster they are
    detached and outlive the job.
    """
    embedded, dashboard_url = start_ray(address, **ray_init_kwargs)
    try:
        controller = ray.get_actor(CONTROLLER, namespace=NAMESPACE)
    except ValueError:
        if not boot:
            raise FabricError("no fabric is running on this Ray cluster (boot=False)") from None
        topology = from_ray_nodes(ray.nodes(), nodes_per_dc)
        state_dir = os.path.join(tempfile.gettempdir(), "novacron",
                                 f"fabric-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}")
        ledger_cfg = ledger if isinstance(ledger, LedgerConfig) else LedgerConfig.from_dict(ledger)
        if placement is not None:
            AdvisorConfig.from_dict(placement)  # a bad policy name fails here, typed, not in the actor
        # Ray restarts a controller that dies; it boots again on first use.
        opts: dict[str, Any] = {"name": CONTROLLER, "namespace": NAMESPACE, "get_if_exists": True,
                                "max_restarts": -1}
        if not embedded:
            opts["lifetime"] = "detached"
        controller = FabricController.options(**opts).remote(
            topology.to_dict(), state_dir=state_dir,
            ledger=ledger_cfg.validate().to_dict(),
            **{k: v for k, v in (("migrations_max", migrations_max),
                                 ("migrations_per_link_max", migrations_per_link_max),
                                 ("placement", placement)) if v is not None})
    _get(controller.boot.remote(default_fleet() if fleet is None else fleet))
    return FabricHandle(controller, embedded=embedded, dashboard_url=dashboard_url)
