"""How likely ProBFT's probabilistic quorums let one instance decide two values: the bound to measure against.

The attack (the simulator's "collude" behaviour): a Byzantine leader gives the
h = n - f honest replicas two batches, half each (sides A and B, |B| <= |A|),
and the f Byzantine replicas vote for both, each to the side it is sampling.
Agreement fails only if a replica of each side decides. A replica of B
decides on q matching Commits, counting its own; the others it can count come
from B's replicas that prepared and from Byzantine ones whose commit sample
holds it. Each sender's sample is s of the n-1 others, so it holds a given
replica with probability p = s/(n-1), independently of the other senders:

    P(a given replica of B decides) <= P(Bin(|B| - 1 + f, p) >= q - 1)
    P(agreement fails)              <= min(1, |B| * that)        (union bound)

With s = o*sqrt(n), q = l*sqrt(n) and a Byzantine fraction a = f/n, the
binomial's mean is about (1+a)/2 * o*sqrt(n); when l exceeds that multiplier by
a constant, the Chernoff bound makes the tail exp(-Theta(sqrt(n))) (Avelas et
al., PODC '24, Section 5: agreement with probability 1 - exp(-Theta(sqrt(n)))).
At a = 1/3 the margin is (l - 2o/3)*sqrt(n): with the default o = 2, l = 1.5
that is 0.17*sqrt(n) and the bound says little below thousands of replicas,
which is what the simulator measures too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fabric.consensus.sortition import sample_size


def binomial_tail(trials: int, p: float, k: int) -> float:
    """P(Bin(trials, p) >= k), summed in log space (no overflow for large trials)."""
    if k <= 0:
        return 1.0
    if k > trials or p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    lp, lq = math.log(p), math.log1p(-p)
    total = 0.0
    for j in range(k, trials + 1):
        total += math.exp(math.lgamma(trials + 1) - math.lgamma(j + 1) - math.lgamma(trials - j + 1)
                          + j * lp + (trials - j) * lq)
    return min(1.0, total)


@dataclass(frozen=True, kw_only=True)
class SplitBound:
    """The bound for one (n, f, o, l), with what it is made of."""

    n: int
    f: int
    sample: int
    q: int
    p: float
    mean: float  # of the binomial: expected votes a replica of the smaller side can count
    per_replica: float  # P(Bin >= q-1)
    bound: float  # min(1, |B| * per_replica)
    chernoff: float  # exp(-(t-mu)^2 / (2 mu + 2 (t-mu)/3)) for t = q-1 > mu, else 1


def split_attack_bound(n: int, f: int, *, o: float = 2.0, l: float = 1.5) -> SplitBound:  # noqa: E741
    """The union bound of the module doc for n replicas, f of them Byzantine."""
    s = sample_size(n, o)
    q = min(s + 1, math.ceil(l * math.sqrt(n)))
    p = s / (n - 1)
    b = (n - f) // 2
    trials = max(0, b - 1 + f)
    per = binomial_tail(trials, p, q - 1)
    mu = trials * p
    t = q - 1
    chernoff = math.exp(-((t - mu) ** 2) / (2 * mu + 2 * (t - mu) / 3)) if t > mu and mu > 0 else 1.0
    if t > trials:
        chernoff = 0.0
    return SplitBound(n=n, f=f, sample=s, q=q, p=p, mean=mu, per_replica=per, bound=min(1.0, b * per),
                      chernoff=min(1.0, b * chernoff))
