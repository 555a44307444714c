"""The replicated ledger on Ray: a minority of nodes dies mid-stream; nothing committed is lost."""

from __future__ import annotations

import asyncio
import time

import pytest
import ray

import fabric
from fabric import MigrationConfig, SyntheticSpec

pytestmark = pytest.mark.ray

VMS = 4
MIGRATIONS_PER_VM = 4
DEADLINE_S = 180


@pytest.fixture(scope="module")
def fab():
    """Six nodes, a Raft replica on each: up to two may die."""
    h = fabric.connect(num_cpus=2, include_dashboard=False, fleet=[], ledger={"protocol": "raft"})
    yield h
    ray.shutdown()


def leader_node(h) -> str:
    """The node hosting the current Raft leader (waits for an election)."""
    end = time.monotonic() + 30
    while time.monotonic() < end:
        ledger = h.status()["ledger"]
        if ledger.get("leader") is not None:
            rid = ledger["leader"]
            return next(n["name"] for n in h.status()["nodes"] if (n.get("replica") or {}).get("id") == rid)
        time.sleep(0.2)
    raise AssertionError("no Raft leader within 30 s")


def running_copies(h) -> dict[str, list[str]]:
    """VM -> the live nodes on which it is running."""
    out: dict[str, list[str]] = {}
    for n in h.status()["nodes"]:
        for v in n["vms"]:
            if v["state"] == "running":
                out.setdefault(v["name"], []).append(n["name"])
    return out


def test_killing_a_minority_mid_stream_loses_no_committed_entry_and_no_vm_runs_twice(fab) -> None:
    nodes = [n.name for n in fab.topology().nodes]
    leader = leader_node(fab)
    victims = [leader, next(n for n in nodes if n != leader)]
    survivors = [n for n in nodes if n not in victims]
    assert len(victims) == 2 and len(survivors) == 4
    for i in range(VMS):
        fab.create_vm(f"s-{i}", SyntheticSpec(memory_mib=32, dirty_rate_mbps=5, seed=40 + i),
                      where=survivors[i % len(survivors)])

    killed_at: list[float] = []
    started_after_kill: list = []

    async def stream(i: int) -> list:
        reports = []
        for k in range(MIGRATIONS_PER_VM):
            here = next(v for v in fab.list_vms() if v["vm"] == f"s-{i}")["node"]
            to = survivors[(survivors.index(here) + 1 + k) % len(survivors)]
            if to == here:
                to = survivors[(survivors.index(here) + 1) % len(survivors)]
            m = await asyncio.to_thread(fab.migrate, f"s-{i}", to, wait=False,
                                        config=MigrationConfig(peer_timeout_s=60))
            after = bool(killed_at)
            report = await asyncio.to_thread(m.result, DEADLINE_S)
            reports.append(report)
            if after:
                started_after_kill.append(report)
        return reports

    async def chaos() -> None:
        await asyncio.sleep(2.0)  # a few migrations in, kill the leader and one more replica
        for v in victims:
            ray.kill(fab.node(v), no_restart=True)
        killed_at.append(time.monotonic())

    async def main() -> list:
        results = await asyncio.gather(*(stream(i) for i in range(VMS)), chaos())
        return [r for per_vm in results[:VMS] for r in per_vm]

    reports = asyncio.run(main())
    assert all(r.status in ("completed", "aborted") for r in reports), [r.abort_reason for r in reports]
    completed = [r for r in reports if r.status == "completed"]
    assert len(completed) >= VMS * MIGRATIONS_PER_VM // 2, "the survivors keep a quorum: most complete"
    # the kill landed mid-stream, and the ledger went on committing after it (a new leader)
    assert completed and len(started_after_kill) >= 2, "the kill did not land mid-stream"
    assert any(r.status == "completed" for r in started_after_kill)

    # nothing committed was lost: each VM's last completed migration is what the ledger says now
    ledger = {v["vm"]: v for v in fab.list_vms()}
    for i in range(VMS):
        mine = [r for r in completed if r.vm == f"s-{i}"]
        if mine:
            last = max(mine, key=lambda r: r.epoch)
            assert ledger[f"s-{i}"]["node"] == last.destination
            assert ledger[f"s-{i}"]["epoch"] == last.epoch
    # the surviving replicas agree, and a new leader serves
    assert fab.status()["ledger"]["leader"] is not None

    # no VM runs twice, and each runs exactly where the ledger says
    copies = running_copies(fab)
    for i in range(VMS):
        assert copies.get(f"s-{i}") == [ledger[f"s-{i}"]["node"]], copies
