"""Byzantine behaviours: pluggable wrappers that tamper with what an honest core sends.

A Byzantine replica in the simulator runs the honest core and passes every
outgoing message and client reply through its behaviour, which may drop, alter,
duplicate or invent them. It holds only its own signer, so what it alters it
can re-sign as itself but never as anyone else: a forged sender fails the
receiver's signature check. Behaviours work on any protocol whose messages
follow the conventions of fabric.consensus.pbft.messages (fields `src`,
`digest` / `state_digest`, `batch`, and a `signed(signer)` method), so new BFT
protocols get them for free; register new ones with `register_behaviour`.

Byzantine replicas of one run may collude: they share `ByzantineContext.coalition`,
a dict the simulator creates per run. "collude" uses it for the attack that
probabilistic quorums fear most: the Byzantine leader gives each half of the
replicas another batch, and every Byzantine voter tells each replica it votes
to that it saw the batch that replica saw, helping both halves to a quorum.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fabric.consensus.api import ClientReply, NodeId
from fabric.consensus.signing import Signer
from fabric.ledger.state import Outcome, VmRecord


@dataclass(frozen=True, kw_only=True)
class ByzantineContext:
    """What a behaviour may use: who it is, its peers, its own signer, a seeded generator."""

    replica: NodeId
    replica_ids: tuple[NodeId, ...]
    signer: Signer | None
    rng: random.Random
    # Shared by the run's Byzantine replicas (None: they do not collude).
    coalition: dict[Any, Any] | None = None


Outgoing = list[tuple[NodeId, Any]]


class Behaviour:
    """Base behaviour: honest. Subclasses override `messages` and/or `reply`."""

    name = "honest"

    def messages(self, ctx: ByzantineContext, out: Outgoing) -> Outgoing:
        """What to send instead of `out` (a list of (to, msg))."""
        return out

    def reply(self, ctx: ByzantineContext, reply: ClientReply) -> ClientReply | None:
        """What to answer the client instead of `reply` (None: nothing)."""
        return reply


def _resign(ctx: ByzantineContext, msg: Any, **changes: Any) -> Any:
    new = dataclasses.replace(msg, **changes)
    if ctx.signer is not None and hasattr(new, "signed") and new.src == ctx.replica:
        new = new.signed(ctx.signer)
    return new


def _other_digest(ctx: ByzantineContext) -> bytes:
    return ctx.rng.randbytes(32)


def _has_field(msg: Any, name: str) -> bool:
    """Is `name` a field of the message (not a property computed from the others)?"""
    return dataclasses.is_dataclass(msg) and any(f.name == name for f in dataclasses.fields(msg))


class Silent(Behaviour):
    """Sends nothing and answers no client (a crash that keeps its vote to itself)."""

    name = "silent"

    def messages(self, ctx: ByzantineContext, out: Outgoing) -> Outgoing:
        """Nothing."""
        return []

    def reply(self, ctx: ByzantineContext, reply: ClientReply) -> ClientReply | None:
        """Nothing."""
        return None


class Equivocate(Behaviour):
    """Tells different replicas different things: as primary, a different batch to half the
    backups; as voter, a different digest to half the replicas."""

    name = "equivocate"

    def messages(self, ctx: ByzantineContext, out: Outgoing) -> Outgoing:
        """Split each multicast in two halves and give the second half another version."""
        result: Outgoing = []
        alt_cache: dict[int, Any] = {}
        for to, msg in out:
            if to % 2 == 0 or not hasattr(msg, "signed"):
                result.append((to, msg))
                continue
            alt = alt_cache.get(id(msg))
            if alt is None:
                alt = self._alternative(ctx, msg)
                alt_cache[id(msg)] = alt
            result.append((to, alt))
        return result

    def _alternative(self, ctx: ByzantineContext, msg: Any) -> Any:
        if hasattr(msg, "batch"):
            return _other_batch(ctx, msg)
        if _has_field(msg, "digest"):
            return _resign(ctx, msg, digest=_other_digest(ctx))
        if hasattr(msg, "state_digest"):
            return _resign(ctx, msg, state_digest=_other_digest(ctx))
        return msg


def _other_batch(ctx: ByzantineContext, msg: Any) -> Any:
    """The same proposal with another batch (reversed, or empty), digest kept consistent, re-signed."""
    from fabric.consensus.pbft.messages import batch_digest  # conventions of the BFT messages

    batch = tuple(reversed(msg.batch)) if len(msg.batch) > 1 else ()
    if any(f.name == "digest" for f in dataclasses.fields(msg)):
        return _resign(ctx, msg, batch=batch, digest=batch_digest(batch))
    return _resign(ctx, msg, batch=batch)  # a message whose digest is computed from its content


def _instance(msg: Any) -> tuple[Any, Any] | None:
    """(view or round, seq or author) of a proposal or vote; None for other messages."""
    view = getattr(msg, "view", getattr(msg, "round", None))
    slot = getattr(msg, "seq", getattr(msg, "author", None))
    return None if view is None or slot is None else (type(view).__name__, view, slot)


def _proposal_digest(msg: Any) -> Any:
    return getattr(msg, "digest", None)


class ForgeVotes(Behaviour):
    """Sends its honest messages, plus copies claiming to come from other replicas (signed with
    its own key, so they must fail verification), plus conflicting votes of its own."""

    name = "forge"

    def messages(self, ctx: ByzantineContext, out: Outgoing) -> Outgoing:
        """Honest traffic, then forgeries for each vote."""
        result = list(out)
        forged: dict[int, Any] = {}
        for to, msg in out:
            if not _has_field(msg, "digest") or hasattr(msg, "batch"):
                continue
            fake = forged.get(id(msg))
            if fake is None:
                victim = ctx.rng.choice([r for r in ctx.replica_ids if r != ctx.replica])
                fake = dataclasses.replace(msg, src=victim, digest=_other_digest(ctx))
                if ctx.signer is not None:  # our signature on a message that claims to be theirs
                    fake = dataclasses.replace(fake, signature=ctx.signer.sign(fake.payload))
                forged[id(msg)] = fake
            result.append((to, fake))
        return result


class WrongDigest(Behaviour):
    """Every vote and checkpoint names a random digest, and clients get a wrong result."""

    name = "wrong-digest"

    def messages(self, ctx: ByzantineContext, out: Outgoing) -> Outgoing:
        """Replace digests (re-signed: the signature is valid, the content is a lie)."""
        result: Outgoing = []
        cache: dict[int, Any] = {}
        for to, msg in out:
            new = cache.get(id(msg))
            if new is None:
                new = msg
                if _has_field(msg, "digest") and not hasattr(msg, "batch"):
                    new = _resign(ctx, msg, digest=_other_digest(ctx))
                elif hasattr(msg, "state_digest"):
                    new = _resign(ctx, msg, state_digest=_other_digest(ctx))
                cache[id(msg)] = new
            result.append((to, new))
        return result

    def reply(self, ctx: ByzantineContext, reply: ClientReply) -> ClientReply | None:
        """A plausible but wrong result."""
        return _lie(ctx, reply)


class LyingReplies(Behaviour):
    """Follows the protocol with its peers but answers clients with wrong results."""

    name = "lie-to-clients"

    def reply(self, ctx: ByzantineContext, reply: ClientReply) -> ClientReply | None:
        """A plausible but wrong result."""
        return _lie(ctx, reply)


class Collude(Behaviour):
    """As leader, splits the replicas in two halves with different batches; as voter, tells each
    replica it votes to that it saw what that replica was given (see the module doc)."""

    name = "collude"

    def messages(self, ctx: ByzantineContext, out: Outgoing) -> Outgoing:
        """Equivocate as leader, double-vote as voter, coordinated through the coalition."""
        if ctx.coalition is None:
            return out
        result: Outgoing = []
        alt_cache: dict[int, Any] = {}
        for to, msg in out:
            key = _instance(msg)
            if key is None or not hasattr(msg, "signed"):
                result.append((to, msg))
            elif hasattr(msg, "batch"):
                if to % 2:
                    alt = alt_cache.get(id(msg))
                    if alt is None:
                        alt = alt_cache[id(msg)] = _other_batch(ctx, msg)
                    msg = alt
                ctx.coalition.setdefault(("split", key), {})[to] = _proposal_digest(msg)
                result.append((to, msg))
            else:
                seen = ctx.coalition.get(("split", key), {}).get(to)
                if seen is not None and _has_field(msg, "digest") and msg.digest != seen:
                    msg = _resign(ctx, msg, digest=seen)
                result.append((to, msg))
        return result


def _lie(ctx: ByzantineContext, reply: ClientReply) -> ClientReply:
    if reply.status != "ok":
        return reply
    fake = Outcome(accepted=True, record=VmRecord(vm="forged", owner=f"evil-{ctx.replica}",
                                                  epoch=ctx.rng.randint(1, 1 << 30)))
    return dataclasses.replace(reply, result=fake)


_BEHAVIOURS: dict[str, Callable[[], Behaviour]] = {}
# Behaviours a campaign draws from unless told otherwise. A behaviour added later is
# registered outside it, so the campaigns of existing protocols keep drawing the
# same faults for the same seed (their mutation tests rely on seed windows).
_DRAWN_BY_DEFAULT: list[str] = []


def register_behaviour(name: str, factory: Callable[[], Behaviour], *, drawn_by_default: bool = True) -> None:
    """Make a behaviour available by name to Faults and the campaign."""
    assert name not in _BEHAVIOURS, f"behaviour {name} registered twice"
    _BEHAVIOURS[name] = factory
    if drawn_by_default:
        _DRAWN_BY_DEFAULT.append(name)


def behaviour_names() -> list[str]:
    """Registered behaviour names, sorted."""
    return sorted(_BEHAVIOURS)


def default_behaviour_names() -> list[str]:
    """The behaviours campaigns draw from by default, sorted."""
    return sorted(_DRAWN_BY_DEFAULT)


def make_behaviour(name: str) -> Behaviour:
    """A new behaviour by name (KeyError for an unknown one; Faults.validate checks names first)."""
    return _BEHAVIOURS[name]()


for _cls in (Silent, Equivocate, ForgeVotes, WrongDigest, LyingReplies):
    register_behaviour(_cls.name, _cls)
register_behaviour(Collude.name, Collude, drawn_by_default=False)
