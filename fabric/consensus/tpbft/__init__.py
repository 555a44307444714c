"""T-PBFT: PBFT run by a consensus group of the most trusted replicas, trust by EigenTrust from the log."""

from fabric.consensus.tpbft.core import (
    MemoryTpbftStorage,
    TpbftConfig,
    TpbftDurable,
    TpbftInstance,
    TpbftPersist,
    TpbftReplica,
)
from fabric.consensus.tpbft.eigentrust import SCALE, global_trust, pre_trusted_vector, ranking
from fabric.consensus.tpbft.messages import (
    EpochJump,
    EpochMsg,
    EpochQuery,
    EpochStart,
)
from fabric.consensus.tpbft.trust import (
    Equivocation,
    Stamp,
    Suspect,
    TrustParams,
    TrustStateMachine,
    epoch_binding,
    evidence_client,
    evidence_request,
)

__all__ = [
    "SCALE", "EpochJump", "EpochMsg", "EpochQuery", "EpochStart", "Equivocation", "MemoryTpbftStorage",
    "Stamp", "Suspect", "TpbftConfig", "TpbftDurable", "TpbftInstance", "TpbftPersist", "TpbftReplica",
    "TrustParams", "TrustStateMachine", "epoch_binding", "evidence_client", "evidence_request",
    "global_trust", "pre_trusted_vector", "ranking",
]
