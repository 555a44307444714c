"""The fabric's metrics, exported through ray.util.metrics (Prometheus on the Ray dashboard)."""

from __future__ import annotations

from typing import Any

from ray.util.metrics import Counter, Histogram

_TAGS = ("dc", "node")
_MIGRATION_TAGS = ("dc", "node", "dst_dc")
DOWNTIME_MS_BOUNDARIES = [1, 5, 10, 25, 50, 100, 200, 300, 500, 1000, 2000, 5000]
ROUNDS_BOUNDARIES = [1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30]


class MigrationMetrics:
    """Per-node migration metrics; create inside the actor that records them."""

    def __init__(self, *, dc: str, node: str) -> None:
        self._tags = {"dc": dc, "node": node}
        self.started = Counter("novacron_migrations_started", "Migrations started at this source",
                               tag_keys=_MIGRATION_TAGS)
        self.completed = Counter("novacron_migrations_completed", "Migrations completed",
                                 tag_keys=_MIGRATION_TAGS)
        self.aborted = Counter("novacron_migrations_aborted",
                               "Migrations aborted (the VM resumed at the source)",
                               tag_keys=_MIGRATION_TAGS)
        self.failed = Counter("novacron_migrations_failed",
                              "Migrations that neither completed nor aborted cleanly",
                              tag_keys=_MIGRATION_TAGS)
        self.raw_bytes = Counter("novacron_migration_raw_bytes", "Guest bytes sent",
                                 tag_keys=_MIGRATION_TAGS)
        self.wire_bytes = Counter("novacron_migration_wire_bytes", "Bytes sent on the wire",
                                  tag_keys=_MIGRATION_TAGS)
        self.downtime = Histogram("novacron_migration_downtime_ms", "Downtime of completed migrations",
                                  boundaries=DOWNTIME_MS_BOUNDARIES, tag_keys=_TAGS)
        self.rounds = Histogram("novacron_migration_rounds", "Pre-copy rounds per migration",
                                boundaries=ROUNDS_BOUNDARIES, tag_keys=_TAGS)

    def migration_started(self, dst_dc: str) -> None:
        """Count a migration leaving this node."""
        self.started.inc(1, tags={**self._tags, "dst_dc": dst_dc})

    def migration_finished(self, report: dict[str, Any], dst_dc: str) -> None:
        """Record a finished migration's outcome, bytes, downtime and rounds."""
        tags = {**self._tags, "dst_dc": dst_dc}
        outcome = {"completed": self.completed, "aborted": self.aborted}.get(report["status"],
                                                                            self.failed)
        outcome.inc(1, tags=tags)
        if report["raw_bytes"]:
            self.raw_bytes.inc(report["raw_bytes"], tags=tags)
        if report["wire_bytes"]:
            self.wire_bytes.inc(report["wire_bytes"], tags=tags)
        self.rounds.observe(report["rounds"], tags=self._tags)
        if report["status"] == "completed":
            self.downtime.observe(report["downtime_ms"], tags=self._tags)
