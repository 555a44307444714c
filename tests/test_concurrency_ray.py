"""Many migrations at once: a global concurrency limit, and a WAN link shared fairly."""

from __future__ import annotations

import time

import pytest
import ray

import fabric
from fabric import MigrationConfig, SyntheticSpec
from fabric.memory import ContentMix

pytestmark = pytest.mark.ray

LINK = {"bandwidth_bps": 400e6, "rtt_s": 0.02, "jitter_s": 0.0005, "loss": 0.0}
NOISE = ContentMix(zero=0.0, text=0.0, structured=0.0, code=0.0, random=1.0)


@pytest.fixture(scope="module")
def fab():
    """At most two migrations at once."""
    h = fabric.connect(num_cpus=2, include_dashboard=False, fleet=[], migrations_max=2,
                       migrations_per_link_max=2)
    for i in range(3):
        h.create_vm(f"c-{i}", SyntheticSpec(memory_mib=64, dirty_rate_mbps=1, hot_set_mib=4, mix=NOISE,
                                            seed=80 + i), where="us-east-1")
    yield h
    ray.shutdown()


def test_concurrent_migrations_queue_at_the_limit_and_share_the_link_fairly(fab) -> None:
    cfg = MigrationConfig(link=LINK, codec="raw")
    handles = [fab.migrate(f"c-{i}", "us-west-1", wait=False, config=cfg) for i in range(3)]
    most_running, saw_queued = 0, False
    while not all(h.done() for h in handles):
        ms = [m for m in fab.status()["migrations"] if m["vm"].startswith("c-") and m["status"] == "active"]
        running = [m for m in ms if not m.get("queued")]
        most_running = max(most_running, len(running))
        saw_queued = saw_queued or any(m.get("queued") for m in ms)
        time.sleep(0.05)
    reports = [h.result() for h in handles]
    assert all(r.status == "completed" for r in reports), [r.abort_reason for r in reports]
    assert most_running <= 2 and saw_queued
    # the two that ran together shared the 50 MB/s link: each about half, together not more
    first = sorted(reports, key=lambda r: r.total_time_ms)[:2]
    rates = [max(s.bandwidth_mbps for s in r.round_stats if not s.final) for r in first]
    link_mbps = LINK["bandwidth_bps"] / 8 / 1e6
    assert sum(rates) <= 1.15 * link_mbps, rates
    assert min(rates) >= 0.6 * max(rates), f"unfair share of the link: {rates}"
