"""Seeded fault campaigns: 2,000 runs per protocol with zero violations, and proof they can fail.

Each run draws faults inside the protocol's fault model (delays, drops,
duplicates, reordering, symmetric / one-way / flapping / leader-isolating
partitions, crashes and restarts of any replica or of the leader, and for PBFT
up to f Byzantine replicas), checks linearizability per VM, one owner per epoch
and equal committed prefixes, then heals and checks every operation completes
within the liveness bound. The mutation tests plant known protocol bugs and
require the campaign to find them, so a checker that passes everything would fail here.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from fabric.consensus.pbft import core as pbft_core
from fabric.consensus.raft import log as raft_log
from fabric.errors import ConfigError
from fabric.ledger import replicated
from fabric.sim import CampaignConfig, CampaignResult, RunConfig, run_campaign, run_seed

CI_SEEDS = 2_000
# Processes for the long campaigns (the CI machine has 2 cores). The mutation tests stay in this
# process: a worker imports the code afresh, without this process's monkeypatches.
WORKERS = 2


def campaign(protocol: str, seeds: int, start: int = 0, workers: int = 1) -> CampaignResult:
    return run_campaign(CampaignConfig(run=RunConfig(protocol=protocol), seeds=seeds, start=start,
                                       workers=workers))


def _explain(r: CampaignResult) -> str:
    return "\n".join(f"seed {f['seed']}: {f['safety'][:1]} {f['liveness'][:1]}" for f in r.failures[:5])


def test_raft_survives_2000_seeded_runs_of_crash_faults() -> None:
    r = campaign("raft", CI_SEEDS, workers=WORKERS)
    assert r.runs == CI_SEEDS
    assert r.failing_seeds == [], _explain(r)
    assert r.inconclusive == 0
    # The faults really happened, and so did the protocol paths they should provoke.
    f, c = r.faults, r.replica_counters
    for kind in ("dropped", "duplicated", "reordered", "partitions", "one_way", "flapping",
                 "leader_isolations", "crashes_done", "leader_crashes"):
        assert f[kind] > 0, kind
    assert f["byzantine"] == 0
    assert c["became_leader"] > r.runs and c["snapshots_installed"] > 0 and c["stepped_down_no_quorum"] > 0
    assert r.decisions > 0.7 * r.ops  # the rest were abandoned during faults, never after the heal


def test_pbft_survives_2000_seeded_runs_with_byzantine_replicas() -> None:
    r = campaign("pbft", CI_SEEDS, workers=WORKERS)
    assert r.runs == CI_SEEDS
    assert r.failing_seeds == [], _explain(r)
    assert r.inconclusive == 0
    f, c = r.faults, r.replica_counters
    for kind in ("dropped", "duplicated", "reordered", "partitions", "leader_isolations", "crashes_done",
                 "byzantine"):
        assert f[kind] > 0, kind
    for path in ("views_entered", "new_views_sent", "checkpoints_stable", "states_installed", "restarts",
                 "dropped_bad_signature"):
        assert c[path] > 0, path
    assert r.decisions > 0.7 * r.ops


def test_parallel_campaigns_give_the_sequential_result() -> None:
    # Workers do not see monkeypatches, so failures come from an impossible liveness bound:
    # more failing runs than a campaign keeps the details of, so the kept ones' order counts too.
    for cfg in (CampaignConfig(run=RunConfig(protocol="pbft"), seeds=24, start=7),
                CampaignConfig(run=RunConfig(protocol="raft", liveness_ms=20), seeds=40)):
        one, two = run_campaign(cfg), run_campaign(replace(cfg, workers=2))
        a, b = one.to_dict(), two.to_dict()
        a.pop("wall_s"), b.pop("wall_s")
        assert a == b
    assert len(one.failing_seeds) > len(one.failures) > 0
    with pytest.raises(ConfigError, match="workers"):
        CampaignConfig(run=RunConfig(protocol="raft"), seeds=1, workers=0).validate()


# -- the campaign can fail: planted bugs are found ------------------------------------------------


def test_a_raft_that_votes_for_stale_logs_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    # Rarer than the others (16 of the first 300 seeds when written); this window held 5, and
    # no run that storms until the event budget (some broken runs take 30 s to get there).
    monkeypatch.setattr(raft_log.RaftLog, "is_up_to_date", lambda self, index, term: True)
    r = campaign("raft", 50, start=140)
    assert r.safety_violations > 0


def test_a_state_machine_without_deduplication_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replicated.LedgerStateMachine, "apply", lambda self, request: self._execute(request))
    monkeypatch.setattr(replicated.LedgerStateMachine, "cached_result", lambda self, request: (False, None))
    r = campaign("raft", 60)
    assert r.safety_violations > 0
    assert any("not linearizable" in line for f in r.failures for line in f["safety"])


def test_a_pbft_that_commits_without_a_quorum_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    def commit_on_own_vote(self: pbft_core.PbftReplica, slot: object) -> None:
        if slot.prepared and not slot.committed:
            slot.committed = True
            self._execute()

    monkeypatch.setattr(pbft_core.PbftReplica, "_check_committed", commit_on_own_vote)
    r = campaign("pbft", 100, start=60)  # 6 of the first 200 seeds when written; this window held 2
    assert r.safety_violations > 0


def test_a_pbft_new_view_that_drops_prepared_requests_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = pbft_core.PbftReplica._new_view_plan

    def forgetful(self: pbft_core.PbftReplica, vcs: object) -> object:
        min_s, base, steps = plan(self, vcs)
        return min_s, base, [(s, pbft_core.NULL_DIGEST, ()) for s, _, _ in steps]

    monkeypatch.setattr(pbft_core.PbftReplica, "_new_view_plan", forgetful)
    r = campaign("pbft", 30)
    assert r.safety_violations > 0


def test_a_failing_seed_replays_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replicated.LedgerStateMachine, "apply", lambda self, request: self._execute(request))
    monkeypatch.setattr(replicated.LedgerStateMachine, "cached_result", lambda self, request: (False, None))
    cfg = CampaignConfig(run=RunConfig(protocol="raft"), seeds=1)
    failing = next(seed for seed in range(60) if run_seed(cfg, seed).safety_violations)
    first, again = run_seed(cfg, failing), run_seed(cfg, failing)
    assert first == again and first.safety_violations
