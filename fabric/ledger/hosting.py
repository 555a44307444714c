"""How a node hosts the ledger: which protocol, which replicas, and building one replica with real keys.

The simulator builds whole clusters from a seed (fabric.consensus.registry).
A running fabric instead gives each node its own signing key, publishes the
public keys, and builds only its own replica: `build_replica` does that, with
durable storage where the protocol has it.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from fabric.consensus.api import ClientPolicy, NodeId, Replica
from fabric.consensus.pbft import MemoryPbftStorage, PbftConfig, PbftReplica
from fabric.consensus.raft import FileRaftStorage, RaftConfig, RaftReplica
from fabric.consensus.registry import get_protocol
from fabric.consensus.signing import Ed25519KeyRing, Ed25519Signer
from fabric.errors import ConfigError
from fabric.ledger.replicated import LedgerStateMachine, op_from_dict, op_to_dict

LedgerProtocol = Literal["single-writer", "raft", "pbft"]
# A consensus group on Ray: 7 replicas tolerate 3 crashes (Raft) or 2 liars (PBFT);
# PBFT's messages grow as n^2, and every replica is an actor on this machine.
REPLICAS_MAX = 7
CLIENTS_PER_ACTOR_MAX = 16
# Timers on Ray: a Ray call costs ~1 ms of CPU here, so heartbeats every 100 ms
# (not the simulator's 30) keep six idle replicas under a few % of a core;
# elections after 1-2 s (10 heartbeats, etcd's ratio).
RAY_RAFT_OPTIONS = {"election_ms": 1000, "heartbeat_ms": 100}
RAY_PBFT_OPTIONS = {"request_timeout_ms": 2000, "view_change_timeout_ms": 2000, "resend_ms": 500}


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

    def validate(self) -> LedgerConfig:
        """Return self, or raise ConfigError."""
        if self.protocol not in ("single-writer", "raft", "pbft"):
            raise ConfigError(f"ledger protocol {self.protocol!r}: use single-writer, raft or pbft")
        if self.replicas is not None:
            if len(set(self.replicas)) != len(self.replicas) or not 1 <= len(self.replicas) <= REPLICAS_MAX:
                raise ConfigError(f"ledger replicas {self.replicas}: use 1..{REPLICAS_MAX} distinct nodes")
            if self.protocol == "pbft" and len(self.replicas) < 4:
                raise ConfigError("pbft needs at least 4 replicas")
        if not 1 <= self.clients_per_actor <= CLIENTS_PER_ACTOR_MAX:
            raise ConfigError(f"clients_per_actor={self.clients_per_actor}: use 1..{CLIENTS_PER_ACTOR_MAX}")
        if not 1 <= self.tick_ms <= 1000:
            raise ConfigError(f"tick_ms={self.tick_ms}: use 1..1000")
        return self

    def replica_nodes(self, nodes: list[str]) -> tuple[str, ...]:
        """The nodes that host replicas, given the fabric's nodes in order."""
        chosen = self.replicas if self.replicas is not None else tuple(nodes[:REPLICAS_MAX])
        missing = set(chosen) - set(nodes)
        if missing:
            raise ConfigError(f"ledger replicas on unknown nodes {sorted(missing)}")
        if self.protocol == "pbft" and len(chosen) < 4:
            raise ConfigError(f"pbft needs at least 4 replicas; the fabric has {len(chosen)} nodes")
        return chosen

    def replica_ids(self, count: int) -> tuple[NodeId, ...]:
        """The protocol's ids for `count` replicas."""
        return get_protocol(self.protocol).replica_ids(count)

    def protocol_options(self) -> dict[str, Any]:
        """Ray defaults, overridden by `options`."""
        base = RAY_RAFT_OPTIONS if self.protocol == "raft" else RAY_PBFT_OPTIONS
        return {**base, **self.options}

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
    if config.protocol == "raft":
        return ClientPolicy(replicas=replica_ids, replies_needed=1, broadcast_on_retry=False,
                            sign_requests=False)
    f = (len(replica_ids) - 1) // 3
    return ClientPolicy(replicas=replica_ids, replies_needed=f + 1, broadcast_on_retry=True,
                        sign_requests=True)


def build_replica(config: LedgerConfig, *, rid: NodeId, replica_ids: tuple[NodeId, ...],
                  state_machine: LedgerStateMachine, signer: Ed25519Signer,
                  replica_keys: dict[NodeId, bytes], client_keys: dict[str, bytes],
                  storage_dir: Path, now_ms: int, seed: int) -> tuple[Replica, Any]:
    """This node's replica and its storage (a restart if the storage holds state)."""
    rng = random.Random(f"{seed}:{rid}")  # election jitter only; keys are real
    opts = config.protocol_options()
    if config.protocol == "raft":
        storage = FileRaftStorage(storage_dir / f"raft-{rid}", op_to_dict=op_to_dict,
                                  op_from_dict=op_from_dict)
        cfg = RaftConfig(id=rid, voters=replica_ids, **opts)
        return RaftReplica(cfg, state_machine=state_machine, rng=rng, durable=storage.load(),
                           now_ms=now_ms), storage
    if config.protocol == "pbft":
        # PBFT state is in memory only (no file-backed PBFT storage yet): a restarted
        # replica rejoins empty and catches up by state transfer at a checkpoint.
        storage = MemoryPbftStorage()
        cfg = PbftConfig(id=rid, n=len(replica_ids), **opts)
        return PbftReplica(cfg, state_machine=state_machine, rng=rng, signer=signer,
                           verifier=Ed25519KeyRing(dict(replica_keys)),
                           client_verifier=Ed25519KeyRing(dict(client_keys)), now_ms=now_ms), storage
    raise ConfigError(f"no replicas for ledger protocol {config.protocol!r}")
