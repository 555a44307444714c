"""The built-in protocols' cluster builders, registered by name: "raft" and "pbft"."""

from __future__ import annotations

import random
from collections.abc import Hashable
from dataclasses import fields
from typing import Any

from fabric.consensus.api import ClientPolicy, NodeId
from fabric.consensus.pbft import MemoryPbftStorage, PbftConfig, PbftReplica
from fabric.consensus.raft import MemoryRaftStorage, RaftConfig, RaftReplica
from fabric.consensus.registry import ClusterParams, ProtocolSpec, register_protocol
from fabric.consensus.signing import Signer, make_signers
from fabric.errors import ConfigError


def _options(cls: type, options: dict[str, Any]) -> dict[str, Any]:
    known = {f.name for f in fields(cls)} - {"id", "voters", "n"}
    unknown = set(options) - known
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} options {sorted(unknown)}; known: {sorted(known)}")
    return dict(options)


class RaftCluster:
    """n Raft replicas with ids 1..n (etcd's convention); crash faults, f = (n-1)//2."""

    def __init__(self, params: ClusterParams) -> None:
        self._params = params
        self.replica_ids: tuple[NodeId, ...] = tuple(range(1, params.n + 1))
        self._options = _options(RaftConfig, params.options)
        for rid in self.replica_ids:  # fail at build time, not at the first restart
            RaftConfig(id=rid, voters=self.replica_ids, **self._options).validate()
        self.client_policy = ClientPolicy(replicas=self.replica_ids, replies_needed=1,
                                          broadcast_on_retry=False, sign_requests=False)
        self.faults_tolerated = (params.n - 1) // 2

    def new_storage(self, rid: NodeId) -> MemoryRaftStorage:
        """An empty in-memory storage."""
        return MemoryRaftStorage()

    def new_replica(self, rid: NodeId, storage: MemoryRaftStorage, *, now_ms: int,
                    rng: random.Random) -> RaftReplica:
        """A replica from `storage` (a restart if it holds anything)."""
        cfg = RaftConfig(id=rid, voters=self.replica_ids, **self._options)
        return RaftReplica(cfg, state_machine=self._params.state_machine(), rng=rng, durable=storage.load(),
                           now_ms=now_ms)

    def replica_signer(self, rid: NodeId) -> Signer | None:
        """Raft does not sign."""
        return None

    def client_signer(self, client_id: Hashable) -> Signer | None:
        """Raft does not sign."""
        return None


class PbftCluster:
    """n PBFT replicas with ids 0..n-1 (the primary of view v is v mod n); f = (n-1)//3."""

    def __init__(self, params: ClusterParams) -> None:
        self._params = params
        self.replica_ids: tuple[NodeId, ...] = tuple(range(params.n))
        self._options = _options(PbftConfig, params.options)
        for rid in self.replica_ids:
            PbftConfig(id=rid, n=params.n, **self._options).validate()
        # Keys come from the run's seed, so a simulated run replays exactly.
        rng = random.Random(f"pbft-keys:{params.seed}")
        self._signers, self._verifier = make_signers(self.replica_ids, params.signatures, rng)
        self._client_signers, self._client_verifier = make_signers(params.client_ids, params.signatures, rng)
        f = (params.n - 1) // 3
        self.client_policy = ClientPolicy(replicas=self.replica_ids, replies_needed=f + 1,
                                          broadcast_on_retry=True, sign_requests=True)
        self.faults_tolerated = f

    def new_storage(self, rid: NodeId) -> MemoryPbftStorage:
        """An empty in-memory storage."""
        return MemoryPbftStorage()

    def new_replica(self, rid: NodeId, storage: MemoryPbftStorage, *, now_ms: int,
                    rng: random.Random) -> PbftReplica:
        """A replica from `storage` (a restart if it holds anything)."""
        durable = storage.load()
        fresh = durable.view == 0 and durable.stable is None and not durable.records
        return PbftReplica(PbftConfig(id=rid, n=self._params.n, **self._options),
                           state_machine=self._params.state_machine(), rng=rng, signer=self._signers[rid],
                           verifier=self._verifier, client_verifier=self._client_verifier,
                           durable=None if fresh else durable, now_ms=now_ms)

    def replica_signer(self, rid: NodeId) -> Signer | None:
        """The replica's own key."""
        return self._signers[rid]

    def client_signer(self, client_id: Hashable) -> Signer | None:
        """The client's key (clients sign their requests)."""
        return self._client_signers[client_id]


register_protocol(ProtocolSpec(name="raft", fault_model="crash", replicas_min=1, first_id=1,
                               build=RaftCluster, membership=True,
                               summary="Raft with pre-vote, check-quorum, read-index, snapshots, "
                                       "one-at-a-time membership change (datacenter mode)"))
register_protocol(ProtocolSpec(name="pbft", fault_model="byzantine", replicas_min=4, first_id=0,
                               build=PbftCluster,
                               summary="PBFT with batching, checkpoints, view change, state transfer, "
                                       "Ed25519-signed messages (internet mode)"))
