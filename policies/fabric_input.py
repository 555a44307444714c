"""The controller's side of a placement question: what it asks the service, and the check of the answer.

Pure functions over the fabric's node descriptions (`NodeActor.describe`), so the
controller stays a thin shell. The service sees the whole fabric (every reachable
node, grouped by data center in topology order); the request names the candidate
hosts and where it arrives:

- candidates in one data center (create or migrate "to a data center", evacuate inside
  one): it arrives there and may not be handed off;
- candidates in several: it arrives at `origin_dc` (the VM's data center for a
  migration, the topology's first for a new VM placed anywhere), whose controller keeps
  it or hands it to another data center, as in the placement env.

The controller places the VM only on a candidate that is reachable and has the memory
(`checked_choice`); any other answer sends it to `least_loaded_node` instead.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from policies.heuristics.node_load import NodeLoad

LEAST_LOADED = "least-loaded"  # the policy tag of the controller's own fallback
REQUESTED = "requested"  # the policy tag when the operator named the node


def shared_cores(raylet_of: dict[str, str], cpus_by_raylet: dict[str, float]) -> dict[str, float]:
    """Each fabric node's cores: its Ray node's CPUs shared equally among the fabric nodes on it."""
    sharing = Counter(raylet_of.values())
    return {name: cpus_by_raylet.get(r, 0.0) / sharing[r] for name, r in raylet_of.items()}


def _host(n: dict[str, Any]) -> dict[str, Any]:
    """One reachable node as an advisor host: memory, VM count, measured CPU load and (if known) cores."""
    vms = n.get("vms") or []
    host = {
        "name": n["name"],
        "memory_mib_max": float(n["memory_mib_max"]),
        "memory_mib_used": float(n["memory_mib_used"]),
        "vms": len(vms),
        "cpu_busy": float(sum(v.get("cpu_busy") or 0.0 for v in vms)),  # what the node measured
    }
    if (n.get("cores") or 0.0) > 0:  # without cores the advisor sees no CPU overload on the host
        host["cores"] = float(n["cores"])
    return host


def advisor_dcs(nodes: list[dict[str, Any]], dc_order: list[str] | tuple[str, ...]) -> list[dict[str, Any]]:
    """The advisor's `dcs` input: reachable nodes (memory, VMs, CPU), grouped by data center in order."""
    out = []
    for dc in dc_order:
        hosts = [_host(n) for n in nodes
                 if n.get("dc") == dc and "error" not in n and n.get("memory_mib_used") is not None]
        if hosts:
            out.append({"name": dc, "hosts": hosts})
    return out


def placement_request(
    vm: str, memory_mib: float, candidates: list[tuple[str, str]], origin_dc: str
) -> dict[str, Any]:
    """The `place` request for `vm` on one of `candidates` ((node, dc) pairs)."""
    dcs = {dc for _, dc in candidates}
    single = len(dcs) == 1
    return {
        "vm": vm,
        "memory_mib": float(memory_mib),
        "origin_dc": next(iter(dcs)) if single else origin_dc,
        "handoff": not single,
        "hosts": [name for name, _ in candidates],
    }


def checked_choice(answer: Any, loads: list[NodeLoad], memory_mib: float) -> tuple[str | None, str | None]:
    """(node, None) if the service chose a reachable candidate with room, else (None, why not)."""
    if not isinstance(answer, dict):
        return None, f"the placement service answered {type(answer).__name__}, not a dict"
    policy = answer.get("policy", "?")
    host = answer.get("host")
    if answer.get("decision") != "host" or host is None:
        return None, f"{policy} placed it nowhere: {answer.get('reason') or 'no reason given'}"
    fits = {c.name for c in loads if c.memory_mib_free >= memory_mib}
    if host not in fits:
        return (
            None,
            f"{policy} chose {host!r}, which is not a reachable candidate with {memory_mib:g} MiB free",
        )
    return str(host), None
