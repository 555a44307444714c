"""The controller's placement client: asks the service, checks the answer, falls back without losing a VM."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from actors.placement_client import PlacementClient
from fabric.errors import CapacityError
from fabric.topology import embedded_default
from policies import AdvisorConfig, PlacementAdvisor
from policies.fabric_input import LEAST_LOADED, REQUESTED, advisor_dcs, placement_request

SHIPPED = Path(__file__).resolve().parents[1] / "policies" / "checkpoints" / "default"
TOPOLOGY = embedded_default()
DCS = list(TOPOLOGY.dcs)


def nodes(used: dict[str, float] | None = None, unreachable: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Node descriptions as NodeActor.describe gives them (the fields placement reads)."""
    used = used or {}
    out = []
    for n in TOPOLOGY.nodes:
        if n.name in unreachable:
            out.append(
                {
                    "name": n.name,
                    "dc": n.dc,
                    "memory_mib_max": n.memory_mib_max,
                    "memory_mib_used": None,
                    "vms": [],
                    "error": "unreachable: test",
                }
            )
        else:
            out.append(
                {
                    "name": n.name,
                    "dc": n.dc,
                    "memory_mib_max": n.memory_mib_max,
                    "memory_mib_used": used.get(n.name, 0.0),
                    "vms": [{"name": "x"}] * (n.name in used),
                }
            )
    return out


def pool(target: str) -> list[tuple[str, str]]:
    """(node, dc) candidates of a data center or node."""
    return [(n.name, n.dc) for n in TOPOLOGY.resolve(target)]


class _Method:
    def __init__(self, fn) -> None:
        self._fn = fn

    def remote(self, *args):
        return self._fn(*args)


class FakeService:
    """Stands in for the actor handle: `place.remote(...)` returns an awaitable."""

    def __init__(
        self, answer=None, *, error: Exception | None = None, hang: bool = False, advisor=None
    ) -> None:
        self.calls: list[tuple[dict, list]] = []

        async def place(request, dcs):
            self.calls.append((request, dcs))
            if hang:
                await asyncio.sleep(3600)
            if error is not None:
                raise error
            return advisor.place(request, dcs) if advisor is not None else answer

        self.place = _Method(place)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def choose(client: PlacementClient, target: str, memory_mib: float = 256.0, **kw) -> tuple[str, str]:
    kw.setdefault("nodes", nodes())
    return asyncio.run(
        client.choose(
            "vm-1",
            memory_mib,
            pool(target),
            kw.pop("nodes"),
            dc_order=DCS,
            origin_dc=kw.pop("origin_dc", "us-east"),
        )
    )


def host_answer(host: str, policy: str = "maddpg") -> dict[str, Any]:
    return {
        "decision": "host",
        "host": host,
        "dc": host.rsplit("-", 1)[0],
        "policy": policy,
        "fallback_reason": None,
    }


def test_the_services_choice_is_taken_with_its_policy_name() -> None:
    service = FakeService(host_answer("eu-west-2"))
    client = PlacementClient(lambda: service)
    assert choose(client, "eu-west") == ("eu-west-2", "maddpg")
    request, dcs = service.calls[0]
    assert request["origin_dc"] == "eu-west" and request["handoff"] is False  # "to eu-west": stays there
    assert request["hosts"] == ["eu-west-1", "eu-west-2"]
    assert [d["name"] for d in dcs] == DCS  # the service sees the whole fabric
    assert client.state["policy"] == "maddpg" and client.state["decisions"] == {"maddpg": 1}


def test_a_named_node_is_only_checked_for_room() -> None:
    service = FakeService(host_answer("eu-west-2"))
    client = PlacementClient(lambda: service)
    assert choose(client, "us-west-1") == ("us-west-1", REQUESTED) and not service.calls
    with pytest.raises(CapacityError):
        choose(client, "us-west-1", memory_mib=10**9)


def test_a_failing_service_falls_back_logs_once_and_is_left_alone(caplog) -> None:
    clock, starts = Clock(), []

    def start():
        starts.append(1)
        return FakeService(error=RuntimeError("actor died"))

    client = PlacementClient(start, retry_s=30.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="novacron.controller"):
        used = {"eu-west-1": 1000.0}
        assert choose(client, "eu-west", nodes=nodes(used)) == ("eu-west-2", LEAST_LOADED)
        assert (
            "actor died" in client.state["service_error"] and "actor died" in client.state["fallback_reason"]
        )
        assert choose(client, "eu-west", nodes=nodes(used)) == ("eu-west-2", LEAST_LOADED)
        assert len(starts) == 1  # within retry_s the service is not asked again ...
        clock.now = 31.0
        choose(client, "eu-west")
        assert len(starts) == 2  # ... after it, a new one is started
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == len(set(logged)) == 2, logged  # the failure, then the pause: each once
    assert all("actor died" in m for m in logged)
    assert client.state["decisions"] == {LEAST_LOADED: 3}


def test_a_service_that_does_not_answer_in_time_costs_one_timeout() -> None:
    service = FakeService(hang=True)
    client = PlacementClient(lambda: service, call_s_max=0.05)
    node, policy = choose(client, "us-east")
    assert policy == LEAST_LOADED and node in ("us-east-1", "us-east-2")
    assert "TimeoutError" in client.state["service_error"]


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (host_answer("us-west-1"), "not a reachable candidate"),  # outside the pool
        (host_answer("eu-west-1"), "not a reachable candidate"),  # unreachable
        ({"decision": "none", "policy": "maddpg", "reason": "no host has room"}, "placed it nowhere"),
        (["eu-west-2"], "not a dict"),
    ],
)
def test_an_unusable_answer_falls_back_to_least_loaded(answer, why) -> None:
    client = PlacementClient(lambda: FakeService(answer))
    node, policy = choose(client, "eu-west", nodes=nodes(unreachable=("eu-west-1",)))
    assert (node, policy) == ("eu-west-2", LEAST_LOADED)
    assert why in client.state["fallback_reason"]


def test_no_room_anywhere_is_a_capacity_error_whatever_the_service_says() -> None:
    full = {n.name: float(n.memory_mib_max) for n in TOPOLOGY.nodes}
    client = PlacementClient(lambda: FakeService(host_answer("eu-west-2")))
    with pytest.raises(CapacityError):
        choose(client, "eu-west", nodes=nodes(full))


def test_requests_arrive_where_the_pool_says() -> None:
    anywhere = [(n.name, n.dc) for n in TOPOLOGY.nodes if n.name != "us-west-2"]
    request = placement_request("vm-1", 64, anywhere, "us-west")
    assert request["origin_dc"] == "us-west" and request["handoff"] is True
    assert "us-west-2" not in request["hosts"] and len(request["hosts"]) == 5
    dcs = advisor_dcs(nodes(unreachable=("us-east-1",)), DCS)
    assert [h["name"] for h in dcs[0]["hosts"]] == ["us-east-2"]


def test_the_shipped_policy_answers_through_the_client() -> None:
    """The advisor behind the actor, in-process: the real request and view formats, end to end."""
    advisor = PlacementAdvisor(AdvisorConfig(checkpoint=str(SHIPPED)), clock=lambda: 43_200.0)
    client = PlacementClient(lambda: FakeService(advisor=advisor))
    used = {"us-east-1": 2048.0, "us-west-1": 3000.0}
    node, policy = choose(client, "us-west", nodes=nodes(used))
    assert policy == "maddpg" and node in ("us-west-1", "us-west-2")
    # Evacuating us-west-2 anywhere else: MADDPG (from us-west's controller) picks a candidate with room.
    anywhere = [(n.name, n.dc) for n in TOPOLOGY.nodes if n.name != "us-west-2"]
    node, policy = asyncio.run(
        client.choose("vm-2", 512.0, anywhere, nodes(used), dc_order=DCS, origin_dc="us-west")
    )
    assert policy == "maddpg" and node != "us-west-2"
    assert client.state["fallback_reason"] is None
