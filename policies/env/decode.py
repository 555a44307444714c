"""How an action becomes decisions: a host or a handoff for each request, and migrations off hot hosts.

The same functions serve the env and the placement service, so a trained policy
decides the same way in both. Capacity is enforced here: a request only ever goes
to a host where its memory and vCPUs fit (`Hosts.fits`).

Per request, in arrival order (see `policies.env.layout` for the action blocks):
1. score each local host that fits: host_bias[h] + sum_j weights[j] * feature_j(request, h);
2. the handoff DC is the other DC with the highest handoff score; it counts as having room
   unless the utilisation it gossiped at the start of the step is 100%;
3. keep the request local (best-scoring host) while the DC's utilisation after placing it
   stays at most the keep threshold, or when the handoff DC has no room, is at least as
   full, or the request has used up its handoffs;
4. otherwise (or when no local host fits) hand it to the handoff DC if that has room;
5. else it waits for the next step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from policies.env.hosts import Hosts
from policies.env.layout import FEATURE_MAX, SCORE_FEATURES, SWITCH_ON, Layout, hot_threshold, keep_threshold

UTILISATION_TOLERANCE = 1e-6  # float32 actions round thresholds; a heuristic's "as full as" must still hold


@dataclass(frozen=True, kw_only=True)
class Request:
    """A VM waiting for a place."""

    vcpus: float
    memory_gb: float
    handoffs: int = 0  # how often it was already handed to another data center


@dataclass(frozen=True, kw_only=True)
class Decision:
    """Where one request goes: a host of this DC, another DC, or nowhere yet."""

    kind: Literal["host", "handoff", "wait"]
    target: int = -1  # host slot (kind "host") or data center index (kind "handoff")


@dataclass(frozen=True, kw_only=True)
class Move:
    """One migration: VM `vm` (an index into the caller's VM arrays) to another host."""

    vm: int
    source_host: int
    target_dc: int
    target_host: int
    memory_gb: float
    cpu_demand: float


@dataclass(frozen=True, kw_only=True)
class Rules:
    """One controller's action, read once per step: the rules it applies to every request."""

    dc: int
    host_bias: np.ndarray  # (hosts,)
    weights: np.ndarray  # (len(SCORE_FEATURES),)
    keep_threshold: float  # utilisation up to which requests stay local
    handoff_dc: int  # where handoffs go (-1 with a single data center)
    handoff_dc_utilisation: float  # what the handoff DC gossiped at the start of the step
    hot_threshold: float  # CPU load above which a host is hot
    migrate_remote: bool

    @classmethod
    def from_action(cls, action: np.ndarray, layout: Layout, dc: int, utilisation: list[float]) -> Rules:
        """Read `action` (each entry in [-1, 1]) as data center `dc`'s rules; `utilisation` is every DC's."""
        a = layout.split_action(np.clip(np.asarray(action, np.float64), -1.0, 1.0))
        handoff = a["handoff"]
        handoff_dc = other_dcs(dc, layout.dcs)[int(np.argmax(handoff))] if handoff.size else -1
        migrate = a["migrate"]
        return cls(
            dc=dc,
            host_bias=a["host_bias"],
            weights=a["weights"],
            keep_threshold=keep_threshold(float(a["keep"][0])),
            handoff_dc=handoff_dc,
            handoff_dc_utilisation=utilisation[handoff_dc] if handoff_dc >= 0 else 1.0,
            hot_threshold=hot_threshold(float(migrate[0])),
            migrate_remote=bool(migrate[1] > SWITCH_ON),
        )


def other_dcs(dc: int, dcs: int) -> list[int]:
    """The data centers a handoff slot refers to, in slot order."""
    return [d for d in range(dcs) if d != dc]


def score_features(hosts: Hosts, vcpus: float, memory_gb: float) -> np.ndarray:
    """Host-request features (hosts x 5): memory fill, vCPU fill, CPU load, alignment, active."""
    memory_fill = (hosts.memory_gb_used + memory_gb) / hosts.memory_gb_max
    vcpu_fill = (hosts.vcpus_used + vcpus) / hosts.vcpus_max
    # Tetris (Grandl et al., SIGCOMM 2014): the dot product of the request's demand vector
    # with the host's free vector. The request is normalised to unit length, which keeps
    # the argmax over hosts and puts the feature on the same [0, 1.4] scale as the others.
    dv, dm = vcpus / hosts.vcpus_max.max(), memory_gb / hosts.memory_gb_max.max()
    norm = max(float(np.hypot(dv, dm)), 1e-12)
    alignment = (
        (1.0 - hosts.vcpus_used / hosts.vcpus_max) * dv
        + (1.0 - hosts.memory_gb_used / hosts.memory_gb_max) * dm
    ) / norm
    load = np.minimum(hosts.cpu_load(), FEATURE_MAX)
    features = np.empty((len(hosts), len(SCORE_FEATURES)))
    features[:, 0], features[:, 1], features[:, 2], features[:, 3] = memory_fill, vcpu_fill, load, alignment
    features[:, 4] = hosts.vms > 0
    return features


def host_scores(
    rules: Rules, hosts: Hosts, vcpus: float, memory_gb: float, eligible: np.ndarray | None = None
) -> np.ndarray:
    """Score of each host for this request; -inf where it does not fit (or is not `eligible`)."""
    scores = rules.host_bias + score_features(hosts, vcpus, memory_gb) @ rules.weights
    ok = hosts.fits(vcpus, memory_gb)
    if eligible is not None:
        ok &= eligible
    return np.where(ok, scores, -np.inf)


def best_host(scores: np.ndarray) -> int:
    """The highest-scoring host (lowest slot on ties), or -1 if none fits."""
    best = int(np.argmax(scores))
    return best if np.isfinite(scores[best]) else -1


def decide(
    rules: Rules, hosts: Hosts, request: Request, *, handoffs_max: int, eligible: np.ndarray | None = None
) -> Decision:
    """Where `request`, waiting at data center `rules.dc`, goes (see the module docstring).

    `eligible` (bool per host slot), when given, limits the local hosts it may take.
    """
    host = best_host(host_scores(rules, hosts, request.vcpus, request.memory_gb, eligible))
    target = rules.handoff_dc if request.handoffs < handoffs_max else -1
    if target >= 0 and rules.handoff_dc_utilisation >= 1.0 - UTILISATION_TOLERANCE:
        target = -1  # the other DC is full: handing off would only add WAN traffic
    if host >= 0:
        if target < 0 or rules.keep_threshold >= 1.0 - UTILISATION_TOLERANCE:
            return Decision(kind="host", target=host)
        hosts.add(host, request.vcpus, request.memory_gb)
        after = hosts.utilisation()
        hosts.remove(host, request.vcpus, request.memory_gb)
        if after <= rules.keep_threshold + UTILISATION_TOLERANCE or rules.handoff_dc_utilisation >= after:
            return Decision(kind="host", target=host)
    if target >= 0:
        return Decision(kind="handoff", target=target)
    return Decision(kind="wait")


def plan_migrations(
    rules: Rules,
    hosts_by_dc: list[Hosts],
    *,
    vm_host: np.ndarray,
    vm_vcpus: np.ndarray,
    vm_memory_gb: np.ndarray,
    vm_demand: np.ndarray,
    moves_max: int,
) -> list[Move]:
    """Migrations off data center `rules.dc`'s hot hosts, at most `moves_max`.

    `vm_*` describe the VMs of this data center (`vm_host` is their host slot, -1 for
    VMs to ignore). Hottest host first: the VM moved is the one with the least memory
    among those whose CPU demand brings the host down to the threshold, else the
    busiest one. Its target is the best-scoring local host that fits and stays at or
    below the threshold with it; failing that (and if cross-DC targets are allowed),
    the least-loaded such host in the handoff DC. The hosts are updated as moves are
    planned, so later decisions see earlier ones.
    """
    if math.isinf(rules.hot_threshold) or moves_max <= 0:
        return []
    own = hosts_by_dc[rules.dc]
    remote_dc = rules.handoff_dc if rules.migrate_remote else -1
    vm_host = vm_host.copy()
    moves: list[Move] = []
    for source in np.argsort(-own.cpu_load(), kind="stable"):
        if len(moves) >= moves_max or own.cpu_load()[source] <= rules.hot_threshold:
            break
        on_host = np.flatnonzero(vm_host == source)
        if on_host.size == 0:
            continue
        excess = own.cpu_demand[source] - rules.hot_threshold * own.cores[source]
        enough = on_host[vm_demand[on_host] >= excess]
        vm = int(
            enough[np.argmin(vm_memory_gb[enough])] if enough.size else on_host[np.argmax(vm_demand[on_host])]
        )
        size = (float(vm_vcpus[vm]), float(vm_memory_gb[vm]), float(vm_demand[vm]))
        target_dc, target_host = rules.dc, _local_target(rules, own, int(source), size)
        if target_host < 0 and remote_dc >= 0:
            target_dc, target_host = (
                remote_dc,
                _coolest_fit(hosts_by_dc[remote_dc], size, rules.hot_threshold),
            )
        if target_host < 0:
            continue
        own.remove(int(source), *size)
        hosts_by_dc[target_dc].add(target_host, *size)
        vm_host[vm] = target_host if target_dc == rules.dc else -1
        moves.append(
            Move(
                vm=vm,
                source_host=int(source),
                target_dc=target_dc,
                target_host=target_host,
                memory_gb=size[1],
                cpu_demand=size[2],
            )
        )
    return moves


def _stays_cool(hosts: Hosts, demand: float, threshold: float) -> np.ndarray:
    return (hosts.cpu_demand + demand) <= threshold * hosts.cores


def _local_target(rules: Rules, hosts: Hosts, source: int, size: tuple[float, float, float]) -> int:
    scores = host_scores(rules, hosts, size[0], size[1])
    scores[source] = -np.inf
    scores[~_stays_cool(hosts, size[2], rules.hot_threshold)] = -np.inf
    return best_host(scores)


def _coolest_fit(hosts: Hosts, size: tuple[float, float, float], threshold: float) -> int:
    ok = hosts.fits(size[0], size[1]) & _stays_cool(hosts, size[2], threshold)
    if not ok.any():
        return -1
    return int(np.argmin(np.where(ok, hosts.cpu_load(), np.inf)))
