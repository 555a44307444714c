"""A multi-node Ray cluster on one machine: one raylet per data center, a migration between them."""

from __future__ import annotations

import time

import pytest
import ray
from ray.cluster_utils import Cluster

import fabric
from fabric import MigrationConfig, SyntheticSpec

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def cluster():
    """A head without a data center, and one raylet each for us-east and eu-west."""
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    east = c.add_node(num_cpus=1, resources={"dc:us-east": 1}, labels={"dc": "us-east"})
    west = c.add_node(num_cpus=1, resources={"dc:eu-west": 1}, labels={"dc": "eu-west"})
    c.wait_for_nodes()
    yield c, {"us-east": east.node_id, "eu-west": west.node_id}
    ray.shutdown()
    c.shutdown()


def test_node_actors_run_on_their_data_centers_raylets_and_migrate_between_them(cluster) -> None:
    c, raylet_of = cluster
    h = fabric.connect(c.address, fleet=[])
    topo = h.topology()
    assert not topo.emulated
    assert sorted(topo.dcs) == ["eu-west", "us-east"]
    assert [n.name for n in topo.nodes] == ["eu-west-1", "us-east-1"]  # one per raylet
    nodes = {n["name"]: n for n in h.status()["nodes"]}
    assert nodes["us-east-1"]["ray_node_id"] == raylet_of["us-east"]
    assert nodes["eu-west-1"]["ray_node_id"] == raylet_of["eu-west"]
    assert raylet_of["us-east"] != raylet_of["eu-west"]

    h.create_vm("geo-1", SyntheticSpec(memory_mib=64, dirty_rate_mbps=20, hot_set_mib=16, seed=21),
                where="us-east")
    time.sleep(0.3)
    r = h.migrate("geo-1", "eu-west", config=MigrationConfig(verify="full"))
    assert r.status == "completed", r.abort_reason
    assert r.source == "us-east-1" and r.destination == "eu-west-1"
    assert r.source_digest == r.destination_digest
    assert "real network" in r.link
    row = next(v for v in h.list_vms() if v["vm"] == "geo-1")
    assert row["dc"] == "eu-west" and row["state"] == "running"
