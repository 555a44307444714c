"""The secure transport on Ray: window sizing keeps an emulated WAN link full at any RTT."""

from __future__ import annotations

import pytest
import ray

import fabric
from fabric import MigrationConfig, SyntheticSpec
from fabric.memory import ContentMix

pytestmark = pytest.mark.ray

# 400 Mbit/s: below what this 2-core machine pushes through the whole pipeline
# (seal, chunk, Ray call, reassemble, open, check, write: ~60-110 MB/s measured
# by jobs/bench_transport.py, CPU-bound), so the link, not the CPU, is what is
# tested. Its BDP at 150 ms (7.5 MB) is beyond the 4 MiB first window, so that
# case fails unless the window grows with the measured BDP; at 1 and 10 Gbit/s
# the window is checked in virtual time (tests/test_transport_sim.py).
LINK_BPS = 4e8
# Incompressible pages: every byte must cross the link.
NOISE = ContentMix(zero=0.0, text=0.0, structured=0.0, code=0.0, random=1.0)


@pytest.fixture(scope="module")
def fab():
    """An embedded fabric with one incompressible 384 MiB guest (~8 s at 400 Mbit/s: the round's fixed
    start and end, about an RTT and a batch each, stay a few percent of it)."""
    h = fabric.connect(num_cpus=2, include_dashboard=False, fleet=[])
    h.create_vm("noise-1", SyntheticSpec(memory_mib=384, dirty_rate_mbps=1, hot_set_mib=8, mix=NOISE,
                                         seed=31), where="us-east-1")
    yield h
    ray.shutdown()


@pytest.mark.parametrize("rtt_s", [0.00025, 0.050, 0.150])
def test_a_long_migration_keeps_the_emulated_link_within_10_percent_of_its_rate(fab, rtt_s) -> None:
    where = next(v for v in fab.list_vms() if v["vm"] == "noise-1")["node"]
    to = "us-east-2" if where == "us-east-1" else "us-east-1"
    link = {"bandwidth_bps": LINK_BPS, "rtt_s": rtt_s, "jitter_s": 0.0005, "loss": 0.0}
    r = fab.migrate("noise-1", to, config=MigrationConfig(link=link, codec="raw"))
    assert r.status == "completed", r.abort_reason
    assert r.link_emulated and r.link_bandwidth_mbps == pytest.approx(LINK_BPS / 8 / 1e6)
    busiest = max((s for s in r.round_stats if not s.final), key=lambda s: s.wire_bytes)
    assert busiest.duration_s > 3.0, "the round must last seconds for the window to matter"
    assert r.link_utilisation >= 0.9, (
        f"RTT {rtt_s * 1000:g} ms: link used at {r.link_utilisation:.2f} of its rate; "
        f"transport {r.transport}")
    assert r.transport["probe"] is not None and r.transport["rtt_s"] >= rtt_s * 0.9
