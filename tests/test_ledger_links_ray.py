"""ACP on Ray follows the measured links: re-route the emulated WAN links and the ledger switches protocol.

Six node actors in three emulated data centers host an ACP replica each. The
controller probes the links between the data centers (packet trains through the
emulated links, fabric.ledger.link_modes); the default links are internet-class
(73-153 ms), so the ledger starts in T-PBFT (a consensus group of the 4 most
trusted of the 6 replicas). Re-routing every link to 1 ms and
10 Gbit/s makes it datacenter mode after the detector's dwell, and the ledger
switches to Raft while a migration runs; putting one link back at 81 ms makes it
internet again, and the ledger switches back to T-PBFT. Nothing is lost either way.
"""

from __future__ import annotations

import time

import pytest
import ray

import fabric
from fabric import SyntheticSpec
from jobs.status import status_text

pytestmark = pytest.mark.ray

NODES = ("us-east-1", "us-east-2", "us-west-1", "us-west-2", "eu-west-1", "eu-west-2")
LINKS = (("us-east", "us-west"), ("us-east", "eu-west"), ("us-west", "eu-west"))
SWITCH_S_MAX = 60  # three probes in a row at 0.3 s, then drain, snapshot and restart, on a loaded machine


@pytest.fixture(scope="module")
def fab():
    """Six nodes, ACP following its links (probed every 0.3 s): Raft or T-PBFT."""
    h = fabric.connect(num_cpus=2, include_dashboard=False, fleet=[],
                       ledger={"protocol": "acp", "link_probe_s": 0.3, "options": {
                           "internet": "tpbft", "protocol_options": {"tpbft": {"group_size": 4}}}})
    yield h
    ray.shutdown()


def _eras(fab) -> set[str]:
    return {s["role"].split()[0] for s in ray.get([fab.node(n).consensus_status.remote() for n in NODES])}


def _wait_eras(fab, protocol: str) -> None:
    deadline = time.monotonic() + SWITCH_S_MAX
    while _eras(fab) != {protocol}:
        assert time.monotonic() < deadline, (_eras(fab), fab.status()["ledger"]["links"])
        time.sleep(0.2)


def test_the_ledger_follows_the_measured_mode_of_its_links(fab) -> None:
    links = fab.status()["ledger"]["links"]
    assert links["mode"] == "internet", links  # measured at boot, so it starts in T-PBFT
    assert {k: v["mode"] for k, v in links["links"].items()} == {
        "eu-west|us-east": "internet", "eu-west|us-west": "internet", "us-east|us-west": "internet"}
    assert all(v["rtt_ms"] >= 73 for v in links["links"].values()), links
    assert _eras(fab) == {"tpbft"}
    groups = {tuple(s["members"]) for s in ray.get([fab.node(n).consensus_status.remote() for n in NODES])}
    assert len(groups) == 1 and len(next(iter(groups))) == 4, groups  # one group of 4 agrees; 2 observe
    fab.create_vm("a-1", SyntheticSpec(memory_mib=64, dirty_rate_mbps=10, seed=62), where="us-east-1")

    for a, b in LINKS:  # a re-route: every link becomes a datacenter link
        assert fab.link_fault(a, b, rtt_s=0.001, bandwidth_bps=10e9) > 0
    m = fab.migrate("a-1", "us-west-1", wait=False)
    _wait_eras(fab, "raft")
    r = m.result(timeout=120)
    assert r.status == "completed", r.abort_reason
    assert r.epoch == 2  # registered at 1; nothing lost or doubled across the switch

    fab.link_fault("us-east", "eu-west", rtt_s=0.081)  # one link is back on the internet
    m = fab.migrate("a-1", "eu-west-1", wait=False)
    _wait_eras(fab, "tpbft")
    r = m.result(timeout=120)
    assert r.status == "completed", r.abort_reason
    assert r.epoch == 3

    status = fab.status()
    links = status["ledger"]["links"]
    text = status_text(status)  # what `novacron status` prints
    assert "ledger links (mode internet" in text and "eu-west <-> us-east  internet" in text, text
    assert [s["mode"] for s in links["switches"]] == ["datacenter", "internet"], links["switches"]
    assert links["links"]["eu-west|us-east"]["mode"] == "internet"
    assert links["links"]["us-east|us-west"]["mode"] == "datacenter"
    row = next(v for v in fab.list_vms() if v["vm"] == "a-1")
    assert row["node"] == "eu-west-1" and row["epoch"] == 3 and row["state"] == "running"
    records = [ray.get(fab.node(n).consensus_records.remote())[1] for n in NODES]
    mine = [[rec for rec in recs if rec["vm"] == "a-1"] for recs in records]
    assert all(x == mine[0] for x in mine) and mine[0][0]["owner"] == "eu-west-1"
