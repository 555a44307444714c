"""Data centers and nodes: the embedded default, or read from a Ray cluster's node list.

A Ray node belongs to data center X when it carries the custom resource
`dc:X` or the label `dc=X`. When one Ray node carries several data centers
(the embedded default on a laptop) or none (a plain `ray start --head`), the
data centers are emulated on shared hardware, and everything says so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from fabric.errors import ConfigError, UnknownNodeError

DC_PREFIX = "dc:"
DEFAULT_DCS = ("us-east", "us-west", "eu-west")
# Guest memory one fabric node may host. Emulated nodes share one machine, so
# the default keeps six of them well inside a 24 GiB laptop.
NODE_MEMORY_MIB_DEFAULT = 4096
NODES_PER_DC_MAX = 64


@dataclass(frozen=True, kw_only=True)
class NodeSpec:
    """One fabric node: a NodeActor in a data center."""

    name: str  # e.g. "us-east-1"
    dc: str
    memory_mib_max: int = NODE_MEMORY_MIB_DEFAULT
    ray_node_id: str | None = None  # the raylet it is pinned to, on a real cluster


@dataclass(frozen=True, kw_only=True)
class Topology:
    """The fabric's data centers and nodes, and how node actors are pinned."""

    dcs: tuple[str, ...]
    nodes: tuple[NodeSpec, ...]
    # "resources": pin by the `dc:<name>` custom resource; "none": nothing to pin to.
    pinning: Literal["resources", "none"]
    emulated: bool  # data centers share hardware; links between them are not real WAN links

    def __post_init__(self) -> None:
        names = [n.name for n in self.nodes]
        if len(set(names)) != len(names):
            raise ConfigError(f"duplicate node names in {names}")
        for n in self.nodes:
            if n.dc not in self.dcs:
                raise ConfigError(f"node {n.name} is in unknown data center {n.dc}")
        for dc in self.dcs:
            if not any(n.dc == dc for n in self.nodes):
                raise ConfigError(f"data center {dc} has no nodes")

    def node(self, name: str) -> NodeSpec:
        """The node called `name`."""
        for n in self.nodes:
            if n.name == name:
                return n
        raise UnknownNodeError(f"no node {name!r}; nodes are {[n.name for n in self.nodes]}")

    def nodes_in(self, dc: str) -> list[NodeSpec]:
        """The nodes of data center `dc`."""
        if dc not in self.dcs:
            raise UnknownNodeError(f"no data center {dc!r}; data centers are {list(self.dcs)}")
        return [n for n in self.nodes if n.dc == dc]

    def resolve(self, target: str) -> list[NodeSpec]:
        """Candidate nodes for a target that names a data center or a node."""
        if target in self.dcs:
            return self.nodes_in(target)
        return [self.node(target)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"dcs": list(self.dcs), "nodes": [asdict(n) for n in self.nodes],
                "pinning": self.pinning, "emulated": self.emulated}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Topology:
        """Parse `to_dict()` output."""
        return cls(dcs=tuple(raw["dcs"]), nodes=tuple(NodeSpec(**n) for n in raw["nodes"]),
                   pinning=raw["pinning"], emulated=bool(raw["emulated"]))


def _check_nodes_per_dc(nodes_per_dc: int) -> None:
    if not 1 <= nodes_per_dc <= NODES_PER_DC_MAX:
        raise ConfigError(f"nodes_per_dc must be 1..{NODES_PER_DC_MAX}, not {nodes_per_dc}")


def embedded_default(dcs: tuple[str, ...] = DEFAULT_DCS, nodes_per_dc: int = 2, *,
                     pinning: Literal["resources", "none"] = "resources",
                     memory_mib_max: int = NODE_MEMORY_MIB_DEFAULT) -> Topology:
    """Emulated data centers on one machine: `nodes_per_dc` nodes each."""
    _check_nodes_per_dc(nodes_per_dc)
    nodes = tuple(NodeSpec(name=f"{dc}-{i + 1}", dc=dc, memory_mib_max=memory_mib_max)
                  for dc in dcs for i in range(nodes_per_dc))
    return Topology(dcs=tuple(dcs), nodes=nodes, pinning=pinning, emulated=True)


def dcs_of_ray_node(node: dict[str, Any]) -> set[str]:
    """Data centers a `ray.nodes()` entry carries, by resource or label."""
    dcs = {r[len(DC_PREFIX):] for r in node.get("Resources", {}) if r.startswith(DC_PREFIX)}
    label = (node.get("Labels") or {}).get("dc")
    if label:
        dcs.add(label)
    return dcs


def from_ray_nodes(ray_nodes: list[dict[str, Any]], nodes_per_dc: int = 2, *,
                   memory_mib_max: int = NODE_MEMORY_MIB_DEFAULT) -> Topology:
    """The topology a Ray cluster's node list describes (see the module docstring)."""
    _check_nodes_per_dc(nodes_per_dc)
    alive = [n for n in ray_nodes if n.get("Alive", n.get("alive", True))]
    tagged = [(n, dcs_of_ray_node(n)) for n in alive]
    tagged = [(n, d) for n, d in tagged if d]
    if not tagged:
        # A plain cluster: emulate the default data centers, nothing to pin to.
        return embedded_default(nodes_per_dc=nodes_per_dc, pinning="none",
                                memory_mib_max=memory_mib_max)
    if any(len(d) > 1 for _, d in tagged):
        dcs = tuple(sorted(set().union(*(d for _, d in tagged))))
        return embedded_default(dcs, nodes_per_dc, pinning="resources",
                                memory_mib_max=memory_mib_max)
    # One data center per Ray node: a fabric node per Ray node, pinned to it.
    nodes: list[NodeSpec] = []
    for dc in sorted({next(iter(d)) for _, d in tagged}):
        members = sorted(n["NodeID"] for n, d in tagged if dc in d)
        nodes += [NodeSpec(name=f"{dc}-{i + 1}", dc=dc, memory_mib_max=memory_mib_max,
                           ray_node_id=node_id) for i, node_id in enumerate(members)]
    return Topology(dcs=tuple(sorted({n.dc for n in nodes})), nodes=tuple(nodes),
                    pinning="resources", emulated=False)
