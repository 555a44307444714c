"""The metric set: documented (docs/metrics.md), charted (grafana/), and on a real Ray's Prometheus endpoint.

The first two tests need no Ray. The last boots one embedded fabric, runs a
completed and an aborted migration, and scrapes the metrics agent.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path

import pytest

from actors.metrics import CATALOGUE, DOWNTIME_MS_BOUNDARIES, MetricSpec

ROOT = Path(__file__).resolve().parents[1]
SCRAPE_S_MAX = 90  # Ray's agent exports every few seconds; a busy shared machine can be slow
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def documented() -> dict[str, tuple[str, tuple[str, ...]]]:
    """docs/metrics.md's table: scraped name -> (type, tags)."""
    rows = re.findall(r"^\| `(ray_novacron_\w+)` \| (\w+) \| ([^|]+) \|", (ROOT / "docs" / "metrics.md")
                      .read_text(), flags=re.M)
    return {name: (kind, tuple(t.strip() for t in tags.split(","))) for name, kind, tags in rows}


def test_docs_list_exactly_the_catalogue() -> None:
    assert documented() == {m.scraped: (m.kind, m.tags) for m in CATALOGUE}
    assert len({m.name for m in CATALOGUE}) == len(CATALOGUE)


def test_grafana_dashboard_parses_and_charts_every_documented_metric_and_nothing_else() -> None:
    dash = json.loads((ROOT / "grafana" / "novacron-fabric.json").read_text())
    assert dash["title"] and dash["uid"] and isinstance(dash["schemaVersion"], int)
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
    used: set[str] = set()
    for p in panels:
        assert p["title"] and p["targets"], p
        assert {"x", "y", "w", "h"} <= set(p["gridPos"])
        for t in p["targets"]:
            assert t["refId"] and t["expr"].count("(") == t["expr"].count(")"), t
            used |= set(re.findall(r"ray_novacron_\w+", t["expr"]))
    series = {s: m for m in CATALOGUE for s in m.series()}
    assert used <= set(series), f"undocumented names in the dashboard: {used - set(series)}"
    assert {series[s].name for s in used} == {m.name for m in CATALOGUE}, "a documented metric has no panel"
    variables = {v["name"] for v in dash["templating"]["list"]}
    assert "datasource" in variables
    for p in panels:
        for t in p["targets"]:
            assert set(re.findall(r"\$(\w+)", t["expr"])) <= variables, t["expr"]


# -- a real Ray ------------------------------------------------------------------------


def parse(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Prometheus text format -> (series name, labels, value) for the fabric's series."""
    out = []
    for line in text.splitlines():
        if not line.startswith("ray_novacron_"):
            continue
        head, value = line.rsplit(" ", 1)
        name, _, labels = head.partition("{")
        out.append((name, dict(LABEL.findall(labels)), float(value)))
    return out


def value(samples: list, name: str, **tags: str) -> float:
    """The sum over every series of `name` whose labels include `tags` (0 when there is none)."""
    return sum(v for n, labels, v in samples if n == name and tags.items() <= labels.items())


@pytest.fixture(scope="module")
def migrated():
    """An embedded fabric after one completed (us-east-1 -> eu-west) and one aborted migration."""
    import ray

    import fabric
    from fabric import FaultPlan, SyntheticSpec

    h = fabric.connect(num_cpus=2, include_dashboard=False, fleet=[])
    try:
        h.create_vm("metered-1", SyntheticSpec(memory_mib=32, dirty_rate_mbps=5, seed=71), where="us-east-1")
        h.create_vm("metered-2", SyntheticSpec(memory_mib=16, seed=72), where="us-east-1")
        done = h.migrate("metered-1", "eu-west")
        aborted = h.migrate("metered-2", "us-west", faults=FaultPlan(engine_error_at_round=0))
        yield {"port": ray.nodes()[0]["MetricsExportPort"], "done": done, "aborted": aborted,
               "status": h.status()}
    finally:
        ray.shutdown()


def scrape_until(port: int, ready) -> list:
    """Scrape until `ready(samples)` holds; the last samples either way."""
    end, samples = time.monotonic() + SCRAPE_S_MAX, []
    while time.monotonic() < end:
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            samples = parse(text)
        except OSError:
            pass
        if ready(samples):
            return samples
        time.sleep(1)
    return samples


def passes(check, samples: list) -> bool:
    """True when `check(samples)` raises no AssertionError."""
    try:
        check(samples)
    except AssertionError:
        return False
    return True


@pytest.mark.ray
def test_a_real_ray_exports_the_documented_metrics_with_the_migrations_values(migrated) -> None:
    done, aborted = migrated["done"], migrated["aborted"]
    assert done.status == "completed" and aborted.status == "aborted", (done.abort_reason, aborted)
    # Each actor's worker exports on its own timer: scrape until every check holds, then report the last.
    samples = scrape_until(migrated["port"], lambda s: passes(lambda x: check(x, migrated), s))
    check(samples, migrated)


def check(samples: list, migrated: dict) -> None:
    """Every expectation on the scraped samples after the module's two migrations."""
    done = migrated["done"]
    src = {"dc": "us-east", "node": "us-east-1"}
    to_eu, to_west = {**src, "dst_dc": "eu-west"}, {**src, "dst_dc": "us-west"}

    # Names: every documented metric but `failed` (not provoked here) is there, and nothing else;
    # every series names its data center and node.
    names = {n for n, _, _ in samples}
    series = {s: m for m in CATALOGUE for s in m.series()}
    assert names <= set(series), names - set(series)
    missing = [m.name for m in CATALOGUE if m.name != "novacron_migrations_failed"
               and not set(m.series()) & names]
    assert not missing, missing
    nodes = {n["name"]: n["dc"] for n in migrated["status"]["topology"]["nodes"]}
    for name, labels, _ in samples:
        spec: MetricSpec = series[name]
        assert set(spec.tags) <= set(labels), (name, labels)
        assert nodes[labels["node"]] == labels["dc"], (name, labels)

    # Migrations by state, bytes, in flight
    assert value(samples, "ray_novacron_migrations_started_total", **to_eu) == 1
    assert value(samples, "ray_novacron_migrations_completed_total", **to_eu) == 1
    assert value(samples, "ray_novacron_migrations_started_total", **to_west) == 1
    assert value(samples, "ray_novacron_migrations_aborted_total", **to_west) == 1
    assert value(samples, "ray_novacron_migrations_completed_total", **to_west) == 0
    assert value(samples, "ray_novacron_migrations_in_flight", **src) == 0
    assert value(samples, "ray_novacron_migration_raw_bytes_total", **to_eu) == done.raw_bytes > 0
    assert value(samples, "ray_novacron_migration_wire_bytes_total", **to_eu) == done.wire_bytes > 0

    # Histograms: one observation each, in the right downtime bucket; the aborted one has no downtime
    assert value(samples, "ray_novacron_migration_downtime_ms_count", **to_eu) == 1
    assert value(samples, "ray_novacron_migration_downtime_ms_count", **to_west) == 0
    first_fit = next((b for b in DOWNTIME_MS_BOUNDARIES if done.downtime_ms <= b), None)
    le = f"{float(first_fit)}" if first_fit is not None else "+Inf"
    assert value(samples, "ray_novacron_migration_downtime_ms_bucket", **to_eu, le=le) == 1
    below = [b for b in DOWNTIME_MS_BOUNDARIES if b < done.downtime_ms]
    if below:
        assert value(samples, "ray_novacron_migration_downtime_ms_bucket", **to_eu,
                     le=f"{float(below[-1])}") == 0
    for name in ("ray_novacron_migration_rounds_count", "ray_novacron_migration_duration_ms_count"):
        assert value(samples, name, **to_eu) == 1 and value(samples, name, **to_west) == 1

    # The link's estimates are the transport's, as the report has them
    link = {**to_eu, "dst_node": done.destination}
    assert value(samples, "ray_novacron_link_bandwidth_bytes_per_s", **link) == pytest.approx(
        done.transport["bandwidth_bytes_per_s"], rel=1e-6)
    assert value(samples, "ray_novacron_link_rtt_ms", **link) == pytest.approx(
        done.transport["rtt_s"] * 1000, rel=1e-6)

    # The ledger: every replica applied the entries; a leader elected at a term >= 1
    terms = {labels["node"]: v for n, labels, v in samples if n == "ray_novacron_ledger_term"}
    assert len(terms) == migrated["status"]["ledger"]["replicas"] == 6
    assert min(terms.values()) >= 1, terms
    commits = [(labels, v) for n, labels, v in samples if n == "ray_novacron_ledger_commits_total"]
    assert all(labels["protocol"] == "raft" and labels["outcome"] == "accepted" for labels, _ in commits)
    expected = {"register_vm": 2, "begin_migration": 2, "commit_migration": 1, "abort_migration": 1}
    for command, count in expected.items():
        per_replica = {labels["node"]: v for labels, v in commits if labels["command"] == command}
        assert per_replica == dict.fromkeys(terms, count), (command, per_replica)
    assert {labels["command"] for labels, _ in commits} == set(expected)
    assert value(samples, "ray_novacron_ledger_view_changes_total") >= 1
    leaders = [v for n, _, v in samples if n == "ray_novacron_ledger_leader"]
    assert set(leaders) <= {0.0, 1.0} and sum(leaders) >= 1
    commit_index = [v for n, _, v in samples if n == "ray_novacron_ledger_commit_index"]
    assert len(commit_index) == 6 and min(commit_index) >= sum(expected.values())

    # Placement: both VMs created on us-east-1, then one target in each destination data center
    assert value(samples, "ray_novacron_placement_decisions_total", decision="create", **src) == 2
    assert value(samples, "ray_novacron_placement_decisions_total", decision="migrate", dc="eu-west",
                 node=done.destination, policy="best-fit+migrate") == 1
    assert value(samples, "ray_novacron_placement_decisions_total", decision="migrate", dc="us-west") == 1
