"""Consensus scenario scripts (tests/scenarios/raft_*.txt, pbft_*.txt): output must match.

`NOVACRON_REWRITE=1 python -m pytest tests/test_consensus_scenarios.py` rewrites
the expected output from what the code does now, for review in the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fabric.consensus.raft import core as raft_core
from fabric.sim.script import run_script

SCENARIOS = Path(__file__).parent / "scenarios"
SCRIPTS = [p.name for pattern in ("raft_*.txt", "pbft_*.txt") for p in sorted(SCENARIOS.glob(pattern))]


@pytest.mark.parametrize("script", SCRIPTS)
def test_consensus_scenario(script: str) -> None:
    """Each script's output must match the file."""
    path = SCENARIOS / script
    expected = path.read_text()
    got = run_script(expected)
    if os.environ.get("NOVACRON_REWRITE"):
        path.write_text(got)
    assert got == expected


def test_the_required_scenarios_exist() -> None:
    names = set(SCRIPTS)
    for required in ("raft_election_prevote", "raft_leader_change", "raft_snapshot_install",
                     "raft_membership", "raft_read_index", "raft_figure8", "pbft_normal", "pbft_view_change",
                     "pbft_checkpoint_gc", "pbft_byzantine_primary"):
        assert f"{required}.txt" in names


def test_figure8_script_catches_a_leader_that_commits_old_terms_by_counting(monkeypatch) -> None:
    """The script is a real check: a Raft that forgets Raft 5.4.2 produces different output."""
    def counting_commit(self: raft_core.RaftReplica) -> None:
        voters = self.voters
        matches = sorted((self.log.last_index if v == self._id else
                          (self._progress[v].match if v in self._progress else 0)) for v in voters)
        self.commit = max(self.commit, matches[len(voters) - (len(voters) // 2 + 1)])

    monkeypatch.setattr(raft_core.RaftReplica, "_maybe_commit", counting_commit)
    text = (SCENARIOS / "raft_figure8.txt").read_text()
    got = run_script(text)
    assert got != text
    assert "applied 2 c#1 register vm-1 dc1" in got  # the lost write was applied and acknowledged


def test_read_index_script_catches_reads_without_a_quorum(monkeypatch) -> None:
    """A leader that answers reads without confirming its leadership returns stale state."""
    def serve_now(self: raft_core.RaftReplica) -> None:
        while self._reads and self._reads[0].index <= self.applied:
            pending = self._reads.popleft()
            self._reply(pending.request, "ok", self._sm.query(pending.request))

    monkeypatch.setattr(raft_core.RaftReplica, "_serve_reads", serve_now)
    text = (SCENARIOS / "raft_read_index.txt").read_text()
    got = run_script(text)
    assert got != text
    assert "reply c2#1 -> ok dc1@1\n" in got  # the cut-off leader's stale answer
