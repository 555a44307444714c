"""The fabric's metrics, exported through ray.util.metrics (Prometheus on the Ray dashboard).

`CATALOGUE` is the one list of them: docs/metrics.md documents it and
grafana/novacron-fabric.json charts it, and tests hold both to it. Ray's
metrics agent prefixes every name with `ray_` and counters get `_total`; a
histogram is the usual `_bucket` / `_count` / `_sum` triple, where Ray
re-records each observation at its bucket's midpoint, so `_sum` is approximate.

Three recorders, each created inside the actor that records:
`MigrationMetrics` (a NodeActor, as the source of its outgoing migrations),
`LedgerMetrics` (a NodeActor hosting a ledger replica) and `PlacementMetrics`
(the controller).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from ray.util.metrics import Counter, Gauge, Histogram

# Bucket bounds: downtime around QEMU's 300 ms default limit, rounds up to the
# engine's 30-round cap, total time from sub-second LAN moves to minutes-long WAN ones.
DOWNTIME_MS_BOUNDARIES = (1, 5, 10, 25, 50, 100, 200, 300, 500, 1000, 2000, 5000)
ROUNDS_BOUNDARIES = (1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30)
DURATION_MS_BOUNDARIES = (100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000, 300_000)
PROMETHEUS_PREFIX = "ray_"  # what Ray's metrics agent puts before every application metric

MetricKind = Literal["counter", "gauge", "histogram"]
MIGRATION_TAGS = ("dc", "node", "dst_dc")
LINK_TAGS = ("dc", "node", "dst_dc", "dst_node")
LEDGER_TAGS = ("dc", "node", "protocol")


@dataclass(frozen=True, kw_only=True)
class MetricSpec:
    """One metric: its registered name, kind, tag keys and meaning."""

    name: str
    kind: MetricKind
    tags: tuple[str, ...]
    description: str
    recorded_by: str
    boundaries: tuple[float, ...] = ()

    @property
    def scraped(self) -> str:
        """The name on Ray's Prometheus endpoint (a histogram's series add _bucket/_count/_sum)."""
        return PROMETHEUS_PREFIX + self.name + ("_total" if self.kind == "counter" else "")

    def series(self) -> tuple[str, ...]:
        """Every Prometheus series name this metric produces."""
        if self.kind == "histogram":
            return tuple(f"{self.scraped}_{s}" for s in ("bucket", "count", "sum"))
        return (self.scraped,)

    def build(self) -> Counter | Gauge | Histogram:
        """Register the metric with Ray (inside the recording process)."""
        if self.kind == "counter":
            return Counter(self.name, self.description, tag_keys=self.tags)
        if self.kind == "gauge":
            return Gauge(self.name, self.description, tag_keys=self.tags)
        return Histogram(self.name, self.description, boundaries=list(self.boundaries),
                         tag_keys=self.tags)


def _spec(name: str, kind: MetricKind, tags: tuple[str, ...], description: str, recorded_by: str,
          boundaries: tuple[float, ...] = ()) -> MetricSpec:
    return MetricSpec(name=name, kind=kind, tags=tags, description=description,
                      recorded_by=recorded_by, boundaries=boundaries)


_SOURCE = "source NodeActor"
_REPLICA = "NodeActor hosting a ledger replica"

CATALOGUE: tuple[MetricSpec, ...] = (
    # Migrations by state: started, then exactly one of completed / aborted / failed.
    _spec("novacron_migrations_started", "counter", MIGRATION_TAGS,
          "Migrations started at this source", _SOURCE),
    _spec("novacron_migrations_completed", "counter", MIGRATION_TAGS,
          "Migrations completed: the VM runs at the destination", _SOURCE),
    _spec("novacron_migrations_aborted", "counter", MIGRATION_TAGS,
          "Migrations aborted: the VM resumed at the source", _SOURCE),
    _spec("novacron_migrations_failed", "counter", MIGRATION_TAGS,
          "Migrations that neither completed nor aborted cleanly", _SOURCE),
    _spec("novacron_migrations_in_flight", "gauge", ("dc", "node"),
          "Outgoing migrations running at this source now", _SOURCE),
    # Bytes
    _spec("novacron_migration_raw_bytes", "counter", MIGRATION_TAGS,
          "Guest memory bytes sent (before the codec)", _SOURCE),
    _spec("novacron_migration_wire_bytes", "counter", MIGRATION_TAGS,
          "Bytes the codec put on the wire (after compression and dedup)", _SOURCE),
    # Distributions
    _spec("novacron_migration_downtime_ms", "histogram", MIGRATION_TAGS,
          "Downtime of completed migrations, ms", _SOURCE, DOWNTIME_MS_BOUNDARIES),
    _spec("novacron_migration_rounds", "histogram", MIGRATION_TAGS,
          "Pre-copy rounds per finished migration", _SOURCE, ROUNDS_BOUNDARIES),
    _spec("novacron_migration_duration_ms", "histogram", MIGRATION_TAGS,
          "Total time of finished migrations, request to end, ms", _SOURCE, DURATION_MS_BOUNDARIES),
    # Links
    _spec("novacron_link_bandwidth_bytes_per_s", "gauge", LINK_TAGS,
          "The transport's bandwidth estimate of the link, at the end of its last migration",
          _SOURCE),
    _spec("novacron_link_rtt_ms", "gauge", LINK_TAGS,
          "The transport's RTT estimate of the link, at the end of its last migration, ms", _SOURCE),
    # The ownership ledger
    _spec("novacron_ledger_commits", "counter", (*LEDGER_TAGS, "command", "outcome"),
          "Ledger entries this replica applied, by command and outcome (accepted / rejected)",
          _REPLICA),
    _spec("novacron_ledger_view_changes", "counter", LEDGER_TAGS,
          "Raft term or PBFT view advances this replica saw", _REPLICA),
    _spec("novacron_ledger_term", "gauge", LEDGER_TAGS,
          "This replica's current Raft term or PBFT view", _REPLICA),
    _spec("novacron_ledger_leader", "gauge", LEDGER_TAGS,
          "1 while this replica is the Raft leader or PBFT primary, else 0", _REPLICA),
    _spec("novacron_ledger_commit_index", "gauge", LEDGER_TAGS,
          "This replica's commit index (Raft) or last executed sequence number (PBFT)", _REPLICA),
    # Placement
    _spec("novacron_placement_decisions", "counter", ("dc", "node", "decision", "policy"),
          "Placement decisions by chosen data center and node; decision is create or migrate",
          "FabricController"),
)
_BY_NAME = {m.name: m for m in CATALOGUE}


def _build(name: str) -> Any:
    return _BY_NAME[name].build()


def command_tag(op: Any) -> str:
    """A ledger command's tag value: its class name in snake case (BeginMigration -> begin_migration)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(op).__name__).lower()


class MigrationMetrics:
    """Per-node migration metrics; create inside the NodeActor that records them."""

    def __init__(self, *, dc: str, node: str) -> None:
        self._tags = {"dc": dc, "node": node}
        self.started = _build("novacron_migrations_started")
        self.completed = _build("novacron_migrations_completed")
        self.aborted = _build("novacron_migrations_aborted")
        self.failed = _build("novacron_migrations_failed")
        self.in_flight = _build("novacron_migrations_in_flight")
        self.raw_bytes = _build("novacron_migration_raw_bytes")
        self.wire_bytes = _build("novacron_migration_wire_bytes")
        self.downtime = _build("novacron_migration_downtime_ms")
        self.rounds = _build("novacron_migration_rounds")
        self.duration = _build("novacron_migration_duration_ms")
        self.link_bandwidth = _build("novacron_link_bandwidth_bytes_per_s")
        self.link_rtt = _build("novacron_link_rtt_ms")

    def migration_started(self, dst_dc: str, *, in_flight: int) -> None:
        """Count a migration leaving this node; `in_flight` counts it."""
        self.started.inc(1, tags={**self._tags, "dst_dc": dst_dc})
        self.set_in_flight(in_flight)

    def set_in_flight(self, count: int) -> None:
        """The number of outgoing migrations running here now."""
        self.in_flight.set(count, tags=self._tags)

    def migration_finished(self, report: dict[str, Any], dst_dc: str) -> None:
        """Record a finished migration's outcome, bytes, times, rounds and link estimates."""
        tags = {**self._tags, "dst_dc": dst_dc}
        outcome = {"completed": self.completed, "aborted": self.aborted}.get(report["status"],
                                                                            self.failed)
        outcome.inc(1, tags=tags)
        if report["raw_bytes"]:
            self.raw_bytes.inc(report["raw_bytes"], tags=tags)
        if report["wire_bytes"]:
            self.wire_bytes.inc(report["wire_bytes"], tags=tags)
        self.rounds.observe(report["rounds"], tags=tags)
        self.duration.observe(report["total_time_ms"], tags=tags)
        if report["status"] == "completed":
            self.downtime.observe(report["downtime_ms"], tags=tags)
        self._record_link(report.get("transport") or {}, {**tags, "dst_node": report["destination"]})

    def _record_link(self, transport: dict[str, Any], tags: dict[str, str]) -> None:
        # An aborted setup leaves no estimate: keep the link's last good one rather than a zero.
        bandwidth = transport.get("bandwidth_bytes_per_s")
        if bandwidth:
            self.link_bandwidth.set(float(bandwidth), tags=tags)
        rtt_s = transport.get("rtt_s")
        if rtt_s:
            self.link_rtt.set(float(rtt_s) * 1000, tags=tags)


class LedgerMetrics:
    """Per-replica ledger metrics; create inside the NodeActor hosting the replica."""

    def __init__(self, *, dc: str, node: str, protocol: str) -> None:
        self._tags = {"dc": dc, "node": node, "protocol": protocol}
        self.commits = _build("novacron_ledger_commits")
        self.view_changes = _build("novacron_ledger_view_changes")
        self.term = _build("novacron_ledger_term")
        self.leader = _build("novacron_ledger_leader")
        self.commit_index = _build("novacron_ledger_commit_index")
        self._term: int | None = None
        self._leader: bool | None = None
        self._commit_index: int | None = None

    def record(self, status: Any, committed: tuple[Any, ...] = ()) -> None:
        """After a replica step: count `committed` entries, follow `status` (a ReplicaStatus)."""
        for entry in committed:
            accepted = getattr(entry.result, "accepted", True)
            self.commits.inc(1, tags={**self._tags, "command": command_tag(entry.request.op),
                                      "outcome": "accepted" if accepted else "rejected"})
        # Gauges are set only on change: this runs on every consensus message.
        if self._term is not None and status.term > self._term:
            self.view_changes.inc(status.term - self._term, tags=self._tags)
        if status.term != self._term:
            self._term = status.term
            self.term.set(status.term, tags=self._tags)
        leading = status.leader == status.id
        if leading != self._leader:
            self._leader = leading
            self.leader.set(1 if leading else 0, tags=self._tags)
        if status.commit != self._commit_index:
            self._commit_index = status.commit
            self.commit_index.set(status.commit, tags=self._tags)


class PlacementMetrics:
    """Placement decisions; create inside the controller."""

    def __init__(self) -> None:
        self.decisions = _build("novacron_placement_decisions")

    def decided(self, decision: Literal["create", "migrate"], *, dc: str, node: str, policy: str) -> None:
        """Count one decision that put a VM (or a migration's target) on `node` in `dc`."""
        self.decisions.inc(1, tags={"dc": dc, "node": node, "decision": decision, "policy": policy})
