"""PBFT as the fabric's ledger on Ray: migrations commit, and keep committing with f replicas dead."""

from __future__ import annotations

import pytest
import ray

import fabric
from fabric import SyntheticSpec

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def fab():
    """Six nodes, a PBFT replica on each (f = 1), with signed requests and messages."""
    h = fabric.connect(num_cpus=2, include_dashboard=False, fleet=[], ledger={"protocol": "pbft"})
    yield h
    ray.shutdown()


def test_migrations_commit_through_pbft_and_survive_f_dead_replicas(fab) -> None:
    assert fab.status()["ledger"]["kind"] == "pbft"
    fab.create_vm("b-1", SyntheticSpec(memory_mib=32, dirty_rate_mbps=5, seed=51), where="us-east-1")
    r = fab.migrate("b-1", "us-west-1")
    assert r.status == "completed", r.abort_reason
    # kill a replica that hosts neither end of the next migrations (f = 1 of 6)
    ray.kill(fab.node("eu-west-2"), no_restart=True)
    for to in ("us-east-2", "us-west-2"):
        r = fab.migrate("b-1", to)
        assert r.status == "completed", r.abort_reason
    row = next(v for v in fab.list_vms() if v["vm"] == "b-1")
    assert row["node"] == "us-west-2" and row["epoch"] == r.epoch and row["state"] == "running"
