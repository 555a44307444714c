"""Every heuristic respects capacity and picks what its name says; the controller's picker is unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from fabric.errors import CapacityError
from policies import NodeLoad, least_loaded_node
from policies.env import PlacementEnv, PlacementEnvConfig
from policies.env.decode import Request, Rules, decide
from policies.env.hosts import Hosts
from policies.env.layout import Layout, QueueSummary
from policies.errors import UnknownPolicyError
from policies.heuristics import HEURISTICS, HeuristicPolicy
from policies.traces.splits import TraceSources

LAYOUT = Layout(dcs=2, hosts=3)
EMPTY_QUEUE = QueueSummary(waiting=1, vcpus=1.0, memory_gb=1.0, oldest_wait_steps=0, handed_off=0)


def hosts(memory_used: list[float], vcpus_used: list[float] | None = None) -> Hosts:
    """Three hosts of 100 GB and 100 vCPUs with the given usage."""
    h = Hosts.empty(3, cores=50.0, vcpus_max=100.0, memory_gb_max=100.0)
    h.memory_gb_used[:] = memory_used
    h.vcpus_used[:] = vcpus_used if vcpus_used is not None else memory_used
    h.vms[:] = [1 if m > 0 else 0 for m in memory_used]
    return h


def choose(name: str, local: Hosts, peer: Hosts, request: Request) -> tuple[str, int]:
    """Where heuristic `name`, acting for DC 0, sends `request`."""
    policy = HeuristicPolicy(name, LAYOUT, ("a", "b"))
    obs = LAYOUT.observe(0, [local, peer], EMPTY_QUEUE, queue_vms_max=10, wait_steps_max=3, day_fraction=0.0)
    rules = Rules.from_action(policy.action(obs), LAYOUT, 0, [local.utilisation(), peer.utilisation()])
    d = decide(rules, local, request, handoffs_max=1)
    return d.kind, d.target


@pytest.mark.parametrize("name", HEURISTICS)
def test_every_heuristic_respects_capacity(name: str, sources: TraceSources) -> None:
    env = PlacementEnv(PlacementEnvConfig(sources=sources, window_steps=24, split="test"))
    policy = HeuristicPolicy(name, env.layout, tuple(env.agents))
    for seed in (0, 1):
        obs, _ = env.reset(seed=seed, options={"shard": seed})
        placed = 0
        for _ in range(env.config.window_steps):
            obs, _, _, _, infos = env.step(policy.act(obs))
            placed += infos["us-east"]["decisions"]
            for h in env.hosts_by_dc:
                assert (h.memory_gb_used <= h.memory_gb_max + 1e-6).all(), name
                assert (h.vcpus_used <= h.vcpus_max + 1e-6).all(), name
                assert (h.memory_gb_used >= -1e-6).all() and (h.vms >= 0).all()
        assert placed > 0  # the windows hold real requests: the check saw decisions


def test_each_placer_picks_its_host() -> None:
    local, peer = hosts([60.0, 20.0, 90.0]), hosts([0.0, 0.0, 0.0])
    small = Request(vcpus=5.0, memory_gb=5.0)
    assert choose("first-fit", local, peer, small) == ("host", 0)
    assert choose("best-fit", local, peer, small) == ("host", 2)  # the fullest that still fits
    assert choose("worst-fit", local, peer, small) == ("host", 1)
    # A memory-heavy request: Tetris takes the host with the most free memory along its direction (1),
    # where best-fit takes the fullest (2) and worst-fit the emptiest (0).
    lopsided = hosts([80.0, 40.0, 50.0], vcpus_used=[10.0, 70.0, 95.0])
    memory_heavy = Request(vcpus=1.0, memory_gb=10.0)
    assert choose("dot-product", lopsided, peer, memory_heavy) == ("host", 1)
    assert choose("best-fit", lopsided, peer, memory_heavy) == ("host", 2)
    assert choose("worst-fit", lopsided, peer, memory_heavy) == ("host", 0)


def test_overflow_goes_to_the_other_dc_and_least_loaded_balances() -> None:
    full, empty = hosts([99.0, 99.0, 99.0]), hosts([0.0, 0.0, 0.0])
    for name in ("first-fit", "best-fit+migrate"):
        assert choose(name, full, empty, Request(vcpus=5.0, memory_gb=5.0)) == ("handoff", 1)
    busy, idle = hosts([70.0, 70.0, 70.0]), hosts([10.0, 10.0, 10.0])
    assert choose("worst-fit", busy, idle, Request(vcpus=5.0, memory_gb=5.0))[0] == "host"
    assert choose("least-loaded-dc", busy, idle, Request(vcpus=5.0, memory_gb=5.0)) == ("handoff", 1)
    assert choose("least-loaded-dc", idle, busy, Request(vcpus=5.0, memory_gb=5.0))[0] == "host"


def test_unknown_heuristic_is_refused() -> None:
    with pytest.raises(UnknownPolicyError, match="heuristics are"):
        HeuristicPolicy("fastest-fit", LAYOUT, ("a", "b"))


def test_the_controllers_node_picker_is_unchanged() -> None:
    nodes = [
        NodeLoad(name="n1", memory_mib_max=4096, memory_mib_used=1024, vms=1),
        NodeLoad(name="n2", memory_mib_max=4096, memory_mib_used=1024, vms=0),
        NodeLoad(name="n3", memory_mib_max=4096, memory_mib_used=3000, vms=0),
    ]
    assert least_loaded_node(nodes, 256) == "n2"  # most free memory, then fewer VMs
    assert nodes[0].memory_mib_free == 3072
    with pytest.raises(CapacityError, match="no candidate node"):
        least_loaded_node(nodes, 4000)
    assert np.isclose(nodes[2].memory_mib_free, 1096)
