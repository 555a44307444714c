"""ProBFT: PBFT's three phases with votes sent to VRF-chosen samples and probabilistic quorums."""

from fabric.consensus.probft.core import PROTOCOL, ProbftConfig, ProbftReplica
from fabric.consensus.probft.messages import (
    Executed,
    Halted,
    ProCommit,
    ProNewView,
    ProPrepare,
    ProPreparedCert,
    ProViewChange,
)

__all__ = [
    "PROTOCOL", "Executed", "Halted", "ProCommit", "ProNewView", "ProPrepare", "ProPreparedCert",
    "ProViewChange", "ProbftConfig", "ProbftReplica",
]
