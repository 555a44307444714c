"""Protocols by name: how to build a cluster of replicas, its clients' policy, its fault model.

A shell (the simulator, the benchmark, later the Ray NodeActors) never names a
protocol class. It asks the registry for a `ProtocolSpec` and builds a
`Cluster` from it; the cluster makes storages, replicas (fresh or restarted
from a storage), signers and the client policy. New protocols (ProBFT,
Bullshark, T-PBFT) register themselves the same way.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from fabric.consensus.api import ClientPolicy, NodeId, Replica, StateMachine
from fabric.consensus.errors import UnknownProtocolError
from fabric.consensus.signing import Signer, Verifier
from fabric.errors import ConfigError

FaultModel = Literal["crash", "byzantine"]


@dataclass(frozen=True, kw_only=True)
class ClusterParams:
    """What every cluster builder takes."""

    n: int
    seed: int
    state_machine: Callable[[], StateMachine]
    client_ids: tuple[str, ...] = ()
    # "hmac" only inside the simulator (see fabric.consensus.signing); "ed25519" otherwise.
    signatures: Literal["ed25519", "hmac"] = "ed25519"
    # Overrides of the protocol's config fields (e.g. {"election_ms": 200}).
    options: dict[str, Any] = field(default_factory=dict)
    # Client keys made elsewhere (signers by client id, and their verifier), so that the
    # clusters of several protocols accept the same clients (ACP switches between them).
    # None: the cluster makes its own from the seed.
    client_keys: tuple[dict[Hashable, Signer], Verifier] | None = None


class Cluster(Protocol):
    """One protocol's replicas, as a shell needs them."""

    replica_ids: tuple[NodeId, ...]
    client_policy: ClientPolicy
    # Replicas that may fail (crash-stop or lie) with safety and liveness kept.
    faults_tolerated: int

    def new_storage(self, rid: NodeId) -> Any:
        """An empty in-memory storage for replica `rid`."""
        ...

    def new_replica(self, rid: NodeId, storage: Any, *, now_ms: int, rng: random.Random) -> Replica:
        """A replica built from what `storage` holds (empty: a fresh one; else a restart)."""
        ...

    def replica_signer(self, rid: NodeId) -> Signer | None:
        """The replica's own signer (a Byzantine wrapper re-signs what it tampers with)."""
        ...

    def client_signer(self, client_id: Hashable) -> Signer | None:
        """The signer a client needs, if the protocol checks client signatures."""
        ...


@dataclass(frozen=True, kw_only=True)
class ProtocolSpec:
    """A registered protocol."""

    name: str
    fault_model: FaultModel
    summary: str
    # The smallest group the protocol runs.
    replicas_min: int
    # Replica ids are first_id .. first_id+n-1 (Raft counts from 1 like etcd; PBFT
    # from 0 so that the primary of view v is v mod n).
    first_id: int
    build: Callable[[ClusterParams], Cluster]
    # Replicas offer change_membership(voters) (one replica added or removed at a time).
    membership: bool = False

    def replica_ids(self, n: int) -> tuple[NodeId, ...]:
        """The ids of a cluster of n replicas."""
        return tuple(range(self.first_id, self.first_id + n))

    def faults_tolerated(self, n: int) -> int:
        """f for n replicas: (n-1)//2 crash faults, or (n-1)//3 Byzantine ones."""
        return (n - 1) // 2 if self.fault_model == "crash" else (n - 1) // 3

    def cluster(self, params: ClusterParams) -> Cluster:
        """Build a cluster; ConfigError if n is too small."""
        if params.n < self.replicas_min:
            raise ConfigError(f"{self.name} needs at least {self.replicas_min} replicas, not {params.n}")
        return self.build(params)


_REGISTRY: dict[str, ProtocolSpec] = {}


def register_protocol(spec: ProtocolSpec) -> None:
    """Make `spec` available by name; registering a name twice is a bug."""
    assert spec.name not in _REGISTRY, f"protocol {spec.name} registered twice"
    _REGISTRY[spec.name] = spec


def get_protocol(name: str) -> ProtocolSpec:
    """The protocol registered as `name`; UnknownProtocolError lists the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(protocol_names())
        raise UnknownProtocolError(f"unknown protocol {name!r}; known: {known}") from None


def protocol_names() -> list[str]:
    """Registered protocol names, sorted."""
    return sorted(_REGISTRY)
