"""Measurements the simulator makes for reports (jobs/bench_consensus.py): ProBFT's agreement under attack.

`probft_agreement` runs one consensus instance per seed: one client, one
operation, the leader of view 0 and f-1 more replicas Byzantine and colluding
(fabric.sim.byzantine, "collude": the leader splits the honest replicas in two
halves with different batches, the others vote for both). A run violates
agreement when two honest replicas execute different batches at one position
(Ready.decided) or the usual checks fail; its fencing is checked apart. The
rate is compared with fabric.consensus.probft.analysis.split_attack_bound.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from fabric.consensus.probft.analysis import split_attack_bound
from fabric.errors import ConfigError
from fabric.sim.faults import Byzantine, Faults
from fabric.sim.runner import RunConfig, run


@dataclass(kw_only=True)
class AgreementResult:
    """Counts of a ProBFT agreement measurement at one (n, f)."""

    n: int
    f: int
    o: float
    l: float  # noqa: E741  (the paper's name)
    runs: int = 0
    violations: int = 0  # runs where honest replicas disagreed (or another safety check failed)
    fencing_violations: int = 0  # runs where what clients accepted could run a VM twice: must stay 0
    decided: int = 0  # runs whose operation completed
    messages: int = 0
    wall_s: float = 0.0
    bound: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Runs with an agreement violation, per run."""
        return self.violations / self.runs if self.runs else 0.0

    @property
    def rate_upper95(self) -> float:
        """Upper end of the 95% Wilson score interval of the rate (meaningful when few runs erred)."""
        return wilson_upper(self.violations, self.runs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"n": self.n, "f": self.f, "o": self.o, "l": self.l, "runs": self.runs,
                "violations": self.violations, "violation_rate": round(self.rate, 4),
                "violation_rate_upper95": round(self.rate_upper95, 4),
                "fencing_violations": self.fencing_violations, "decided": self.decided,
                "messages_per_run": round(self.messages / self.runs, 1) if self.runs else 0,
                "bound": self.bound, "wall_s": round(self.wall_s, 1)}


def wilson_upper(k: int, runs: int, z: float = 1.96) -> float:
    """Upper end of the Wilson score interval for k successes in `runs` trials (0 runs: 1)."""
    if runs <= 0:
        return 1.0
    p = k / runs
    centre = p + z * z / (2 * runs)
    spread = z * math.sqrt(p * (1 - p) / runs + z * z / (4 * runs * runs))
    return min(1.0, (centre + spread) / (1 + z * z / runs))


def probft_agreement(n: int, f: int, seeds: int, *, start: int = 0, o: float = 2.0,
                     l: float = 1.5) -> AgreementResult:  # noqa: E741
    """Run `seeds` single-instance attacks at n replicas with f colluding (see the module doc)."""
    if not 4 <= n <= 256 or not 1 <= f <= (n - 1) // 3 or not 0 <= seeds <= 10_000_000:
        raise ConfigError(f"probft agreement n={n} f={f} seeds={seeds}: use 4 <= n <= 256, "
                          "1 <= f <= (n-1)//3 and 0..10000000 seeds")
    b = split_attack_bound(n, f, o=o, l=l)
    bound = {"q": b.q, "sample": b.sample, "mean_votes": round(b.mean, 2), "per_replica": b.per_replica,
             "union_bound": b.bound, "chernoff_bound": b.chernoff}
    out = AgreementResult(n=n, f=f, o=o, l=l, bound=bound)
    # Liveness is not what is measured: a run that split stops after 3 s of view changes.
    cfg = RunConfig(protocol="probft", n=n, clients=1, ops_per_client=1, think_ms_max=0, liveness_ms=3_000,
                    options={"o": o, "l": l}, events_max=2_000_000)
    faults = Faults(byzantine=tuple(Byzantine(replica=r, behaviour="collude") for r in range(f)))
    t0 = time.perf_counter()
    for seed in range(start, start + seeds):
        r = run(cfg, seed, faults)
        out.runs += 1
        out.violations += bool(r.safety_violations)
        out.fencing_violations += bool(r.fencing_violations)
        out.decided += r.decisions > 0
        out.messages += r.messages
    out.wall_s = time.perf_counter() - t0
    return out
