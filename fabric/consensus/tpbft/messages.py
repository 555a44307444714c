"""T-PBFT's messages: PBFT's inside an epoch envelope, and the proof that carries a laggard across epochs.

Inside an epoch, replicas run PBFT (fabric.consensus.pbft) among that epoch's
consensus group; its messages travel in `EpochMsg`. The envelope itself is not
signed: the PBFT message in it is, over its payload prefixed with the epoch
(`trust.epoch_binding`), so a message of one epoch never verifies in another.

An epoch ends at a stable checkpoint. `EpochStart` is what a replica needs to
start the next one without having run the old one's end: the checkpoint's proof
(2f+1 Checkpoints of the old group, bound to the old epoch) and the state they
certify, from which the new group and primaries follow deterministically.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fabric.consensus.api import is_count, require
from fabric.consensus.pbft.messages import MESSAGE_TYPES, REPLICAS_LIMIT, Checkpoint

EPOCHS_CARRIED_MAX = 16  # EpochStarts in one EpochJump; a config's epochs_kept_max stays below


@dataclass(frozen=True, kw_only=True)
class EpochMsg:
    """A PBFT message of `epoch`."""

    epoch: int
    msg: Any

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise MalformedMessageError if a field is out of range."""
        require(is_count(self.epoch), "epoch must be >= 0")
        require(type(self.msg) in MESSAGE_TYPES, "an epoch message carries a PBFT message")
        self.msg.check()

    @property
    def src(self) -> int:
        """The inner message's signer."""
        return self.msg.src

    @property
    def kind(self) -> str:
        """The inner message's type name (what counts of messages by type show)."""
        return type(self.msg).__name__

    def brief(self) -> str:
        """Short text form for scripts."""
        return f"e{self.epoch} {self.msg.brief()}"


@dataclass(frozen=True, kw_only=True)
class EpochStart:
    """Epoch `epoch` starts after `base`: the old group's checkpoint proof, and the state it certifies."""

    epoch: int
    base: int
    proof: tuple[Checkpoint, ...]
    snapshot: Any

    def check(self) -> None:
        """Raise MalformedMessageError if a field is out of range."""
        require(is_count(self.epoch) and self.epoch >= 1 and is_count(self.base) and self.base >= 1,
                "epoch >= 1 and base >= 1")
        require(type(self.proof) is tuple and 0 < len(self.proof) <= REPLICAS_LIMIT, "proof: a tuple")
        for c in self.proof:
            require(type(c) is Checkpoint, "proof holds Checkpoints")
            c.check()


@dataclass(frozen=True, kw_only=True)
class EpochJump:
    """For a replica left in an older epoch: the starts of the epochs after it, oldest first."""

    src: int
    starts: tuple[EpochStart, ...]

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise MalformedMessageError if a field is out of range."""
        require(is_count(self.src), "src must be a node id")
        require(type(self.starts) is tuple and 0 < len(self.starts) <= EPOCHS_CARRIED_MAX, "starts: a tuple")
        for st in self.starts:
            require(type(st) is EpochStart, "starts holds EpochStarts")
            st.check()
        require(all(b.epoch == a.epoch + 1 for a, b in zip(self.starts, self.starts[1:], strict=False)),
                "starts are consecutive epochs")

    def brief(self) -> str:
        """Short text form for scripts."""
        return f"EpochJump to e{self.starts[-1].epoch} from e{self.starts[0].epoch}"


@dataclass(frozen=True, kw_only=True)
class EpochQuery:
    """Replica `src` is in `epoch` and has heard of a later one: send me the starts I missed."""

    src: int
    epoch: int

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise MalformedMessageError if a field is out of range."""
        require(is_count(self.src) and is_count(self.epoch), "src and epoch")

    def brief(self) -> str:
        """Short text form for scripts."""
        return f"EpochQuery from e{self.epoch}"
