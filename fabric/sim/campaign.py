"""Seeded campaigns: many runs of one protocol with random faults inside its fault model.

Seed s always gives the same run: its faults, its protocol options (some are
drawn per seed, e.g. Raft with and without pre-vote and check-quorum, so both
halves of the configuration space are exercised) and every event. `replay`
re-runs one seed with an event log.

Per protocol: the newer BFT protocols also face colluding Byzantine replicas
(behaviour "collude"); ACP's runs draw a schedule of mode changes, so each run
switches protocol two or three times while its clients migrate VMs; ProBFT's
agreement is probabilistic, so its campaigns count agreement violations (a
result, reported against the bound) and fail only on a fencing violation
(RunResult.fencing_violations: what VM hosts act on let a VM run twice) or a
liveness failure.
"""

from __future__ import annotations

import multiprocessing
import random
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from fabric.consensus.registry import get_protocol
from fabric.errors import ConfigError
from fabric.sim.byzantine import default_behaviour_names
from fabric.sim.faults import FAULT_KINDS, Faults
from fabric.sim.runner import RAISED, SIM_OPTIONS, RunConfig, RunResult, random_faults, run

HEAL_MS = 1_500  # faults happen in [0, heal); long enough for several elections or view changes
FAILURES_KEPT = 20  # failing runs whose details a campaign keeps (all failing seeds are listed)


def fault_kinds_for(protocol: str) -> tuple[str, ...]:
    """Every fault kind inside the protocol's fault model."""
    spec = get_protocol(protocol)
    return tuple(k for k in FAULT_KINDS if (k != "byzantine" or spec.fault_model == "byzantine")
                 and (k != "membership" or spec.membership))


def _option_space(protocol: str, rng: random.Random) -> dict[str, Any]:
    """Protocol options drawn per seed."""
    if protocol == "raft":
        # check-quorum deposes an isolated leader quickly; without it only read-index
        # keeps its reads linearizable, so both settings must be tested.
        return {"pre_vote": rng.random() < 0.75, "check_quorum": rng.random() < 0.5}
    if protocol == "pbft":
        return {"batch_max": rng.choice((1, 8)), "pipeline_max": rng.choice((1, 2, 4))}
    if protocol == "probft":
        return {"batch_max": rng.choice((1, 8)), "pipeline_max": rng.choice((1, 2))}
    if protocol == "tpbft":
        # Short epochs switch group and primaries often; batch_max 2 is one stamp and one request.
        return {"batch_max": rng.choice((2, 8)), "pipeline_max": rng.choice((1, 2)),
                "epoch_length": rng.choice((4, 8, 16))}
    if protocol == "bullshark":
        return {"batch_max": rng.choice((1, 8)), "leader_timeout_ms": rng.choice((100, 200, 400))}
    if protocol == "acp":
        return {"internet": rng.choice(("pbft", "probft", "tpbft", "bullshark")),
                "hybrid": rng.choice(("pbft", "probft", "tpbft"))}
    return {}


def _mode_changes(rng: random.Random, heal_ms: int) -> tuple[tuple[int, str], ...]:
    """ACP: two or three mode changes during the faulty period, each to another mode."""
    times = sorted(rng.sample(range(50, max(51, heal_ms)), rng.choice((2, 3))))
    modes, mode = [], "datacenter"
    for _ in times:
        mode = rng.choice([m for m in ("datacenter", "internet", "hybrid") if m != mode])
        modes.append(mode)
    return tuple(zip(times, modes, strict=True))


# Byzantine behaviours per protocol: the classic five for PBFT (its campaign's seeds stay as
# they were), and collusion against the newer ones.
CAMPAIGN_BEHAVIOURS: dict[str, tuple[str, ...]] = {
    p: (*default_behaviour_names(), "collude") for p in ("probft", "tpbft", "bullshark")}
# Protocols whose agreement is probabilistic: their campaigns count agreement violations.
PROBABILISTIC = ("probft",)


def agreement_is_probabilistic(config: RunConfig) -> bool:
    """Do the run's quorums intersect only with high probability (ProBFT with partial samples or small q)?

    With every other replica in every sample and 2q - n >= f+1, ProBFT's quorums are
    PBFT's (n = 4 with the defaults): a disagreement is then a bug like any other.
    """
    if config.protocol not in PROBABILISTIC:
        return False
    from fabric.consensus.probft import ProbftConfig

    n = config.replicas
    options = {**(SIM_OPTIONS.get(config.protocol, {}) if config.sim_options else {}), **config.options}
    cfg = ProbftConfig(id=0, n=n, o=float(options.get("o", ProbftConfig.o)),
                       l=float(options.get("l", ProbftConfig.l)))
    f = (n - 1) // 3
    return cfg.sample < n - 1 or 2 * cfg.q - n < f + 1


# Share of BFT runs signed with real Ed25519 rather than the simulator's HMAC:
# enough to keep that path exercised, few enough for its cost (~290 us a verify).
ED25519_SHARE = 0.02


def run_config_for(base: RunConfig, seed: int, *, randomize: bool = True) -> RunConfig:
    """The run config of `seed`: `base` with per-seed options (explicit base options win)."""
    if not randomize:
        return base
    rng = random.Random(f"{seed}:options")
    drawn = _option_space(base.protocol, rng)
    signatures = base.signatures
    if get_protocol(base.protocol).fault_model == "byzantine" and base.signatures == "hmac" \
            and rng.random() < ED25519_SHARE:
        signatures = "ed25519"  # ProBFT: and RSA-FDH-VRF instead of its HMAC stand-in
    config = replace(base, options={**drawn, **base.options}, signatures=signatures)
    if base.protocol == "acp" and not base.mode_changes:
        config = replace(config, mode_changes=_mode_changes(rng, HEAL_MS))
    return config


@dataclass(frozen=True, kw_only=True)
class CampaignConfig:
    """What to run; `validate()` says how to fix a bad value."""

    run: RunConfig
    seeds: int
    start: int = 0
    kinds: tuple[str, ...] | None = None  # None: every kind in the protocol's model
    heal_ms: int = HEAL_MS
    randomize_options: bool = True
    # Processes running seeds in parallel (1: in this process). Seeds are independent and
    # deterministic, and results are folded in seed order, so any count gives the same result.
    workers: int = 1

    def validate(self) -> CampaignConfig:
        """Return self, or raise ConfigError."""
        self.run.validate()
        if not 0 <= self.seeds <= 100_000_000 or self.start < 0:
            raise ConfigError(f"campaign seeds={self.seeds} start={self.start}: use seeds >= 0, start >= 0")
        kinds = self.kinds if self.kinds is not None else fault_kinds_for(self.run.protocol)
        unknown = set(kinds) - set(FAULT_KINDS)
        if unknown:
            raise ConfigError(f"unknown fault kinds {sorted(unknown)}; known: {', '.join(FAULT_KINDS)}")
        if "byzantine" in kinds and get_protocol(self.run.protocol).fault_model != "byzantine":
            raise ConfigError(f"{self.run.protocol} tolerates crash faults only: drop 'byzantine'")
        if not 0 <= self.heal_ms <= 600_000:
            raise ConfigError(f"campaign heal_ms={self.heal_ms}: use 0..600000")
        if not 1 <= self.workers <= 256:
            raise ConfigError(f"campaign workers={self.workers}: use 1..256 processes")
        return self

    @property
    def fault_kinds(self) -> tuple[str, ...]:
        """The kinds drawn from, defaulted."""
        return self.kinds if self.kinds is not None else fault_kinds_for(self.run.protocol)

    def faults_for(self, seed: int) -> Faults:
        """Seed's faults."""
        return random_faults(run_config_for(self.run, seed, randomize=self.randomize_options), seed,
                             self.fault_kinds, heal_ms=self.heal_ms,
                             behaviours=CAMPAIGN_BEHAVIOURS.get(self.run.protocol))


@dataclass(kw_only=True)
class CampaignResult:
    """Totals of a campaign."""

    protocol: str
    start: int
    runs: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    safety_violations: int = 0
    fencing_violations: int = 0
    liveness_failures: int = 0
    # ProBFT where its quorums are probabilistic (agreement_is_probabilistic): runs in which
    # honest replicas disagreed. Counted and reported against the bound, not failures; a
    # fencing violation, a core that raised, or a liveness failure without a disagreement are.
    probabilistic: bool = False
    agreement_violations: int = 0
    inconclusive: int = 0
    messages: int = 0
    decisions: int = 0
    ops: int = 0
    events: int = 0
    # Runs signed with Ed25519 (ProBFT: and its VRF by RSA-FDH-VRF), not the simulator's HMAC.
    real_crypto_runs: int = 0
    wall_s: float = 0.0
    replica_counters: dict[str, int] = field(default_factory=dict)
    failing_seeds: list[int] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)

    @property
    def messages_per_decision(self) -> float:
        """Replica-to-replica messages per completed client operation."""
        return self.messages / self.decisions if self.decisions else 0.0

    def add(self, r: RunResult) -> None:
        """Fold one run in."""
        self.runs += 1
        for k, v in r.faults.items():
            self.faults[k] = self.faults.get(k, 0) + v
        for k, v in r.replica_counters.items():
            self.replica_counters[k] = self.replica_counters.get(k, 0) + v
        self.messages += r.messages
        self.decisions += r.decisions
        self.ops += r.ops_invoked
        self.events += r.events
        self.inconclusive += r.inconclusive
        if r.safety_violations:
            self.safety_violations += 1
        if r.fencing_violations:
            self.fencing_violations += 1
        if r.liveness_failures:
            self.liveness_failures += 1
        if self.failed(r):
            self.failing_seeds.append(r.seed)
            if len(self.failures) < FAILURES_KEPT:
                self.failures.append({"seed": r.seed, "safety": list(r.safety_violations[:3]),
                                      "fencing": list(r.fencing_violations[:3]),
                                      "liveness": list(r.liveness_failures[:3])})

    def failed(self, r: RunResult) -> bool:
        """Does run `r` fail the campaign (see `agreement_violations` for ProBFT's exception)?"""
        if r.fencing_violations:
            return True
        if not self.probabilistic:
            return not r.ok
        raised = any(v.startswith(RAISED) for v in r.safety_violations)
        if r.safety_violations and not raised:
            self.agreement_violations += 1
            return False  # a measured disagreement (its liveness failures follow from it)
        return raised or bool(r.liveness_failures)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {"protocol": self.protocol, "runs": self.runs, "seeds": [self.start, self.start + self.runs],
                "faults_injected": dict(sorted(self.faults.items())),
                "safety_violations": self.safety_violations, "fencing_violations": self.fencing_violations,
                "liveness_failures": self.liveness_failures, "probabilistic_agreement": self.probabilistic,
                "agreement_violations": self.agreement_violations,
                "inconclusive_checks": self.inconclusive, "messages": self.messages,
                "decisions": self.decisions, "messages_per_decision": round(self.messages_per_decision, 2),
                "ops": self.ops, "events": self.events, "real_crypto_runs": self.real_crypto_runs,
                "wall_s": round(self.wall_s, 2),
                "replica_counters": dict(sorted(self.replica_counters.items())),
                "failing_seeds": self.failing_seeds, "failures": self.failures}


def run_seed(cfg: CampaignConfig, seed: int, log: Callable[[str], None] | None = None) -> RunResult:
    """One seed of a campaign (the same run every time)."""
    config = run_config_for(cfg.run, seed, randomize=cfg.randomize_options)
    return run(config, seed, cfg.faults_for(seed), log)


def _pool(workers: int) -> ProcessPoolExecutor:
    """A process pool safe next to Ray and threads in the caller: forkserver (else spawn), never fork."""
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" in methods:
        ctx = multiprocessing.get_context("forkserver")
        # The server imports the simulator once; each worker forks from it ready to run (an
        # import costs ~0.8 s). Takes effect only if this process has not started its server yet.
        ctx.set_forkserver_preload(["__main__", "fabric.sim.campaign"])
    else:
        ctx = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(max_workers=workers, mp_context=ctx)


def _results(cfg: CampaignConfig) -> Iterator[RunResult]:
    """The campaign's runs in seed order, computed here or by `cfg.workers` processes."""
    seeds = range(cfg.start, cfg.start + cfg.seeds)
    workers = min(cfg.workers, cfg.seeds)
    if workers <= 1:
        for seed in seeds:
            yield run_seed(cfg, seed)
        return
    # Chunks small enough to balance the two ends of the range (run costs vary by seed),
    # large enough that pickling the config per chunk stays negligible.
    chunk = max(1, min(32, cfg.seeds // (workers * 16)))
    pool = _pool(workers)
    try:
        yield from pool.map(partial(run_seed, cfg), seeds, chunksize=chunk)
    finally:  # a caller that stops early (its progress callback raised) does not wait for the rest
        pool.shutdown(wait=True, cancel_futures=True)


def run_campaign(cfg: CampaignConfig, progress: Callable[[CampaignResult], None] | None = None,
                 progress_every: int = 100) -> CampaignResult:
    """Run seeds start .. start+seeds-1 and total them (in `cfg.workers` processes, same result)."""
    cfg.validate()
    result = CampaignResult(protocol=cfg.run.protocol, start=cfg.start,
                            probabilistic=agreement_is_probabilistic(cfg.run))
    t0 = time.perf_counter()
    for r in _results(cfg):
        result.add(r)
        if run_config_for(cfg.run, r.seed, randomize=cfg.randomize_options).signatures == "ed25519":
            result.real_crypto_runs += 1
        if progress is not None and result.runs % progress_every == 0:
            result.wall_s = time.perf_counter() - t0
            progress(result)
    result.wall_s = time.perf_counter() - t0
    return result
