"""`PlacementClient`: how the controller asks the placement service, and what it does when that fails.

The controller owns one. When more than one node could take a VM, `choose` asks the
service (started on first use through `start`, e.g. the named `fabric/placement`
actor) with the whole fabric's view and the candidates (`policies.fabric_input`). It
takes the answer only if it names a reachable candidate with the memory; on any
failure (the service raises, dies, times out, or places the VM nowhere) it uses
`least_loaded_node`, logs why (each distinct reason once), and keeps going: a VM is
refused only when no reachable candidate has room (CapacityError). After a failure
the service is left alone for `retry_s`, so a dead service costs one timeout, not one
per VM. Plain Python with an injectable service, so it is tested without Ray.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from fabric.errors import FabricError
from policies.fabric_input import LEAST_LOADED, REQUESTED, advisor_dcs, checked_choice, placement_request
from policies.heuristics.node_load import NodeLoad, least_loaded_node

log = logging.getLogger("novacron.controller")

CALL_S_MAX = 30.0  # the first question starts the service (a worker, then the checkpoint): seconds when busy
RETRY_S = 30.0
REASONS_LOGGED_MAX = 64  # distinct fallback reasons logged (each once)


class PlacementClient:
    """Chooses nodes for the controller: the placement service's answer, else least-loaded."""

    def __init__(
        self,
        start: Callable[[], Any],
        *,
        call_s_max: float = CALL_S_MAX,
        retry_s: float = RETRY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < call_s_max <= 600 or not 0 <= retry_s <= 3600:
            raise ValueError(f"call_s_max in (0, 600] and retry_s in [0, 3600], not {call_s_max}, {retry_s}")
        self._start = start
        self._call_s_max = call_s_max
        self._retry_s = retry_s
        self._clock = clock
        self._service: Any = None
        self._retry_at = float("-inf")
        self._logged: set[str] = set()
        self.state: dict[str, Any] = {
            "policy": None,  # the policy of the last decision
            "fallback_reason": None,  # why the last decision was not the configured policy's, if it was not
            "service_error": None,  # the service's last failure, until it answers again
            "decisions": {},  # decisions per policy
        }

    async def choose(
        self,
        vm: str,
        memory_mib: float,
        pool: list[tuple[str, str]],
        nodes: list[dict[str, Any]],
        *,
        dc_order: list[str] | tuple[str, ...],
        origin_dc: str,
    ) -> tuple[str, str]:
        """(node, policy) for `vm`: a node of `pool` ((node, dc) pairs), given every node's description."""
        names = {name for name, _ in pool}
        loads = [_load(n) for n in nodes if n["name"] in names and "error" not in n]
        if len(pool) == 1:  # the operator named the node: only check that it has room
            return self._count(least_loaded_node(loads, memory_mib), REQUESTED)
        try:
            answer = await self._ask(
                placement_request(vm, memory_mib, pool, origin_dc), advisor_dcs(nodes, dc_order)
            )
            node, why = checked_choice(answer, loads, memory_mib)
        except Exception as e:  # the service is an optimisation: it never costs a VM its place
            node, why = None, f"the placement service failed: {type(e).__name__}: {e}"
        if node is not None:
            reason = answer.get("fallback_reason")
            self.state["fallback_reason"] = reason
            if reason:
                self._log(f"the service uses {answer['policy']}: {reason}")
            return self._count(node, str(answer["policy"]))
        self.state["fallback_reason"] = why
        self._log(f"{why}; placing with {LEAST_LOADED}")
        return self._count(least_loaded_node(loads, memory_mib), LEAST_LOADED)

    async def _ask(self, request: dict[str, Any], dcs: list[dict[str, Any]]) -> Any:
        if self._clock() < self._retry_at:
            raise FabricError(
                f"not asked for {self._retry_s:g} s after it failed ({self.state['service_error']})"
            )
        try:
            if self._service is None:
                self._service = self._start()
            answer = await asyncio.wait_for(self._service.place.remote(request, dcs), self._call_s_max)
        except Exception as e:
            self._service = None  # a dead actor frees its name: the next use starts a new one
            self._retry_at = self._clock() + self._retry_s
            self.state["service_error"] = f"{type(e).__name__}: {e}"[:500]
            raise
        self.state["service_error"] = None
        return answer

    def _count(self, node: str, policy: str) -> tuple[str, str]:
        self.state["policy"] = policy
        decisions = self.state["decisions"]
        decisions[policy] = decisions.get(policy, 0) + 1
        return node, policy

    def _log(self, reason: str) -> None:
        if reason in self._logged or len(self._logged) >= REASONS_LOGGED_MAX:
            return
        self._logged.add(reason)
        log.warning("placement: %s", reason)


def _load(node: dict[str, Any]) -> NodeLoad:
    return NodeLoad(
        name=node["name"],
        memory_mib_max=node["memory_mib_max"],
        memory_mib_used=node["memory_mib_used"],
        vms=len(node.get("vms") or []),
    )
