"""One node's replica of any ledger protocol, from real keys: what a running fabric hosts.

The simulator builds whole clusters from a seed (fabric.consensus.protocols). A
node of a running fabric holds one Ed25519 private key and the others' public
keys (the controller collects and hands them out): `NodeKeys`. From it,
`node_replica` builds this node's replica of PBFT, ProBFT, Bullshark, T-PBFT or
Raft, and `NodeAcpCluster` gives ACP what its replica asks a cluster for (the
era replicas, the switch requests), so ACP runs on Ray with the same keys.

Identities: replica r signs as r; its T-PBFT evidence as client "replica-<r>" and
its ACP switch requests as client "acp-<r>", all with its one consensus key, so
the client verifier holds each replica's key under those names too.

ProBFT's VRF: each node draws an RSA-FDH-VRF key (2048 bits, RFC 9381) when its
replica starts. `VrfKeyExchange` wraps the replica and swaps the public keys in
band: each announcement is signed with the node's Ed25519 consensus key, so a
VRF key is trusted exactly as far as the node's signature is. The first key a
node announces is the one its peers keep: a key that could be replaced could be
re-drawn until the samples suit its holder. (A restarted node is in the same
position for its Ed25519 key: peers keep the first one they were given.)
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from fabric.consensus.acp import AcpConfig, AcpReplica, MemoryAcpStorage, SwitchEra, switch_client
from fabric.consensus.api import (
    EMPTY_READY,
    ClientPolicy,
    NodeId,
    Ready,
    Replica,
    ReplicaStatus,
    Request,
    StateMachine,
    is_node_id,
    require,
)
from fabric.consensus.bullshark import BullsharkConfig, BullsharkReplica, MemoryBullsharkStorage
from fabric.consensus.canonical import encode
from fabric.consensus.errors import MalformedMessageError
from fabric.consensus.pbft import MemoryPbftStorage, PbftConfig, PbftReplica
from fabric.consensus.probft import ProbftConfig, ProbftReplica
from fabric.consensus.raft import MemoryRaftStorage, RaftConfig, RaftReplica
from fabric.consensus.registry import get_protocol
from fabric.consensus.signing import Ed25519KeyRing, Ed25519Signer
from fabric.consensus.sortition import RsaVrfProver
from fabric.consensus.tpbft import MemoryTpbftStorage, TpbftConfig, TpbftReplica, evidence_client
from fabric.errors import ConfigError
from fabric.secure.vrf import VrfKeyRing, VrfPrivateKey, VrfProofError, VrfPublicKey

NODE_PROTOCOLS = ("raft", "pbft", "probft", "bullshark", "tpbft")
VRF_KEY_BYTES_MAX = 8 + 4 + 1024  # k, e and an RSA-8192 modulus (VrfPublicKey.to_bytes)
ANNOUNCE_MS = 5_000  # re-announce our VRF key this often while a peer's key is still unknown


@dataclass(frozen=True, kw_only=True)
class NodeKeys:
    """What one node holds: its consensus key, every replica's and client's public key, its VRF."""

    rid: NodeId  # this node's replica id (ids from 0, as PBFT's and ACP's)
    replica_ids: tuple[NodeId, ...]
    signer: Ed25519Signer  # signs as rid
    replica_keys: dict[NodeId, bytes]
    client_keys: dict[str, bytes]
    vrf: RsaVrfProver | None = None
    vrf_ring: VrfKeyRing | None = None

    def __post_init__(self) -> None:
        assert self.signer.identity == self.rid, "a node signs as its replica id"
        assert self.rid in self.replica_ids and set(self.replica_keys) == set(self.replica_ids)

    @classmethod
    def with_vrf(cls, **fields: Any) -> NodeKeys:
        """Keys plus a fresh RSA-FDH-VRF key (the ring knows ours; peers' come by VrfKeyExchange)."""
        rid = fields["rid"]
        prover = RsaVrfProver(rid, VrfPrivateKey.generate())
        return cls(**fields, vrf=prover, vrf_ring=VrfKeyRing({rid: prover.public_key}))

    def replica_verifier(self) -> Ed25519KeyRing:
        """Replicas' signatures."""
        return Ed25519KeyRing(dict(self.replica_keys))

    def client_verifier(self) -> Ed25519KeyRing:
        """Clients' signatures, and replicas' own requests (T-PBFT evidence, ACP switches)."""
        keys: dict[Hashable, bytes] = dict(self.client_keys)
        for r, pub in self.replica_keys.items():
            keys[evidence_client(r)] = pub
            keys[switch_client(r)] = pub
        return Ed25519KeyRing(keys)


def faults_tolerated(protocol: str, n: int, options: dict[str, Any]) -> int:
    """f of `protocol` with n replicas (T-PBFT: of its consensus group)."""
    if protocol == "raft":
        return (n - 1) // 2
    m = (int(options.get("group_size", 0)) or n) if protocol == "tpbft" else n
    return (m - 1) // 3


def client_policy(protocol: str, replica_ids: tuple[NodeId, ...], options: dict[str, Any]) -> ClientPolicy:
    """How clients talk to `protocol`'s replicas: what each protocol's cluster builder says."""
    if protocol == "raft":
        return ClientPolicy(replicas=replica_ids, replies_needed=1, broadcast_on_retry=False,
                            sign_requests=False)
    n = len(replica_ids)
    f = faults_tolerated(protocol, n, options)
    if protocol == "acp":
        acp = AcpConfig(id=0, n=n, **options).validate()
        # ProBFT's fencing quorum if it may run, else f+1 (every era answers alike: fabric.consensus.acp).
        need = 2 * ((n - 1) // 3) + 1 if "probft" in acp.protocols else (n - 1) // 3 + 1
        return ClientPolicy(replicas=replica_ids, replies_needed=need, broadcast_on_retry=True,
                            sign_requests=True)
    need = 2 * f + 1 if protocol == "probft" else f + 1
    return ClientPolicy(replicas=replica_ids, replies_needed=need, broadcast_on_retry=True,
                        sign_requests=True)


def new_storage(protocol: str) -> Any:
    """An empty in-memory storage of `protocol`."""
    if protocol == "raft":
        return MemoryRaftStorage()
    if protocol in ("pbft", "probft"):
        return MemoryPbftStorage()
    if protocol == "bullshark":
        return MemoryBullsharkStorage()
    if protocol == "tpbft":
        return MemoryTpbftStorage()
    raise ConfigError(f"no node storage for protocol {protocol!r}; use one of {', '.join(NODE_PROTOCOLS)}")


def node_replica(protocol: str, keys: NodeKeys, *, me: NodeId, ids: tuple[NodeId, ...],
                 state_machine: StateMachine, storage: Any, options: dict[str, Any], now_ms: int,
                 rng: random.Random) -> Replica:
    """This node's replica of `protocol` (id `me` among `ids`, the protocol's own numbering), on `storage`."""
    n = len(ids)
    if protocol == "raft":
        cfg = RaftConfig(id=me, voters=ids, **options)
        return RaftReplica(cfg, state_machine=state_machine, rng=rng, durable=storage.load(), now_ms=now_ms)
    assert me == keys.rid and ids == keys.replica_ids, "BFT replicas are numbered as the nodes' keys"
    common: dict[str, Any] = {"state_machine": state_machine, "rng": rng, "signer": keys.signer,
                              "verifier": keys.replica_verifier(), "client_verifier": keys.client_verifier(),
                              "now_ms": now_ms}
    if protocol in ("pbft", "probft"):
        durable = storage.load()
        fresh = durable.view == 0 and durable.stable is None and not durable.records
        if protocol == "pbft":
            return PbftReplica(PbftConfig(id=me, n=n, **options), durable=None if fresh else durable,
                               **common)
        if keys.vrf is None or keys.vrf_ring is None:
            raise ConfigError("probft needs the node's VRF key (NodeKeys.with_vrf)")
        return ProbftReplica(ProbftConfig(id=me, n=n, **options), vrf=keys.vrf, vrf_verifier=keys.vrf_ring,
                             durable=None if fresh else durable, **common)
    if protocol == "bullshark":
        durable = storage.load()
        fresh = not durable.headers and not durable.votes and not durable.certs and durable.stable is None
        return BullsharkReplica(BullsharkConfig(id=me, n=n, **options), durable=None if fresh else durable,
                                **common)
    if protocol == "tpbft":
        return TpbftReplica(TpbftConfig(id=me, n=n, **options), durable=storage.load(),
                            evidence_signer=keys.signer.as_identity(evidence_client(me)), **common)
    raise ConfigError(f"no node replica for protocol {protocol!r}; use one of {', '.join(NODE_PROTOCOLS)}")


class _EraCluster:
    """What ACP asks of one era protocol's cluster: storages and f."""

    def __init__(self, protocol: str, faults: int) -> None:
        self.protocol = protocol
        self.faults_tolerated = faults

    def new_storage(self, inner_id: NodeId) -> Any:
        """An empty storage of the era's protocol."""
        return new_storage(self.protocol)


class NodeAcpCluster:
    """The cluster side of one node's AcpReplica (fabric.consensus.acp.AcpCluster's interface), real keys."""

    def __init__(self, keys: NodeKeys, config: AcpConfig, state_machine: Callable[[], StateMachine]) -> None:
        self._keys = keys
        self._config = config.validate()
        self._state_machine = state_machine
        n = len(keys.replica_ids)
        self._eras = {p: _EraCluster(p, faults_tolerated(p, n, config.protocol_options.get(p, {})))
                      for p in config.protocols}
        if "probft" in config.protocols and keys.vrf is None:
            raise ConfigError("acp with probft needs the node's VRF key (NodeKeys.with_vrf)")

    def new_app(self) -> StateMachine:
        """A fresh ledger."""
        return self._state_machine()

    def era_cluster(self, protocol: str) -> _EraCluster:
        """The era protocol's storages and f."""
        return self._eras[protocol]

    def faults_tolerated_by_any(self) -> int:
        """The largest f of the protocols ACP may run."""
        return max(c.faults_tolerated for c in self._eras.values())

    def build_inner(self, protocol: str, inner_id: NodeId, storage: Any, sm: StateMachine, *, now_ms: int,
                    rng: random.Random) -> Replica:
        """This node's replica of the era's protocol, on `sm` (which holds the era's start)."""
        ids = get_protocol(protocol).replica_ids(len(self._keys.replica_ids))
        return node_replica(protocol, self._keys, me=inner_id, ids=ids, state_machine=sm, storage=storage,
                            options=self._config.protocol_options.get(protocol, {}), now_ms=now_ms, rng=rng)

    def switch_request(self, rid: NodeId, op: SwitchEra) -> Request:
        """This node's signed switch request."""
        assert rid == self._keys.rid, "a node proposes switches as itself"
        client = switch_client(rid)
        req = Request(client_id=client, request_id=1 + op.era, op=op)
        signer = self._keys.signer.as_identity(client)
        return dataclasses.replace(req, signature=signer.sign(req.signed_bytes))

    def new_storage(self, rid: NodeId) -> MemoryAcpStorage:
        """An empty ACP storage (in memory, like PBFT's on Ray)."""
        return MemoryAcpStorage(new_storage)

    def new_replica(self, storage: MemoryAcpStorage, *, now_ms: int, rng: random.Random) -> AcpReplica:
        """This node's ACP replica."""
        cfg = dataclasses.replace(self._config, id=self._keys.rid)
        return AcpReplica(cfg, cluster=self, storage=storage, signer=self._keys.signer,  # type: ignore[arg-type]
                          verifier=self._keys.replica_verifier(), rng=rng, now_ms=now_ms)


# -- the VRF key exchange -------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class VrfKeyAnnounce:
    """Replica `src`'s VRF public key, signed with its consensus key."""

    src: int
    key: bytes
    signature: bytes = b""

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise MalformedMessageError if a field is out of range (a peer's message is unpickled
        without __init__, so receivers call this)."""
        require(is_node_id(self.src), "src must be a node id")
        require(type(self.key) is bytes and 0 < len(self.key) <= VRF_KEY_BYTES_MAX, "key: bytes")
        require(type(self.signature) is bytes and len(self.signature) <= 128, "signature: bytes")

    def payload(self) -> bytes:
        """What the signature covers."""
        return encode(("vrf-key-announce", self.src, self.key))

    def brief(self) -> str:
        """Short text form."""
        return f"VrfKeyAnnounce from {self.src}"


class VrfKeyExchange:
    """A replica wrapped so that its node swaps VRF public keys with its peers (see the module doc)."""

    def __init__(self, inner: Replica, keys: NodeKeys, *, now_ms: int,
                 announce_ms: int = ANNOUNCE_MS) -> None:
        if keys.vrf is None or keys.vrf_ring is None:
            raise ConfigError("VrfKeyExchange needs NodeKeys.with_vrf")
        if not 1 <= announce_ms <= 3_600_000:
            raise ConfigError(f"announce_ms={announce_ms}: use 1..3600000")
        self.inner = inner
        self._keys = keys
        self._ring = keys.vrf_ring
        self._verifier = keys.replica_verifier()
        self._announce_ms = announce_ms
        own = VrfKeyAnnounce(src=keys.rid, key=keys.vrf.public_key.to_bytes())
        self._own = dataclasses.replace(own, signature=keys.signer.sign(own.payload()))
        self._peers = tuple(r for r in keys.replica_ids if r != keys.rid)
        self._sent_ms: dict[NodeId, int] = {}
        self._next_ms: int | None = now_ms  # announce at the first tick
        self._last_now = now_ms  # the shell ticks before it hands over a message
        self.counters: dict[str, int] = {}

    @property
    def id(self) -> NodeId:
        """The inner replica's id."""
        return self.inner.id

    @property
    def app(self) -> StateMachine | None:
        """The inner replica's current application state, if it swaps it (ACP), else None."""
        return getattr(self.inner, "app", None)

    def missing(self) -> tuple[NodeId, ...]:
        """Peers whose VRF key this node does not know yet."""
        assert self._ring is not None
        return tuple(r for r in self._peers if not self._ring.knows(r))

    def _send(self, to: NodeId, now_ms: int) -> tuple[NodeId, Any]:
        self._sent_ms[to] = now_ms
        return (to, self._own)

    def _with(self, ready: Ready, extra: list[tuple[NodeId, Any]]) -> Ready:
        if not extra:
            return ready
        if ready is EMPTY_READY:
            return Ready(messages=tuple(extra))
        return dataclasses.replace(ready, messages=(*ready.messages, *extra))

    def step(self, msg: Any) -> Ready:
        """A peer's message: an announcement is ours to handle, anything else the replica's."""
        if type(msg) is not VrfKeyAnnounce:
            return self.inner.step(msg)
        extra: list[tuple[NodeId, Any]] = []
        try:
            msg.check()
        except MalformedMessageError:
            self._count("dropped_malformed")
            return EMPTY_READY
        if msg.src in self._peers and self._verifier.verify(msg.src, msg.payload(), msg.signature):
            try:
                key = VrfPublicKey.from_bytes(msg.key)
            except VrfProofError:
                self._count("dropped_bad_vrf_key")
                return EMPTY_READY
            assert self._ring is not None
            if not self._ring.knows(msg.src):
                self._ring.add(msg.src, key)
                self._count("vrf_keys_learned")
            # Answer with ours (at most once per period): it may have missed our announcements.
            last = self._sent_ms.get(msg.src)
            if last is None or self._last_now - last >= self._announce_ms:
                extra.append(self._send(msg.src, self._last_now))
        else:
            self._count("dropped_bad_vrf_announce")
        return self._with(EMPTY_READY, extra)

    def tick(self, now_ms: int) -> Ready:
        """Time passes: announce while a peer's key is unknown; the replica's timers."""
        self._last_now = now_ms
        extra: list[tuple[NodeId, Any]] = []
        if self._next_ms is not None and now_ms >= self._next_ms:
            missing = self.missing()
            extra = [self._send(r, now_ms) for r in missing]
            self._next_ms = now_ms + self._announce_ms if missing else None
        return self._with(self.inner.tick(now_ms), extra)

    def propose(self, request: Request) -> Ready:
        """The replica's."""
        return self.inner.propose(request)

    def read(self, request: Request) -> Ready:
        """The replica's."""
        return self.inner.read(request)

    def change_mode(self, mode: Any) -> Ready:
        """ACP's mode change, passed on (ConfigError if the replica has no modes)."""
        change = getattr(self.inner, "change_mode", None)
        if change is None:
            raise ConfigError("this ledger protocol has no modes (use acp)")
        return change(mode)

    def deadline_ms(self) -> int | None:
        """The replica's deadline, or our next announcement."""
        times = [t for t in (self.inner.deadline_ms(), self._next_ms) if t is not None]
        return min(times) if times else None

    def status(self) -> ReplicaStatus:
        """The replica's status, with the exchange's counters."""
        st = self.inner.status()
        counters = {**st.counters}
        for k, v in self.counters.items():
            counters[k] = counters.get(k, 0) + v
        return dataclasses.replace(st, counters=counters)

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1
