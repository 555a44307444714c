"""cluster.yaml passes Ray's own cluster-config validator offline, and broken copies of it do not.

`ray up` prepares a config (merges the provider's defaults) and validates it
against ray-schema.json before it calls any cloud API; these tests run exactly
that part. No Ray session, no network.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from fabric.topology import DC_PREFIX, from_ray_nodes

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"


def validated(path: Path) -> dict[str, Any]:
    """What `ray up` checks before launching anything: prepare, then validate."""
    config = prepare_config(yaml.safe_load(path.read_text()))
    validate_config(config)
    return config


def dc_node_types(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in config["available_node_types"].items() if k != config["head_node_type"]}


def test_cluster_yaml_passes_rays_validator_and_gives_each_worker_type_one_data_center() -> None:
    config = validated(CLUSTER_YAML)
    head = config["available_node_types"][config["head_node_type"]]
    assert not [r for r in head["resources"] if r.startswith(DC_PREFIX)], "the head carries no data center"
    types = dc_node_types(config)
    assert len(types) >= 2
    for name, t in types.items():
        dcs = [r[len(DC_PREFIX):] for r in t["resources"] if r.startswith(DC_PREFIX)]
        assert len(dcs) == 1 and t["labels"]["dc"] == dcs[0], name
        assert t["min_workers"] == t["max_workers"] >= 1, name
    assert sum(t["max_workers"] for t in types.values()) <= config["max_workers"]
    # every port a firewall must open is fixed, on the head and on the workers alike
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = " ".join(config[key])
        for flag in ("--object-manager-port=", "--node-manager-port=", "--metrics-export-port=",
                     "--min-worker-port=", "--max-worker-port=", "--runtime-env-agent-port=",
                     "--dashboard-agent-grpc-port=", "--dashboard-agent-listen-port="):
            assert flag in start, (key, flag)
        assert "RAY_AUTH_MODE=token" in start


def test_the_fabric_reads_one_fabric_node_per_ray_node_off_that_cluster() -> None:
    config = validated(CLUSTER_YAML)
    # ray.nodes() as the launched cluster reports it: the head, then each type's workers
    nodes = [{"NodeID": "head", "Alive": True, "Resources": {"CPU": 4.0}, "Labels": {}}]
    for name, t in dc_node_types(config).items():
        nodes += [{"NodeID": f"{name}-{i}", "Alive": True,
                   "Resources": {"CPU": 4.0, **{k: float(v) for k, v in t["resources"].items()}},
                   "Labels": dict(t["labels"])} for i in range(t["min_workers"])]
    topo = from_ray_nodes(nodes)
    assert not topo.emulated and topo.pinning == "resources"
    assert set(topo.dcs) == {t["labels"]["dc"] for t in dc_node_types(config).values()}
    assert len(topo.nodes) == len(nodes) - 1 and "head" not in {n.ray_node_id for n in topo.nodes}
    assert all(n.name.startswith(f"{n.dc}-") for n in topo.nodes)


# name -> (text in cluster.yaml, what a broken copy has instead, the error Ray raises, its message)
BREAKAGES = {
    "a fractional data-center resource": ('resources: {"dc:us-east-1b": 1}',
                                          'resources: {"dc:us-east-1b": 0.5}',
                                          jsonschema.ValidationError, "is not of type 'integer'"),
    "a misspelt top-level key": ("max_workers: 6", "max_worker: 6", jsonschema.ValidationError,
                                 "'max_worker' was unexpected"),
    "a head type that does not exist": ("head_node_type: head", "head_node_type: controller", ValueError,
                                        "must be one of `available_node_types`"),
    "a node type without node_config": ("""    labels: {dc: us-east-1c}
    min_workers: 2
    max_workers: 2
    node_config:
      InstanceType: r6i.xlarge
      Placement:
        AvailabilityZone: us-east-1c
""", """    labels: {dc: us-east-1c}
    min_workers: 2
    max_workers: 2
""", jsonschema.ValidationError, "'node_config' is a required property"),
    "a label that is not a string": ("labels: {dc: us-east-1a}", "labels: {dc: [us-east-1a]}",
                                     jsonschema.ValidationError, "is not of type 'string'"),
    "more minimum workers than the cluster allows": ("max_workers: 6", "max_workers: 4", ValueError,
                                                     "smaller than the sum of `min_workers`"),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_a_broken_copy_fails_rays_validator(breakage: str, tmp_path: Path) -> None:
    old, new, error, message = BREAKAGES[breakage]
    text = CLUSTER_YAML.read_text()
    assert old in text, f"cluster.yaml changed: update the breakage {breakage!r}"
    broken = tmp_path / "cluster.yaml"
    broken.write_text(text.replace(old, new, 1))
    with pytest.raises(error, match=re.escape(message)):
        validated(broken)
