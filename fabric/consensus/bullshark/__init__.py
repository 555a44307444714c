"""Bullshark (partially synchronous) over a Narwhal-style DAG: rounds, certificates, anchors, commit rule."""

from fabric.consensus.bullshark.core import (
    BullsharkConfig,
    BullsharkDurable,
    BullsharkPersist,
    BullsharkReplica,
    MemoryBullsharkStorage,
)
from fabric.consensus.bullshark.messages import Certificate, CertRequest, CertResponse, Header, Vote

__all__ = [
    "BullsharkConfig", "BullsharkDurable", "BullsharkPersist", "BullsharkReplica", "CertRequest",
    "CertResponse", "Certificate", "Header", "MemoryBullsharkStorage", "Vote",
]
