"""Raft's messages and log entries: small frozen values, checked when built.

Every message names its sender (`src`) and the sender's `term`. A receiver
calls `check()` again on arrival: a value that came through a decoder, not
the constructor, is a peer's input and may be anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fabric.consensus.api import Request, is_count, is_node_id, require

# Hard ceilings a peer's message may not exceed whatever our own config says;
# the config's own limits (RaftConfig) are validated to stay below them.
ENTRIES_PER_MSG_LIMIT = 4096
VOTERS_LIMIT = 256


def _check_voters(voters: Any) -> None:
    require(type(voters) is tuple and 0 < len(voters) <= VOTERS_LIMIT, "voters must be a non-empty tuple")
    require(all(is_node_id(v) for v in voters) and list(voters) == sorted(set(voters)),
            "voters must be sorted distinct node ids")


@dataclass(frozen=True, kw_only=True, slots=True)
class Entry:
    """A log entry: a client request, a membership change (the voters after it), or a no-op."""

    term: int
    index: int
    request: Request | None = None
    voters: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise MalformedMessageError if a field is out of range."""
        require(is_count(self.term) and self.term >= 1, "entry term must be >= 1")
        require(is_count(self.index) and self.index >= 1, "entry index must be >= 1")
        require(self.request is None or self.voters is None, "an entry is a request or a membership change")
        if self.request is not None:
            require(isinstance(self.request, Request), "entry request must be a Request")
            self.request.check()
        if self.voters is not None:
            _check_voters(self.voters)

    def brief(self) -> str:
        """Short text form for scripts."""
        if self.request is not None:
            body = self.request.brief()
        elif self.voters is not None:
            body = "voters " + ",".join(map(str, self.voters))
        else:
            body = "no-op"
        return f"{self.index}/{self.term} {body}"


@dataclass(frozen=True, kw_only=True, slots=True)
class Snapshot:
    """The state machine as of `index` (whose entry had `term`), with the voters at that point."""

    index: int
    term: int
    voters: tuple[int, ...]
    data: Any

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise MalformedMessageError if a field is out of range."""
        require(is_count(self.index) and is_count(self.term), "snapshot index and term must be >= 0")
        _check_voters(self.voters)


@dataclass(frozen=True, kw_only=True, slots=True)
class PreVote:
    """Would you vote for me at `term` (my term + 1, not yet taken)? My log ends at last_index/last_term."""

    src: int
    term: int
    last_index: int
    last_term: int

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise MalformedMessageError if a field is out of range."""
        require(is_node_id(self.src) and is_count(self.term), "src and term must be >= 0")
        require(is_count(self.last_index) and is_count(self.last_term), "last_index/last_term must be >= 0")

    def brief(self) -> str:
        """Short text form for scripts."""
        return f"PreVote term={self.term} last={self.last_index}/{self.last_term}"


@dataclass(frozen=True, kw_only=True, slots=True)
class Vote:
    """Vote for me at `term`; my log ends at last_index/last_term."""

    src: int
    term: int
    last_index: int
    last_term: int

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise MalformedMessageError if a field is out of range."""
        require(is_node_id(self.src) and is_count(self.term), "src and term must be >= 0")
        require(is_count(self.last_index) and is_count(self.last_term), "last_index/last_term must be >= 0")

    def brief(self) -> str:
        """Short text form for scripts."""
        return f"Vote term={self.term} last={self.last_index}/{self.last_term}"


@dataclass(frozen=True, kw_only=True, slots=True)
class PreVoteResp:
    """Answer to a PreVote: `term` is the asked term if granted, else the voter's own term."""

    src: int
    term: int
    granted: bool

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise MalformedMessageError if a field is out of range."""
        require(is_node_id(self.src) and is_count(self.term), "src and term must be >= 0")
        require(type(self.granted) is bool, "granted must be a bool")

    def brief(self) -> str:
        """Short text form for scripts."""
        return f"PreVoteResp term={self.term} {'granted' if self.granted else 'rejected'}"


@dataclass(frozen=True, kw_only=True, slots=True)
class VoteResp:
    """Answer to a Vote at `term`."""

    src: int
    term: int
    granted: bool

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise MalformedMessageError if a field is out of range."""
        require(is_node_id(self.src) and is_count(self.term), "src and term must be >= 0")
        require(type(self.granted) is bool, "granted must be a bool")

    def brief(self) -> str:
        """Short text form for scripts."""
        return f"VoteResp term={self.term} {'granted' if self.granted else 'rejected'}"


@dataclass(frozen=True, kw_only=True, slots=True)
class Append:
    """Append `entries` after prev_index/prev_term; the leader has committed up to `commit`."""

    src: int
    term: int
    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...]
    commit: int

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise MalformedMessageError if a field is out of range or entries do not follow prev."""
        require(is_node_id(self.src) and is_count(self.term), "src and term must be >= 0")
        require(is_count(self.prev_index) and is_count(self.prev_term), "prev_index/prev_term must be >= 0")
        require(is_count(self.commit), "commit must be >= 0")
        require(type(self.entries) is tuple and len(self.entries) <= ENTRIES_PER_MSG_LIMIT,
                f"entries must be a tuple of at most {ENTRIES_PER_MSG_LIMIT}")
        expect, last_term = self.prev_index + 1, self.prev_term
        for e in self.entries:
            require(type(e) is Entry, "entries must be Entry values")
            e.check()
            require(e.index == expect and last_term <= e.term <= self.term,
                    "entries must follow prev_index with terms that never fall")
            expect, last_term = expect + 1, e.term

    def brief(self) -> str:
        """Short text form for scripts."""
        ents = "" if not self.entries else " [" + ", ".join(e.brief() for e in self.entries) + "]"
        return f"Append term={self.term} prev={self.prev_index}/{self.prev_term} commit={self.commit}{ents}"


@dataclass(frozen=True, kw_only=True, slots=True)
class AppendResp:
    """Answer to an Append or InstallSnapshot.

    Success: the follower's log matches the leader's up to `index`. Rejection:
    the Append at prev_index=`index` did not match; retry from `hint_index`.
    """

    src: int
    term: int
    success: bool
    index: int
    hint_index: int = 0

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise MalformedMessageError if a field is out of range."""
        require(is_node_id(self.src) and is_count(self.term), "src and term must be >= 0")
        require(type(self.success) is bool, "success must be a bool")
        require(is_count(self.index) and is_count(self.hint_index), "index and hint_index must be >= 0")
        require(self.success or self.hint_index <= self.index, "a rejection's hint never exceeds its index")

    def brief(self) -> str:
        """Short text form for scripts."""
        if self.success:
            return f"AppendResp term={self.term} ok index={self.index}"
        return f"AppendResp term={self.term} reject index={self.index} hint={self.hint_index}"


@dataclass(frozen=True, kw_only=True, slots=True)
class Heartbeat:
    """I lead at `term`; you may commit up to `commit`; echo `ctx` (it confirms read-index rounds)."""

    src: int
    term: int
    commit: int
    ctx: int

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise MalformedMessageError if a field is out of range."""
        require(is_node_id(self.src) and is_count(self.term), "src and term must be >= 0")
        require(is_count(self.commit) and is_count(self.ctx), "commit and ctx must be >= 0")

    def brief(self) -> str:
        """Short text form for scripts."""
        return f"Heartbeat term={self.term} commit={self.commit} ctx={self.ctx}"


@dataclass(frozen=True, kw_only=True, slots=True)
class HeartbeatResp:
    """Answer to a Heartbeat, echoing its `ctx`."""

    src: int
    term: int
    ctx: int

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise MalformedMessageError if a field is out of range."""
        require(is_node_id(self.src) and is_count(self.term), "src and term must be >= 0")
        require(is_count(self.ctx), "ctx must be >= 0")

    def brief(self) -> str:
        """Short text form for scripts."""
        return f"HeartbeatResp term={self.term} ctx={self.ctx}"


@dataclass(frozen=True, kw_only=True, slots=True)
class InstallSnapshot:
    """Replace your state with `snapshot`: the entries you lack were compacted away."""

    src: int
    term: int
    snapshot: Snapshot

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise MalformedMessageError if a field is out of range."""
        require(is_node_id(self.src) and is_count(self.term), "src and term must be >= 0")
        require(type(self.snapshot) is Snapshot, "snapshot must be a Snapshot")
        self.snapshot.check()
        require(self.snapshot.term <= self.term, "a snapshot's term never exceeds the sender's")

    def brief(self) -> str:
        """Short text form for scripts."""
        s = self.snapshot
        return (f"InstallSnapshot term={self.term} index={s.index}/{s.term} "
                f"voters={','.join(map(str, s.voters))}")


RaftMessage = PreVote | Vote | PreVoteResp | VoteResp | Append | AppendResp | Heartbeat | HeartbeatResp \
    | InstallSnapshot
MESSAGE_TYPES = (PreVote, Vote, PreVoteResp, VoteResp, Append, AppendResp, Heartbeat, HeartbeatResp,
                 InstallSnapshot)
