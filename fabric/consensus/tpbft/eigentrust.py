"""EigenTrust (Kamvar, Schlosser, Garcia-Molina, WWW '03) in exact fixed-point integer arithmetic.

Every replica must compute the same global trust from the same committed log, so
no floats: values are integers scaled by SCALE, and every division rounds down.

    s_ij = sat_ij - unsat_ij                          local trust (Section 3)
    c_ij = max(s_ij, 0) / sum_j max(s_ij, 0)          normalized; a row with no
           (p_j if that sum is 0)                     positive opinion trusts the
                                                      pre-trusted peers (4.4)
    t(0) = p;  t(k+1) = (1 - a) C^T t(k) + a p        Algorithm 2 ("basic EigenTrust"
                                                      with pre-trusted peers, 4.5),
                                                      a fixed number of iterations

p is uniform over the pre-trusted replicas. The pre-trusted weight `a` keeps
malicious collectives from pulling trust to themselves (Section 4.5), and the
fixed iteration count makes the result a function of the inputs alone.
"""

from __future__ import annotations

from collections.abc import Sequence

from fabric.errors import ConfigError

SCALE = 1 << 32  # trust values are integers out of SCALE (a fixed-point 1.0)
ITERATIONS_MAX = 1000


def pre_trusted_vector(n: int, pre_trusted: Sequence[int]) -> list[int]:
    """p: uniform over `pre_trusted` (all replicas if empty), in SCALE units summing to SCALE."""
    peers = sorted(set(pre_trusted)) if pre_trusted else list(range(n))
    if not peers or any(not 0 <= j < n for j in peers):
        raise ConfigError(f"pre-trusted replicas {list(pre_trusted)}: use ids in 0..{n - 1}")
    p = [0] * n
    share, rest = divmod(SCALE, len(peers))
    for k, j in enumerate(peers):
        p[j] = share + (1 if k < rest else 0)  # the remainder to the first ones: the sum is exactly SCALE
    return p


def global_trust(local: Sequence[Sequence[int]], *, pre_trusted: Sequence[int], alpha: int,
                 iterations: int) -> list[int]:
    """t after `iterations` rounds of t = (1-a) C^T t + a p; `local[i][j]` = s_ij, `alpha` = a * SCALE."""
    n = len(local)
    if n == 0 or any(len(row) != n for row in local):
        raise ConfigError("local trust must be a square matrix")
    if not 0 <= alpha <= SCALE:
        raise ConfigError(f"alpha={alpha}: use 0..SCALE (a fraction of {SCALE})")
    if not 1 <= iterations <= ITERATIONS_MAX:
        raise ConfigError(f"iterations={iterations}: use 1..{ITERATIONS_MAX}")
    p = pre_trusted_vector(n, pre_trusted)
    # C as integer numerators over per-row denominators: c_ij = pos[i][j] / den[i].
    pos = [[max(s, 0) if i != j else 0 for j, s in enumerate(row)] for i, row in enumerate(local)]
    den = [sum(row) for row in pos]
    t = list(p)
    for _ in range(iterations):
        nxt = [0] * n
        for i in range(n):
            if t[i] == 0:
                continue
            if den[i] == 0:
                for j in range(n):
                    nxt[j] += t[i] * p[j] // SCALE
            else:
                for j in range(n):
                    if pos[i][j]:
                        nxt[j] += t[i] * pos[i][j] // den[i]
        t = [((SCALE - alpha) * nxt[j] + alpha * p[j]) // SCALE for j in range(n)]
    return t


def ranking(trust: Sequence[int]) -> tuple[int, ...]:
    """Replica ids from most to least trusted; ties go to the lower id (deterministic)."""
    return tuple(sorted(range(len(trust)), key=lambda j: (-trust[j], j)))
