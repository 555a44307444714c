"""ACP as the fabric's ledger on Ray: the protocol switches while real migrations run, and nothing is lost.

Six node actors host an ACP replica each (Ed25519 keys per node, ProBFT's RSA-FDH-VRF
keys swapped in band). The ledger starts in Raft (datacenter mode); while a VM
migrates, every node is told the mode changed, so the ledger drains, snapshots and
restarts as ProBFT (internet), then Bullshark (hybrid), then Raft again. Each
migration's Begin and Commit straddle a switch.
"""

from __future__ import annotations

import time

import pytest
import ray

import fabric
from fabric import SyntheticSpec

pytestmark = pytest.mark.ray

NODES = ("us-east-1", "us-east-2", "us-west-1", "us-west-2", "eu-west-1", "eu-west-2")


@pytest.fixture(scope="module")
def fab():
    """Six nodes, an ACP replica on each: Raft, ProBFT in internet mode, Bullshark in hybrid mode."""
    h = fabric.connect(num_cpus=2, include_dashboard=False, fleet=[],
                       ledger={"protocol": "acp", "mode_source": "manual",
                               "options": {"internet": "probft", "hybrid": "bullshark"}})
    yield h
    ray.shutdown()


def _switch(fab, mode: str) -> None:
    ray.get([fab.node(n).consensus_change_mode.remote(mode) for n in NODES])


def _open_migration(fab, vm: str) -> bool:
    recs = ray.get(fab.node(NODES[0]).consensus_records.remote())[1]
    return any(r["vm"] == vm and r.get("migration") for r in recs)


def _eras(fab) -> set[str]:
    return {s["role"].split()[0] for s in ray.get([fab.node(n).consensus_status.remote() for n in NODES])}


def test_protocol_switches_in_the_middle_of_migrations_lose_nothing(fab) -> None:
    assert fab.status()["ledger"]["kind"] == "acp"
    assert _eras(fab) == {"raft"}
    fab.create_vm("a-1", SyntheticSpec(memory_mib=128, dirty_rate_mbps=20, seed=61), where="us-east-1")
    path = [("us-west-1", "internet", "probft"), ("eu-west-1", "hybrid", "bullshark"),
            ("us-east-2", "datacenter", "raft")]
    for k, (to, mode, protocol) in enumerate(path):
        m = fab.migrate("a-1", to, wait=False)
        deadline = time.monotonic() + 30
        while not _open_migration(fab, "a-1"):  # its Begin committed in the old era
            assert time.monotonic() < deadline and not m.done()
            time.sleep(0.02)
        _switch(fab, mode)
        assert not m.done()  # the switch comes before its Commit
        r = m.result(timeout=120)
        assert r.status == "completed", r.abort_reason
        assert r.epoch == k + 2  # registered at 1; one epoch per migration, none lost, none doubled
        deadline = time.monotonic() + 30
        while _eras(fab) != {protocol}:
            assert time.monotonic() < deadline, _eras(fab)
            time.sleep(0.2)
    row = next(v for v in fab.list_vms() if v["vm"] == "a-1")
    assert row["node"] == "us-east-2" and row["epoch"] == 4 and row["state"] == "running"
    # Every replica holds the same record: the switches carried the whole ledger over.
    records = [ray.get(fab.node(n).consensus_records.remote())[1] for n in NODES]
    mine = [[rec for rec in recs if rec["vm"] == "a-1"] for recs in records]
    assert all(m == mine[0] for m in mine) and mine[0][0]["owner"] == "us-east-2"
    # And the VM runs on one node only.
    running = [n for n in NODES if any(v["name"] == "a-1" and v["state"] == "running"
                                       for v in ray.get(fab.node(n).describe.remote()).get("vms", []))]
    assert running == ["us-east-2"], running
