"""The ownership ledger: its rules, its persistence, and scenario scripts with expected output."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fabric.errors import ConfigError, LedgerRejected
from fabric.ledger import (
    AbortMigration,
    BeginMigration,
    CommitMigration,
    LedgerStorageError,
    OwnershipLedger,
    RegisterVm,
    RemoveVm,
    SingleWriterLedger,
    command_from_dict,
    command_to_dict,
)

SCENARIOS = Path(__file__).parent / "scenarios"


def run_script(text: str) -> str:
    """Run a ledger scenario script; return its output (see tests/scenarios/README)."""
    ledger = OwnershipLedger()
    out: list[str] = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#") or line.startswith("  "):
            continue
        out.append(line)
        verb, *args = line.split()
        if verb == "show":
            out += [f"  {r.vm} owner={r.owner} epoch={r.epoch}"
                    + (f" migrating {r.migration.source}->{r.migration.destination}"
                       f"@{r.migration.epoch}" if r.migration else "")
                    for r in ledger.records()] or ["  (empty)"]
            continue
        cmd = {"register": lambda vm, node: RegisterVm(vm=vm, node=node),
               "begin": lambda vm, s, d: BeginMigration(vm=vm, source=s, destination=d),
               "commit": lambda vm, e: CommitMigration(vm=vm, epoch=int(e)),
               "abort": lambda vm, e: AbortMigration(vm=vm, epoch=int(e)),
               "remove": lambda vm, e: RemoveVm(vm=vm, epoch=int(e))}[verb](*args)
        outcome = ledger.apply(cmd)
        if outcome.accepted:
            r = outcome.record
            out.append("  ok" if r is None else f"  ok owner={r.owner} epoch={r.epoch}"
                       + (f" open@{r.migration.epoch}" if r.migration else ""))
        else:
            out.append(f"  rejected: {outcome.reason}")
    return "\n".join(out) + "\n"


@pytest.mark.parametrize("script", sorted(p.name for p in SCENARIOS.glob("ledger_*.txt")))
def test_ledger_scenario(script: str) -> None:
    """Each script's output must match the file (NOVACRON_REWRITE=1 rewrites it for review)."""
    path = SCENARIOS / script
    expected = path.read_text()
    got = run_script(expected)
    if os.environ.get("NOVACRON_REWRITE"):
        path.write_text(got)
    assert got == expected


def test_scenarios_exist() -> None:
    assert len(list(SCENARIOS.glob("ledger_*.txt"))) >= 3


def test_epochs_are_never_reused_even_after_remove() -> None:
    led = OwnershipLedger()
    led.apply(RegisterVm(vm="a", node="n1"))
    begun = led.apply(BeginMigration(vm="a", source="n1", destination="n2")).record
    led.apply(AbortMigration(vm="a", epoch=begun.migration.epoch))
    again = led.apply(BeginMigration(vm="a", source="n1", destination="n3")).record
    assert again.migration.epoch > begun.migration.epoch
    led.apply(CommitMigration(vm="a", epoch=again.migration.epoch))
    led.apply(RemoveVm(vm="a", epoch=again.migration.epoch))
    reborn = led.apply(RegisterVm(vm="a", node="n1")).record
    assert reborn.epoch > again.migration.epoch


def test_snapshot_round_trip_preserves_everything() -> None:
    led = OwnershipLedger()
    led.apply(RegisterVm(vm="a", node="n1"))
    led.apply(BeginMigration(vm="a", source="n1", destination="n2"))
    copy = OwnershipLedger.from_snapshot(led.snapshot())
    assert copy.records() == led.records()
    assert copy.apply(CommitMigration(vm="a", epoch=2)).accepted


def test_commands_round_trip_and_junk_is_refused() -> None:
    cmd = AbortMigration(vm="a", epoch=3, reason="x")
    assert command_from_dict(command_to_dict(cmd)) == cmd
    with pytest.raises(ConfigError):
        command_from_dict({"op": "seize", "vm": "a"})
    with pytest.raises(ConfigError):
        command_from_dict({"op": "commit", "vm": "a"})


def test_single_writer_persists_and_recovers(tmp_path: Path) -> None:
    w = SingleWriterLedger(tmp_path)
    w.submit(RegisterVm(vm="a", node="n1"))
    w.submit(BeginMigration(vm="a", source="n1", destination="n2"))
    with pytest.raises(LedgerRejected, match="already has a migration open"):
        w.submit(BeginMigration(vm="a", source="n1", destination="n3"))
    w.submit(CommitMigration(vm="a", epoch=2))
    w.close()
    again = SingleWriterLedger(tmp_path)
    assert again.index == 3
    assert again.record("a").owner == "n2" and again.record("a").epoch == 2


def test_a_torn_last_line_is_dropped_and_the_log_continues(tmp_path: Path) -> None:
    w = SingleWriterLedger(tmp_path)
    w.submit(RegisterVm(vm="a", node="n1"))
    w.close()
    with open(tmp_path / "ledger.log", "a") as f:
        f.write('{"index": 2, "command": {"op": "beg')  # a crash mid-append
    again = SingleWriterLedger(tmp_path)
    assert again.index == 1
    again.submit(RegisterVm(vm="b", node="n2"))
    again.close()
    assert SingleWriterLedger(tmp_path).index == 2


def test_corruption_in_the_middle_is_refused(tmp_path: Path) -> None:
    w = SingleWriterLedger(tmp_path)
    w.submit(RegisterVm(vm="a", node="n1"))
    w.submit(RegisterVm(vm="b", node="n1"))
    w.close()
    lines = (tmp_path / "ledger.log").read_text().splitlines()
    (tmp_path / "ledger.log").write_text("garbage\n" + lines[1] + "\n")
    with pytest.raises(LedgerStorageError):
        SingleWriterLedger(tmp_path)


def test_compaction_keeps_state_and_bounds_the_log(tmp_path: Path) -> None:
    w = SingleWriterLedger(tmp_path, log_entries_max=5)
    w.submit(RegisterVm(vm="a", node="n1"))
    for i in range(6):
        rec = w.submit(BeginMigration(vm="a", source=w.record("a").owner, destination=f"n{i + 2}"))
        w.submit(CommitMigration(vm="a", epoch=rec.migration.epoch))
    w.close()
    assert len((tmp_path / "ledger.log").read_text().splitlines()) < 5
    again = SingleWriterLedger(tmp_path, log_entries_max=5)
    assert again.index == 13 and again.record("a").owner == "n7"
