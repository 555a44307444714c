"""Consensus: sans-IO replicas behind one interface, and a registry of protocols by name.

See `fabric.consensus.api` for how a shell drives a replica, `registry` for
building a protocol's cluster by name, and `client` for the client side.
"""

from fabric.consensus import acp as _acp  # noqa: F401  (registers acp)
from fabric.consensus import protocols as _protocols  # noqa: F401  (registers raft, pbft, probft, ...)
from fabric.consensus.api import (
    EMPTY_READY,
    ClientPolicy,
    ClientReply,
    Committed,
    NodeId,
    Ready,
    Replica,
    ReplicaStatus,
    Request,
    StateMachine,
)
from fabric.consensus.client import ClientConfig, ClientOutput, Completion, ConsensusClient
from fabric.consensus.errors import (
    BadSignatureError,
    ClientBusyError,
    ConsensusError,
    ConsensusStorageError,
    MalformedMessageError,
    MembershipChangeError,
    NotLeaderError,
    UnknownProtocolError,
)
from fabric.consensus.registry import Cluster, ClusterParams, ProtocolSpec, get_protocol, protocol_names
from fabric.consensus.signing import (
    Ed25519KeyRing,
    Ed25519Signer,
    HmacKeyRing,
    HmacSigner,
    Signer,
    Verifier,
    make_signers,
)

__all__ = [
    "EMPTY_READY", "BadSignatureError", "ClientBusyError", "ClientConfig", "ClientOutput", "ClientPolicy",
    "ClientReply", "Cluster", "ClusterParams", "Committed", "Completion", "ConsensusClient", "ConsensusError",
    "ConsensusStorageError", "Ed25519KeyRing", "Ed25519Signer", "HmacKeyRing", "HmacSigner",
    "MalformedMessageError", "MembershipChangeError", "NodeId", "NotLeaderError", "ProtocolSpec", "Ready",
    "Replica", "ReplicaStatus", "Request", "Signer", "StateMachine", "UnknownProtocolError", "Verifier",
    "get_protocol", "make_signers", "protocol_names",
]
