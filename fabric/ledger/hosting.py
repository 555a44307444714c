"""How a node hosts the ledger: which protocol, which replicas, and building one replica with real keys.

The simulator builds whole clusters from a seed (fabric.consensus.registry).
A running fabric instead gives each node its own signing key, publishes the
public keys, and builds only its own replica: `build_replica` does that, with
durable storage where the protocol has it (Raft; the others keep their state
in memory and a restarted replica catches up by state transfer).

Every protocol of fabric.consensus runs on Ray: "raft" (the default), "pbft",
"probft", "bullshark", "tpbft", and "acp", which follows the mode of the links
between its replicas' data centers (fabric.consensus.acp; the controller probes
the links, fabric.ledger.link_modes, and tells the replicas through
`NodeActor.consensus_change_mode`) and switches protocol safely, e.g.
`fabric.connect(ledger={"protocol": "acp", "options": {"internet": "probft"}})`.
ProBFT (alone or as an ACP era) gets an RSA-FDH-VRF key per node, swapped in band
(fabric.ledger.node_cluster.VrfKeyExchange).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from fabric.consensus.acp import AcpConfig
from fabric.consensus.api import ClientPolicy, NodeId, Replica
from fabric.consensus.raft import FileRaftStorage, RaftConfig, RaftReplica
from fabric.consensus.registry import get_protocol
from fabric.consensus.signing import Ed25519Signer
from fabric.errors import ConfigError
from fabric.ledger import node_cluster
from fabric.ledger.node_cluster import NodeAcpCluster, NodeKeys, VrfKeyExchange
from fabric.ledger.replicated import LedgerStateMachine, op_from_dict, op_to_dict

LedgerProtocol = Literal["single-writer", "raft", "pbft", "probft", "bullshark", "tpbft", "acp"]
LEDGER_PROTOCOLS = ("single-writer", "raft", "pbft", "probft", "bullshark", "tpbft", "acp")
BFT_LEDGERS = ("pbft", "probft", "bullshark", "tpbft", "acp")  # at least 4 replicas (ACP: its BFT eras)
# A consensus group on Ray: 7 replicas tolerate 3 crashes (Raft) or 2 liars (PBFT);
# PBFT's messages grow as n^2, and every replica is an actor on this machine.
REPLICAS_MAX = 7
CLIENTS_PER_ACTOR_MAX = 16
# Timers on Ray: a Ray call costs ~1 ms of CPU here, so heartbeats every 100 ms
# (not the simulator's 30) keep six idle replicas under a few % of a core;
# elections after 1-2 s (10 heartbeats, etcd's ratio).
RAY_RAFT_OPTIONS = {"election_ms": 1000, "heartbeat_ms": 100}
RAY_PBFT_OPTIONS = {"request_timeout_ms": 2000, "view_change_timeout_ms": 2000, "resend_ms": 500}
RAY_BULLSHARK_OPTIONS = {"leader_timeout_ms": 2000, "resend_ms": 500}
RAY_OPTIONS: dict[str, dict[str, Any]] = {
    "raft": RAY_RAFT_OPTIONS, "pbft": RAY_PBFT_OPTIONS, "probft": RAY_PBFT_OPTIONS, "tpbft": RAY_PBFT_OPTIONS,
    "bullshark": RAY_BULLSHARK_OPTIONS}
RAY_ACP_OPTIONS = {"resend_ms": 500}
LINK_PROBE_S_MIN, LINK_PROBE_S_MAX = 0.2, 3600.0

@dataclass(frozen=True, kw_only=True)
class LedgerConfig:
    """The ledger of a fabric; `validate()` says how to fix a bad value."""

    protocol: LedgerProtocol = "raft"
    # Nodes hosting a replica, in replica-id order; None: the first REPLICAS_MAX nodes.
    replicas: tuple[str, ...] | None = None
    # Ledger clients per actor: ledger operations one actor may have outstanding at once.
    clients_per_actor: int = 4
    # How often replicas and clients tick (timer resolution).
    tick_ms: int = 10
    # Protocol options (RaftConfig / PbftConfig fields), over the Ray defaults above.
    options: dict[str, Any] = field(default_factory=dict)
    # ACP only. "links": the controller probes the links between the replicas' data
    # centers every `link_probe_s` and the ledger follows their mode
    # (fabric.ledger.link_modes); "manual": only `NodeActor.consensus_change_mode` switches.
    mode_source: Literal["links", "manual"] = "links"
    # A probe is a 4 MiB packet train per link: every 5 s it costs a few ms of each
    # link's time, and a mode change takes three probes in a row (the detector's dwell).
    link_probe_s: float = 5.0

    def validate(self) -> LedgerConfig:
        """Return self, or raise ConfigError."""
        if self.protocol not in LEDGER_PROTOCOLS:
            raise ConfigError(f"ledger protocol {self.protocol!r}: use one of {', '.join(LEDGER_PROTOCOLS)}")
        if self.replicas is not None:
            if len(set(self.replicas)) != len(self.replicas) or not 1 <= len(self.replicas) <= REPLICAS_MAX:
                raise ConfigError(f"ledger replicas {self.replicas}: use 1..{REPLICAS_MAX} distinct nodes")
            if self.protocol in BFT_LEDGERS and len(self.replicas) < 4:
                raise ConfigError(f"{self.protocol} needs at least 4 replicas")
        if self.protocol == "acp":
            AcpConfig(id=0, n=4, **self.protocol_options()).validate()  # unknown or bad options fail here
        if not 1 <= self.clients_per_actor <= CLIENTS_PER_ACTOR_MAX:
            raise ConfigError(f"clients_per_actor={self.clients_per_actor}: use 1..{CLIENTS_PER_ACTOR_MAX}")
        if not 1 <= self.tick_ms <= 1000:
            raise ConfigError(f"tick_ms={self.tick_ms}: use 1..1000")
        if self.mode_source not in ("links", "manual"):
            raise ConfigError(f"mode_source={self.mode_source!r}: use links (follow the measured links) "
                              "or manual")
        if not LINK_PROBE_S_MIN <= self.link_probe_s <= LINK_PROBE_S_MAX:
            raise ConfigError(f"link_probe_s={self.link_probe_s}: use {LINK_PROBE_S_MIN}..{LINK_PROBE_S_MAX}")
        return self

    @property
    def follows_links(self) -> bool:
        """Does the fabric switch this ledger's protocol as the measured link mode changes?"""
        return self.protocol == "acp" and self.mode_source == "links"

    def replica_nodes(self, nodes: list[str]) -> tuple[str, ...]:
        """The nodes that host replicas, given the fabric's nodes in order."""
        chosen = self.replicas if self.replicas is not None else tuple(nodes[:REPLICAS_MAX])
        missing = set(chosen) - set(nodes)
        if missing:
            raise ConfigError(f"ledger replicas on unknown nodes {sorted(missing)}")
        if self.protocol in BFT_LEDGERS and len(chosen) < 4:
            raise ConfigError(f"{self.protocol} needs at least 4 replicas; "
                              f"the fabric has {len(chosen)} nodes")
        return chosen

    def replica_ids(self, count: int) -> tuple[NodeId, ...]:
        """The protocol's ids for `count` replicas."""
        return get_protocol(self.protocol).replica_ids(count)

    def protocol_options(self) -> dict[str, Any]:
        """Ray defaults, overridden by `options` (ACP: its own, and each era protocol's)."""
        if self.protocol != "acp":
            return {**RAY_OPTIONS.get(self.protocol, {}), **self.options}
        given = dict(self.options)
        overrides = given.get("protocol_options", {})
        per_protocol = {p: {**o, **overrides.get(p, {})} for p, o in RAY_OPTIONS.items()}
        return {**RAY_ACP_OPTIONS, **given, "protocol_options": per_protocol}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        d = asdict(self)
        d["replicas"] = list(self.replicas) if self.replicas is not None else None
        return d

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> LedgerConfig:
        """Parse and validate."""
        raw = dict(raw or {})
        if raw.get("replicas") is not None:
            raw["replicas"] = tuple(raw["replicas"])
        try:
            return cls(**raw).validate()
        except TypeError as e:
            raise ConfigError(f"bad ledger config: {e}") from e


def client_policy(config: LedgerConfig, replica_ids: tuple[NodeId, ...]) -> ClientPolicy:
    """How clients talk to this ledger's replicas (what the protocol's cluster builder says)."""
    return node_cluster.client_policy(config.protocol, replica_ids, config.protocol_options())


def uses_vrf(config: LedgerConfig) -> bool:
    """Does this ledger run ProBFT (alone or as an ACP era), so each node needs a VRF key?"""
    if config.protocol == "probft":
        return True
    if config.protocol != "acp":
        return False
    return "probft" in AcpConfig(id=0, n=4, **config.protocol_options()).protocols


def build_replica(config: LedgerConfig, *, rid: NodeId, replica_ids: tuple[NodeId, ...],
                  state_machine: LedgerStateMachine, signer: Ed25519Signer,
                  replica_keys: dict[NodeId, bytes], client_keys: dict[str, bytes],
                  storage_dir: Path, now_ms: int, seed: int) -> tuple[Replica, Any]:
    """This node's replica and its storage (a restart if the storage holds state)."""
    rng = random.Random(f"{seed}:{rid}")  # timer jitter only; keys are real
    opts = config.protocol_options()
    if config.protocol == "raft":
        storage = FileRaftStorage(storage_dir / f"raft-{rid}", op_to_dict=op_to_dict,
                                  op_from_dict=op_from_dict)
        cfg = RaftConfig(id=rid, voters=replica_ids, **opts)
        return RaftReplica(cfg, state_machine=state_machine, rng=rng, durable=storage.load(),
                           now_ms=now_ms), storage
    if config.protocol not in BFT_LEDGERS:
        raise ConfigError(f"no replicas for ledger protocol {config.protocol!r}")
    fields: dict[str, Any] = {"rid": rid, "replica_ids": replica_ids, "signer": signer,
                              "replica_keys": dict(replica_keys), "client_keys": dict(client_keys)}
    keys = NodeKeys.with_vrf(**fields) if uses_vrf(config) else NodeKeys(**fields)
    # In memory (no file-backed BFT storage yet): a restarted replica rejoins empty and catches
    # up by state transfer at a checkpoint (ACP: from the era start its peers vouch for).
    replica: Replica
    if config.protocol == "acp":
        # Each era restores its start into a fresh ledger (ReplicaHost reads the current one
        # from the replica's `app`).
        cluster = NodeAcpCluster(keys, AcpConfig(id=rid, n=len(replica_ids), **opts), LedgerStateMachine)
        storage: Any = cluster.new_storage(rid)
        replica = cluster.new_replica(storage, now_ms=now_ms, rng=rng)
    else:
        storage = node_cluster.new_storage(config.protocol)
        replica = node_cluster.node_replica(config.protocol, keys, me=rid, ids=replica_ids,
                                            state_machine=state_machine, storage=storage, options=opts,
                                            now_ms=now_ms, rng=rng)
    if keys.vrf is not None:
        replica = VrfKeyExchange(replica, keys, now_ms=now_ms)
    return replica, storage
