"""Fault options of one simulated run: a typed, validated value, drawn at random from a seed.

Everything before `heal_ms` may go wrong: messages delayed by a distribution,
dropped, duplicated, reordered; partitions (symmetric, one-way, flapping, or
isolating whoever leads); replicas (or the leader of the moment) crashing and
restarting from what they persisted; membership changes (a voter removed and
added back, for protocols that have them); Byzantine replicas running a
behaviour. From `heal_ms` on the network is reliable (delays only), every
crashed replica is restarted and partitions are gone; Byzantine replicas keep
lying, which their protocol must survive.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

from fabric.errors import ConfigError

Address = int | str  # a replica id, or a client id
FAULT_KINDS = ("delay", "drop", "dup", "reorder", "partition", "flap", "crash", "membership", "byzantine")
RATE_MAX = 0.5  # beyond this, a "lossy" network is mostly a partition; use one
HORIZON_MS_MAX = 3_600_000


@dataclass(frozen=True, kw_only=True)
class Delay:
    """One-way message delay: `base_ms` plus a draw of the distribution, capped at `cap_ms`.

    uniform: U[0, spread_ms]; exponential: mean spread_ms (a queueing tail);
    pareto: shape 1.5, scale spread_ms/3 (heavy tail: a few very late messages).
    wan: a wide-area network of sites: each pair of addresses has its own fixed
    one-way latency in [base_ms, base_ms + spread_ms] (the same both ways, a
    function of the pair alone), plus U[0, jitter_ms] per message. base 25,
    spread 50 gives round trips of 50-150 ms between sites.
    """

    kind: Literal["uniform", "exponential", "pareto", "wan"] = "uniform"
    base_ms: int = 1
    spread_ms: int = 4
    cap_ms: int = 200
    jitter_ms: int = 0  # wan only

    def validate(self) -> Delay:
        """Return self, or raise ConfigError."""
        if self.kind not in ("uniform", "exponential", "pareto", "wan"):
            raise ConfigError(f"delay kind {self.kind!r}: use uniform, exponential, pareto or wan")
        if not 0 <= self.base_ms <= self.cap_ms <= 60_000 or not 0 <= self.spread_ms <= 60_000:
            raise ConfigError(f"delay {self}: need 0 <= base_ms <= cap_ms <= 60000 "
                              "and 0 <= spread_ms <= 60000")
        if not 0 <= self.jitter_ms <= 60_000 or (self.jitter_ms and self.kind != "wan"):
            raise ConfigError(f"delay jitter_ms={self.jitter_ms}: use 0..60000, with kind wan only")
        return self

    def link_ms(self, src: Address, dst: Address) -> int:
        """wan: the fixed one-way latency between two addresses (symmetric, from the pair alone)."""
        a, b = sorted((str(src), str(dst)))
        h = int.from_bytes(hashlib.blake2b(f"{a}|{b}".encode(), digest_size=8).digest(), "big")
        return self.base_ms + h % (self.spread_ms + 1)

    def sample_link(self, rng: random.Random, src: Address, dst: Address) -> int:
        """A delay in ms for one message from `src` to `dst` (the other kinds ignore the pair)."""
        if self.kind != "wan":
            return self.sample(rng)
        return min(self.cap_ms, self.link_ms(src, dst) + int(rng.random() * self.jitter_ms))

    def sample(self, rng: random.Random) -> int:
        """A delay in ms."""
        if self.kind in ("uniform", "wan"):  # wan without the pair: the spread of its links
            extra = rng.random() * self.spread_ms
        elif self.kind == "exponential":
            extra = rng.expovariate(1.0 / self.spread_ms) if self.spread_ms else 0.0
        else:
            extra = (self.spread_ms / 3.0) * (rng.paretovariate(1.5) - 1.0)
        return min(self.cap_ms, self.base_ms + int(extra))


@dataclass(frozen=True, kw_only=True)
class Partition:
    """From start_ms to end_ms, messages between groups are lost.

    split: no message crosses between any two groups. one-way: messages from
    groups[0] to groups[1] are lost, the other direction flows (an asymmetric
    link). isolate-leader: at start_ms the simulator puts whoever leads then
    (with `leader_clients` of the clients) in one group and everyone else in the
    other (a targeted nemesis: the deposed leader's side keeps being asked).
    flap_ms > 0: the partition is on for flap_ms, off for flap_ms, and so on.
    Addresses not in any group are unaffected.
    """

    kind: Literal["split", "one-way", "isolate-leader"]
    start_ms: int
    end_ms: int
    groups: tuple[tuple[Address, ...], ...] = ()
    flap_ms: int = 0
    leader_clients: int = 0

    def validate(self) -> Partition:
        """Return self, or raise ConfigError."""
        if self.kind not in ("split", "one-way", "isolate-leader"):
            raise ConfigError(f"partition kind {self.kind!r}: use split, one-way or isolate-leader")
        if not 0 <= self.start_ms < self.end_ms <= HORIZON_MS_MAX:
            raise ConfigError(f"partition {self.start_ms}..{self.end_ms} ms: need 0 <= start < end")
        if self.kind == "isolate-leader":
            if self.groups or self.leader_clients < 0:
                raise ConfigError("an isolate-leader partition finds its groups itself: leave groups empty")
        elif len(self.groups) < 2 or (self.kind == "one-way" and len(self.groups) != 2):
            raise ConfigError("a partition needs two groups (exactly two for one-way)")
        seen = [a for g in self.groups for a in g]
        if len(seen) != len(set(seen)):
            raise ConfigError("an address is in two groups of one partition")
        if self.flap_ms < 0:
            raise ConfigError("flap_ms must be >= 0")
        return self

    def active(self, now_ms: int) -> bool:
        """Is it cutting links now?"""
        if not self.start_ms <= now_ms < self.end_ms:
            return False
        return not self.flap_ms or ((now_ms - self.start_ms) // self.flap_ms) % 2 == 0

    @cached_property
    def _group_of(self) -> dict[Address, int]:
        return {a: k for k, g in enumerate(self.groups) for a in g}

    def cuts(self, src: Address, dst: Address) -> bool:
        """Does it cut src -> dst (when active)?"""
        gs = self._group_of.get(src, -1)
        gd = self._group_of.get(dst, -1)
        if gs < 0 or gd < 0 or gs == gd:
            return False
        return self.kind == "split" or (gs == 0 and gd == 1)


@dataclass(frozen=True, kw_only=True)
class Crash:
    """Replica `replica` (None: whoever leads at at_ms) loses its volatile state at at_ms and
    restarts from storage at restart_ms (None: at the heal)."""

    replica: int | None
    at_ms: int
    restart_ms: int | None = None


@dataclass(frozen=True, kw_only=True)
class Reconfigure:
    """At remove_ms the leader of the moment removes one voter (drawn then, itself included),
    and from add_ms on it is added back; both retried until a leader accepts them."""

    remove_ms: int
    add_ms: int


@dataclass(frozen=True, kw_only=True)
class Byzantine:
    """Replica `replica` runs `behaviour` (see fabric.sim.byzantine) for the whole run."""

    replica: int
    behaviour: str


@dataclass(frozen=True, kw_only=True)
class Faults:
    """Everything that goes wrong in one run; `validate()` checks it against the protocol's fault model."""

    delay: Delay = Delay()
    drop_rate: float = 0.0
    dup_rate: float = 0.0
    reorder_rate: float = 0.0
    # A reordered message is held back by up to this much more.
    reorder_ms: int = 60
    partitions: tuple[Partition, ...] = ()
    crashes: tuple[Crash, ...] = ()
    reconfigurations: tuple[Reconfigure, ...] = ()
    byzantine: tuple[Byzantine, ...] = ()
    # From here on: reliable network, crashed replicas restarted, no partition.
    heal_ms: int = 0

    def validate(self, *, replica_ids: tuple[int, ...], fault_model: str, faults_tolerated: int,
                 membership: bool = False) -> Faults:
        """Return self, or raise ConfigError if a fault is outside the protocol's model or malformed."""
        from fabric.sim.byzantine import behaviour_names  # the registry lives with the behaviours

        self.delay.validate()
        for name in ("drop_rate", "dup_rate", "reorder_rate"):
            if not 0.0 <= getattr(self, name) <= RATE_MAX:
                raise ConfigError(f"faults {name}={getattr(self, name)}: use 0..{RATE_MAX}")
        if not 0 <= self.reorder_ms <= 60_000 or not 0 <= self.heal_ms <= HORIZON_MS_MAX:
            raise ConfigError("faults reorder_ms must be 0..60000 and heal_ms 0..3600000")
        for p in self.partitions:
            p.validate()
        for c in self.crashes:
            known = c.replica is None or c.replica in replica_ids
            if not known or not 0 <= c.at_ms <= self.heal_ms or \
                    (c.restart_ms is not None and not c.at_ms < c.restart_ms <= self.heal_ms):
                raise ConfigError(f"crash {c}: need a known replica and at_ms < restart_ms <= heal_ms")
        if self.reconfigurations and not membership:
            raise ConfigError("this protocol has no membership change: drop the reconfigurations")
        for rc in self.reconfigurations:
            if not 0 <= rc.remove_ms < rc.add_ms <= self.heal_ms:
                raise ConfigError(f"reconfiguration {rc}: need 0 <= remove_ms < add_ms <= heal_ms")
        byz = [b.replica for b in self.byzantine]
        if byz and fault_model != "byzantine":
            raise ConfigError(f"Byzantine replicas are outside a {fault_model}-fault protocol's model")
        if len(set(byz)) != len(byz) or any(r not in replica_ids for r in byz):
            raise ConfigError(f"Byzantine replicas {byz}: need distinct known replicas")
        if len(byz) > faults_tolerated:
            raise ConfigError(f"{len(byz)} Byzantine replicas, but only {faults_tolerated} are tolerated")
        for b in self.byzantine:
            if b.behaviour not in behaviour_names():
                raise ConfigError(f"unknown Byzantine behaviour {b.behaviour!r}; known: {behaviour_names()}")
        return self

    def summary(self) -> dict[str, int]:
        """How many faults of each kind the options inject (counts of planned events)."""
        return {"partitions": len(self.partitions),
                "flapping": sum(1 for p in self.partitions if p.flap_ms),
                "one_way": sum(1 for p in self.partitions if p.kind == "one-way"),
                "leader_isolations": sum(1 for p in self.partitions if p.kind == "isolate-leader"),
                "crashes": len(self.crashes),
                "leader_crashes": sum(1 for c in self.crashes if c.replica is None),
                "reconfigurations": len(self.reconfigurations),
                "byzantine": len(self.byzantine)}

    @classmethod
    def random(cls, rng: random.Random, *, kinds: tuple[str, ...], replica_ids: tuple[int, ...],
               client_ids: tuple[str, ...], fault_model: str, faults_tolerated: int,
               heal_ms: int, membership: bool = False, behaviours: tuple[str, ...] | None = None) -> Faults:
        """Random faults of some of the given kinds, all inside the fault model (see the module doc).

        Byzantine replicas run one of `behaviours` (None: the default set).
        """
        from fabric.sim.byzantine import default_behaviour_names

        unknown = set(kinds) - set(FAULT_KINDS)
        if unknown:
            raise ConfigError(f"unknown fault kinds {sorted(unknown)}; known: {', '.join(FAULT_KINDS)}")
        # Each kind is on for a seed with probability 1/2 (at least one is on): a run
        # with one nemesis lets clients progress on both sides of it, which is where
        # subtle bugs show; a run with all of them tests the worst case.
        offered = list(kinds)
        kinds = tuple(k for k in offered if rng.random() < 0.5) or ((rng.choice(offered),) if offered else ())
        delay = Delay()
        if "delay" in kinds:
            kind = rng.choice(("uniform", "exponential", "pareto"))
            delay = Delay(kind=kind, base_ms=rng.randint(0, 5), spread_ms=rng.randint(1, 40),
                          cap_ms=rng.randint(60, 250))
        drop = rng.uniform(0.0, 0.25) if "drop" in kinds else 0.0
        dup = rng.uniform(0.0, 0.15) if "dup" in kinds else 0.0
        reorder = rng.uniform(0.0, 0.3) if "reorder" in kinds else 0.0
        partitions = []
        if "partition" in kinds or "flap" in kinds:
            for _ in range(rng.randint(0, 2)):
                start = rng.randint(0, max(1, heal_ms - 100))
                end = rng.randint(start + 50, heal_ms + 1)
                nodes: list[Address] = [*replica_ids, *client_ids]
                rng.shuffle(nodes)
                cut = rng.randint(1, len(nodes) - 1)
                shape = rng.random()
                flap = rng.choice((20, 50, 120)) if "flap" in kinds and rng.random() < 0.5 else 0
                if shape < 0.4:
                    # Clients on both sides: one keeps talking to the deposed leader while
                    # another writes through the new one (where stale reads would show).
                    with_leader = rng.randint(1, len(client_ids) - 1) if len(client_ids) > 1 else 0
                    partitions.append(Partition(kind="isolate-leader", start_ms=start, end_ms=end,
                                                flap_ms=flap, leader_clients=with_leader))
                else:
                    partitions.append(Partition(kind="one-way" if shape < 0.6 else "split", start_ms=start,
                                                end_ms=end, groups=(tuple(nodes[:cut]), tuple(nodes[cut:])),
                                                flap_ms=flap))
        byzantine: list[Byzantine] = []
        if "byzantine" in kinds and fault_model == "byzantine" and faults_tolerated:
            names = list(behaviours) if behaviours is not None else default_behaviour_names()
            for rid in rng.sample(list(replica_ids), rng.randint(0, faults_tolerated)):
                byzantine.append(Byzantine(replica=rid, behaviour=rng.choice(names)))
        crashes = []
        if "crash" in kinds:
            victims: list[int | None] = list(rng.sample(list(replica_ids), rng.randint(0, len(replica_ids))))
            victims += [None] * rng.randint(0, 2)  # the leader of the moment
            for rid in victims:
                at = rng.randint(0, max(0, heal_ms - 1))
                restart = rng.randint(at + 1, heal_ms) if at < heal_ms and rng.random() < 0.7 else None
                crashes.append(Crash(replica=rid, at_ms=at, restart_ms=restart))
        reconfigurations = []
        if "membership" in kinds and membership and heal_ms >= 2:
            for _ in range(rng.randint(1, 2)):
                remove = rng.randint(0, heal_ms - 2)
                add = rng.randint(remove + 1, heal_ms)
                reconfigurations.append(Reconfigure(remove_ms=remove, add_ms=add))
        return cls(delay=delay, drop_rate=drop, dup_rate=dup, reorder_rate=reorder,
                   partitions=tuple(partitions), crashes=tuple(crashes),
                   reconfigurations=tuple(reconfigurations), byzantine=tuple(byzantine), heal_ms=heal_ms)
