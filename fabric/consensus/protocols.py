"""The built-in protocols' cluster builders, registered by name.

"raft" (datacenter mode), "pbft", "probft", "bullshark" and "tpbft" (internet
mode). The Byzantine ones sign with Ed25519 (or, inside the simulator, HMAC:
ClusterParams.signatures); ProBFT's VRF is RSA-FDH-VRF with real signatures and
its HMAC stand-in with simulated ones (fabric.consensus.sortition).
"""

from __future__ import annotations

import random
from collections.abc import Hashable
from dataclasses import fields
from typing import Any

from fabric.consensus.api import ClientPolicy, NodeId
from fabric.consensus.bullshark import BullsharkConfig, BullsharkReplica, MemoryBullsharkStorage
from fabric.consensus.pbft import MemoryPbftStorage, PbftConfig, PbftReplica
from fabric.consensus.probft import ProbftConfig, ProbftReplica
from fabric.consensus.raft import MemoryRaftStorage, RaftConfig, RaftReplica
from fabric.consensus.registry import ClusterParams, ProtocolSpec, register_protocol
from fabric.consensus.signing import Signer, Verifier, make_signers
from fabric.consensus.sortition import make_vrfs
from fabric.consensus.tpbft import MemoryTpbftStorage, TpbftConfig, TpbftReplica, evidence_client
from fabric.errors import ConfigError


def _client_keys(params: ClusterParams, rng: random.Random) -> tuple[dict[Hashable, Signer], Verifier]:
    """The clients' signers and verifier: the ones given in `params`, or new ones from the seed."""
    if params.client_keys is not None:
        return params.client_keys
    return make_signers(params.client_ids, params.signatures, rng)


class EitherVerifier:
    """Accepts what either of two verifiers accepts (their identities do not overlap)."""

    def __init__(self, first: Verifier, second: Verifier) -> None:
        self._first, self._second = first, second

    def verify(self, identity: Hashable, payload: bytes, signature: bytes) -> bool:
        """True iff one of the two accepts it."""
        return self._first.verify(identity, payload, signature) or \
            self._second.verify(identity, payload, signature)


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
        self._client_signers, self._client_verifier = _client_keys(params, rng)
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


class ProbftCluster(PbftCluster):
    """n ProBFT replicas with ids 0..n-1; clients wait for 2f+1 matching replies (the fencing quorum)."""

    def __init__(self, params: ClusterParams) -> None:
        options = dict(params.options)
        # Bits of the simulated RSA VRF keys (fabric.consensus.sortition.pooled_rsa_key).
        self._vrf_bits = int(options.pop("vrf_bits", 2048))
        self._params = params
        self.replica_ids = tuple(range(params.n))
        self._options = _options(ProbftConfig, options)
        for rid in self.replica_ids:
            ProbftConfig(id=rid, n=params.n, **self._options).validate()
        rng = random.Random(f"probft-keys:{params.seed}")
        self._signers, self._verifier = make_signers(self.replica_ids, params.signatures, rng)
        self._client_signers, self._client_verifier = _client_keys(params, rng)
        scheme = "rsa" if params.signatures == "ed25519" else "hmac"
        self._vrfs, self._vrf_verifier = make_vrfs(self.replica_ids, scheme, rng, rsa_bits=self._vrf_bits)
        f = (params.n - 1) // 3
        # 2f+1 matching answers: two conflicting ones would need an honest replica that gave
        # both, which ProBFT's halt-on-contradiction rules out (see fabric.consensus.probft.core).
        self.client_policy = ClientPolicy(replicas=self.replica_ids, replies_needed=2 * f + 1,
                                          broadcast_on_retry=True, sign_requests=True)
        self.faults_tolerated = f

    def new_replica(self, rid: NodeId, storage: MemoryPbftStorage, *, now_ms: int,
                    rng: random.Random) -> ProbftReplica:
        """A replica from `storage` (a restart if it holds anything)."""
        durable = storage.load()
        fresh = durable.view == 0 and durable.stable is None and not durable.records
        return ProbftReplica(ProbftConfig(id=rid, n=self._params.n, **self._options),
                             state_machine=self._params.state_machine(), rng=rng, signer=self._signers[rid],
                             verifier=self._verifier, client_verifier=self._client_verifier,
                             vrf=self._vrfs[rid], vrf_verifier=self._vrf_verifier,
                             durable=None if fresh else durable, now_ms=now_ms)

    def replica_vrf(self, rid: NodeId) -> object:
        """The replica's own VRF prover (a Byzantine wrapper proves as itself only)."""
        return self._vrfs[rid]


class BullsharkCluster:
    """n Bullshark validators with ids 0..n-1; f = (n-1)//3; clients wait for f+1 matching replies."""

    def __init__(self, params: ClusterParams) -> None:
        self._params = params
        self.replica_ids: tuple[NodeId, ...] = tuple(range(params.n))
        self._options = _options(BullsharkConfig, params.options)
        for rid in self.replica_ids:
            BullsharkConfig(id=rid, n=params.n, **self._options).validate()
        rng = random.Random(f"bullshark-keys:{params.seed}")
        self._signers, self._verifier = make_signers(self.replica_ids, params.signatures, rng)
        self._client_signers, self._client_verifier = _client_keys(params, rng)
        f = (params.n - 1) // 3
        self.client_policy = ClientPolicy(replicas=self.replica_ids, replies_needed=f + 1,
                                          broadcast_on_retry=True, sign_requests=True)
        self.faults_tolerated = f

    def new_storage(self, rid: NodeId) -> MemoryBullsharkStorage:
        """An empty in-memory storage."""
        return MemoryBullsharkStorage()

    def new_replica(self, rid: NodeId, storage: MemoryBullsharkStorage, *, now_ms: int,
                    rng: random.Random) -> BullsharkReplica:
        """A validator from `storage` (a restart if it holds anything)."""
        durable = storage.load()
        fresh = not durable.headers and not durable.votes and not durable.certs and durable.stable is None
        return BullsharkReplica(BullsharkConfig(id=rid, n=self._params.n, **self._options),
                                state_machine=self._params.state_machine(), rng=rng,
                                signer=self._signers[rid], verifier=self._verifier,
                                client_verifier=self._client_verifier, durable=None if fresh else durable,
                                now_ms=now_ms)

    def replica_signer(self, rid: NodeId) -> Signer | None:
        """The validator's own key."""
        return self._signers[rid]

    def client_signer(self, client_id: Hashable) -> Signer | None:
        """The client's key."""
        return self._client_signers[client_id]


class TpbftCluster:
    """n T-PBFT replicas with ids 0..n-1; f = (m-1)//3 for a consensus group of m (all n by default)."""

    def __init__(self, params: ClusterParams) -> None:
        self._params = params
        self.replica_ids: tuple[NodeId, ...] = tuple(range(params.n))
        self._options = _options(TpbftConfig, params.options)
        for rid in self.replica_ids:
            TpbftConfig(id=rid, n=params.n, **self._options).validate()
        rng = random.Random(f"tpbft-keys:{params.seed}")
        self._signers, self._verifier = make_signers(self.replica_ids, params.signatures, rng)
        # Clients sign requests; replicas sign their evidence as clients "replica-<id>".
        evidence_ids = tuple(evidence_client(r) for r in self.replica_ids)
        evidence_signers, evidence_verifier = make_signers(evidence_ids, params.signatures, rng)
        clients, client_verifier = _client_keys(params, rng)
        self._client_signers = {**clients, **evidence_signers}
        self._client_verifier = EitherVerifier(client_verifier, evidence_verifier)
        m = TpbftConfig(id=0, n=params.n, **self._options).group
        f = (m - 1) // 3
        self.client_policy = ClientPolicy(replicas=self.replica_ids, replies_needed=f + 1,
                                          broadcast_on_retry=True, sign_requests=True)
        self.faults_tolerated = f

    def new_storage(self, rid: NodeId) -> MemoryTpbftStorage:
        """An empty in-memory storage."""
        return MemoryTpbftStorage()

    def new_replica(self, rid: NodeId, storage: MemoryTpbftStorage, *, now_ms: int,
                    rng: random.Random) -> TpbftReplica:
        """A replica from `storage` (a restart if it holds anything)."""
        return TpbftReplica(TpbftConfig(id=rid, n=self._params.n, **self._options),
                            state_machine=self._params.state_machine(), rng=rng, signer=self._signers[rid],
                            verifier=self._verifier, client_verifier=self._client_verifier,
                            evidence_signer=self._client_signers[evidence_client(rid)],
                            durable=storage.load(), now_ms=now_ms)

    def replica_signer(self, rid: NodeId) -> Signer | None:
        """The replica's own key (a Byzantine wrapper re-signs with it, bound to no epoch: such
        tampering fails verification, as a forgery should)."""
        return self._signers[rid]

    def client_signer(self, client_id: Hashable) -> Signer | None:
        """The client's key."""
        return self._client_signers[client_id]


register_protocol(ProtocolSpec(name="raft", fault_model="crash", replicas_min=1, first_id=1,
                               build=RaftCluster, membership=True,
                               summary="Raft with pre-vote, check-quorum, read-index, snapshots, "
                                       "one-at-a-time membership change (datacenter mode)"))
register_protocol(ProtocolSpec(name="pbft", fault_model="byzantine", replicas_min=4, first_id=0,
                               build=PbftCluster,
                               summary="PBFT with batching, checkpoints, view change, state transfer, "
                                       "Ed25519-signed messages (internet mode)"))
register_protocol(ProtocolSpec(name="probft", fault_model="byzantine", replicas_min=4, first_id=0,
                               build=ProbftCluster,
                               summary="ProBFT: PBFT with votes to VRF-chosen samples of o*sqrt(n) and "
                                       "probabilistic quorums of l*sqrt(n) (internet mode, large n)"))
register_protocol(ProtocolSpec(name="tpbft", fault_model="byzantine", replicas_min=4, first_id=0,
                               build=TpbftCluster,
                               summary="T-PBFT: PBFT by a consensus group of the replicas of highest "
                                       "EigenTrust global trust, recomputed per epoch from the log "
                                       "(internet mode)"))
register_protocol(ProtocolSpec(name="bullshark", fault_model="byzantine", replicas_min=4, first_id=0,
                               build=BullsharkCluster,
                               summary="Bullshark (partially synchronous) over a Narwhal-style DAG: "
                                       "certified vertices, round-robin anchors, f+1-vote commit rule, GC"))
