"""PBFT, the internet-mode baseline: Byzantine faults, n = 3f+1, every message signed."""

from fabric.consensus.pbft.core import NORMAL, VIEW_CHANGE, PbftConfig, PbftReplica
from fabric.consensus.pbft.messages import (
    NULL_DIGEST,
    Checkpoint,
    Commit,
    FetchState,
    NewView,
    Prepare,
    PreparedCert,
    PrePrepare,
    StateReply,
    ViewChange,
    batch_digest,
    request_digest,
)
from fabric.consensus.pbft.storage import (
    MemoryPbftStorage,
    PbftDurable,
    PbftPersist,
    PbftStorage,
    StableCheckpoint,
)

__all__ = [
    "NORMAL", "NULL_DIGEST", "VIEW_CHANGE", "Checkpoint", "Commit", "FetchState", "MemoryPbftStorage",
    "NewView", "PbftConfig", "PbftDurable", "PbftPersist", "PbftReplica", "PbftStorage", "PrePrepare",
    "Prepare", "PreparedCert", "StableCheckpoint", "StateReply", "ViewChange", "batch_digest",
    "request_digest",
]
