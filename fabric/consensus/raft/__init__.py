"""Raft, the datacenter-mode protocol: crash faults, n = 2f+1."""

from fabric.consensus.raft.core import CANDIDATE, FOLLOWER, LEADER, PRE_CANDIDATE, RaftConfig, RaftReplica
from fabric.consensus.raft.log import RaftLog
from fabric.consensus.raft.messages import (
    Append,
    AppendResp,
    Entry,
    Heartbeat,
    HeartbeatResp,
    InstallSnapshot,
    PreVote,
    PreVoteResp,
    Snapshot,
    Vote,
    VoteResp,
)
from fabric.consensus.raft.storage import (
    FileRaftStorage,
    HardState,
    MemoryRaftStorage,
    RaftDurable,
    RaftPersist,
    RaftStorage,
)

__all__ = [
    "CANDIDATE", "FOLLOWER", "LEADER", "PRE_CANDIDATE", "Append", "AppendResp", "Entry", "FileRaftStorage",
    "HardState", "Heartbeat", "HeartbeatResp", "InstallSnapshot", "MemoryRaftStorage", "PreVote",
    "PreVoteResp", "RaftConfig", "RaftDurable", "RaftLog", "RaftPersist", "RaftReplica", "RaftStorage",
    "Snapshot", "Vote", "VoteResp",
]
