"""The placement service answers for the controller, and falls back to a heuristic (saying why) if it must."""

from __future__ import annotations

import json
import logging
import pickle
import shutil
from pathlib import Path

import pytest
import ray

from actors.placement import PlacementService
from fabric.errors import ConfigError
from fabric.topology import embedded_default
from policies import AdvisorConfig, PlacementAdvisor, UnknownPolicyError
from policies.checkpoint import PLACEMENT_META, actor_description
from policies.env import PlacementEnv, PlacementEnvConfig
from policies.maddpg import MADDPGConfig
from policies.traces.splits import TraceSources

SHIPPED = Path(__file__).resolve().parents[1] / "policies" / "checkpoints" / "default"
MIB_PER_GB = 1024


def fabric_dcs(used_mib: dict[str, float] | None = None) -> list[dict]:
    """The embedded default topology (3 data centers of 2 nodes) in the service's input format."""
    topo = embedded_default()
    used_mib = used_mib or {}
    return [
        {
            "name": dc,
            "hosts": [
                {
                    "name": n.name,
                    "memory_mib_max": n.memory_mib_max,
                    "memory_mib_used": used_mib.get(n.name, 0.0),
                    "vms": 1 if n.name in used_mib else 0,
                }
                for n in topo.nodes_in(dc)
            ],
        }
        for dc in topo.dcs
    ]


def advisor(**config) -> PlacementAdvisor:
    """An advisor with a fixed clock (noon), so answers do not depend on when the test runs."""
    return PlacementAdvisor(AdvisorConfig(**config), clock=lambda: 43_200.0)


def test_a_heuristic_places_within_capacity() -> None:
    a = advisor(heuristic="best-fit")
    answer = a.place(
        {"vm": "web-2", "memory_mib": 1024, "origin_dc": "us-west"},
        fabric_dcs({"us-west-1": 3500.0, "us-west-2": 2000.0}),
    )
    assert answer["policy"] == "best-fit" and answer["fallback_reason"] is None
    assert (answer["dc"], answer["host"]) == ("us-west", "us-west-2")  # the fullest node that still fits
    full = a.place(
        {"vm": "big", "memory_mib": 4000, "origin_dc": "us-west"},
        fabric_dcs({"us-west-1": 3500.0, "us-west-2": 2000.0}),
    )
    assert full["handed_off"] and full["dc"] != "us-west"
    assert a.describe() == {
        "policy": "best-fit",
        "checkpoint": None,
        "fallback": False,
        "fallback_reason": None,
        "fallback_policy": "best-fit+migrate",
    }


def test_a_missing_checkpoint_falls_back_and_says_so(tmp_path: Path) -> None:
    a = advisor(checkpoint=str(tmp_path / "nothing-here"), fallback="worst-fit")
    assert a.describe()["fallback"] and "no checkpoint" in a.describe()["fallback_reason"]
    answer = a.place({"vm": "x", "memory_mib": 256}, fabric_dcs())
    assert answer["policy"] == "worst-fit" and "no checkpoint" in answer["fallback_reason"]
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "module_state.pkl").write_bytes(b"not a pickle")
    foreign = advisor(checkpoint=str(tmp_path / "foreign"))
    assert "does not describe mlp-relu-tanh/v1 actors" in foreign.describe()["fallback_reason"]
    shutil.copytree(SHIPPED, tmp_path / "damaged")
    (tmp_path / "damaged" / "eu-west" / "module_state.pkl").write_bytes(b"not a pickle")
    damaged = advisor(checkpoint=str(tmp_path / "damaged"))
    assert "is not a file of actor weights" in damaged.describe()["fallback_reason"]
    assert damaged.place({"vm": "x", "memory_mib": 256}, fabric_dcs())["policy"] == "best-fit+migrate"


class _Opens:
    """A pickle that, if it were loaded by plain pickle, would create a file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_a_checkpoint_cannot_run_code_when_loaded(tmp_path: Path, caplog) -> None:
    hostile = tmp_path / "hostile"
    shutil.copytree(SHIPPED, hostile)
    marker = tmp_path / "pwned"
    (hostile / "us-east" / "module_state.pkl").write_bytes(pickle.dumps({"pi.0.weight": _Opens(marker)}))
    with caplog.at_level(logging.WARNING, logger="novacron.placement"):
        a = advisor(checkpoint=str(hostile))
    assert a.describe()["fallback"] and "is not allowed in actor weights" in a.describe()["fallback_reason"]
    assert not marker.exists()
    assert any("falls back to a heuristic" in r.getMessage() for r in caplog.records)  # and it is logged


def test_candidate_hosts_and_no_handoff_are_respected() -> None:
    a = advisor(heuristic="best-fit")
    used = {"us-west-1": 2000.0, "us-west-2": 3500.0}
    best = a.place({"vm": "v", "memory_mib": 256, "origin_dc": "us-west"}, fabric_dcs(used))
    assert best["host"] == "us-west-2"  # the fullest that fits ...
    only = a.place(
        {"vm": "v", "memory_mib": 256, "origin_dc": "us-west", "hosts": ["us-west-1"]}, fabric_dcs(used)
    )
    assert only["host"] == "us-west-1"  # ... unless it is not a candidate
    full = {"us-west-1": 4000.0, "us-west-2": 4000.0}
    handed = a.place({"vm": "v", "memory_mib": 512, "origin_dc": "us-west"}, fabric_dcs(full))
    assert handed["handed_off"] and handed["dc"] != "us-west"
    stays = a.place(
        {"vm": "v", "memory_mib": 512, "origin_dc": "us-west", "handoff": False}, fabric_dcs(full)
    )
    assert stays["decision"] == "none" and stays["dc"] is None
    with pytest.raises(ConfigError, match="not in the fabric"):
        a.place({"vm": "v", "memory_mib": 1, "hosts": ["mars-1"]}, fabric_dcs())


def test_an_incompatible_checkpoint_falls_back_and_says_so(tmp_path: Path, sources: TraceSources) -> None:
    tiny = PlacementEnv(
        PlacementEnvConfig(sources=sources, dcs=("a", "b"), hosts_per_dc=2, dc_weights=(0.5, 0.5))
    )
    spec = (
        MADDPGConfig()
        .environment(PlacementEnv, env_config=tiny.config.to_dict())
        .multi_agent_for(["a", "b"])
        .get_multi_rl_module_spec(env=tiny, inference_only=True)
    )
    spec.build().save_to_path(tmp_path / "two-dcs")
    layout = tiny.layout
    meta = {
        "agents": ["a", "b"],
        "actor": actor_description([64, 64], layout.observation_size, layout.action_size),
    }
    (tmp_path / "two-dcs" / PLACEMENT_META).write_text(json.dumps(meta))
    a = advisor(checkpoint=str(tmp_path / "two-dcs"))
    assert not a.describe()["fallback"]  # it loads ...
    answer = a.place({"vm": "x", "memory_mib": 256}, fabric_dcs())
    assert answer["policy"] == "best-fit+migrate"  # ... but this fabric has three data centers
    assert "trained for 2 data centers" in answer["fallback_reason"]


def test_the_shipped_checkpoint_serves_the_default_fabric() -> None:
    a = advisor(checkpoint=str(SHIPPED))
    info = a.describe()
    assert not info["fallback"], info["fallback_reason"]
    assert info["trained_for"]["dcs"] == 3 and info["provenance"]["command"].startswith(
        "python jobs/train_placement.py"
    )
    answer = a.place(
        {"vm": "web-2", "memory_mib": 256, "vcpus": 1, "origin_dc": "eu-west"},
        fabric_dcs({"eu-west-1": 1024.0}),
    )
    assert answer["policy"] == "maddpg" and answer["fallback_reason"] is None
    assert answer["decision"] == "host" and answer["host"].startswith(answer["dc"])


def test_rebalance_moves_vms_off_a_hot_host() -> None:
    dcs = fabric_dcs()
    hot = dcs[0]["hosts"][0]
    hot.update(
        {
            "vcpus_max": 64,
            "cores": 8,
            "memory_mib_used": 3 * 1024,
            "vm_list": [
                {"name": f"busy-{i}", "memory_mib": 1024, "vcpus": 4, "cpu_busy": 3.8} for i in range(3)
            ],
        }
    )
    for h in dcs[0]["hosts"][1:] + [h for dc in dcs[1:] for h in dc["hosts"]]:
        h.update({"vcpus_max": 64, "cores": 8})
    moves = advisor(heuristic="best-fit+migrate").rebalance({"dcs": dcs})
    assert moves and all(m["from_host"] == hot["name"] and m["to_host"] != hot["name"] for m in moves)
    assert advisor(heuristic="best-fit").rebalance({"dcs": dcs}) == []  # a placer alone never migrates


def test_bad_input_is_a_config_error() -> None:
    a = advisor(heuristic="first-fit")
    with pytest.raises(ConfigError, match="memory_mib"):
        a.place({"vm": "x"}, fabric_dcs())
    with pytest.raises(ConfigError, match="no data center"):
        a.place({"vm": "x", "memory_mib": 1, "origin_dc": "mars"}, fabric_dcs())
    with pytest.raises(ConfigError, match="exactly one"):
        AdvisorConfig(checkpoint="x", heuristic="best-fit")
    with pytest.raises(UnknownPolicyError):
        AdvisorConfig(heuristic="fastest-fit")


@pytest.mark.ray
def test_the_ray_actor_answers() -> None:
    ray.init(
        address="local", num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR
    )
    try:
        svc = PlacementService.options(name="fabric/placement", namespace="novacron").remote(
            {"checkpoint": str(SHIPPED)}
        )
        assert not ray.get(svc.describe.remote())["fallback"]
        answer = ray.get(svc.place.remote({"vm": "kv-2", "memory_mib": 256}, fabric_dcs()))
        assert answer["policy"] == "maddpg" and answer["dc"] in ("us-east", "us-west", "eu-west")
        assert ray.get(svc.rebalance.remote({"dcs": fabric_dcs()})) == []
    finally:
        ray.shutdown()
