"""The fabric on a real (embedded) Ray: actors, migrations, failures, typed errors, metrics.

One Ray session for the module. The destructive test (a killed node) runs last.
"""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import ray

import fabric
from actors.names import NAMESPACE
from fabric import (
    ConfigError,
    FaultPlan,
    FencedError,
    LedgerRejected,
    MalformedBatchError,
    MigrationConfig,
    ReplaySpec,
    SyntheticSpec,
    UnknownNodeError,
    UnknownVmError,
)
from fabric.memory import PageStore, make_workload, spec_from_dict

pytestmark = pytest.mark.ray

DEADLINE_S = 120


@pytest.fixture(scope="module")
def fab():
    """An embedded fabric: three emulated data centers, two nodes each, no default VMs."""
    h = fabric.connect(num_cpus=2, include_dashboard=False, fleet=[])
    yield h
    ray.shutdown()


def expected_memory(spec: dict, guest_time_s: float) -> np.ndarray:
    """What the workload must have written by `guest_time_s`, recomputed in this process."""
    w = make_workload(spec_from_dict(spec))
    mem = PageStore(w.pages)
    w.boot(mem)
    w.run(mem, 0.0, guest_time_s)
    return mem.view()


def frozen_memory(fab, vm: str) -> tuple[np.ndarray, float, dict]:
    """Pause `vm` where it runs; return its memory, guest time and workload spec."""
    where = next(v for v in fab.list_vms() if v["vm"] == vm)["node"]
    node = fab.node(where)
    info = ray.get(node.pause_vm.remote(vm))
    memory = ray.get(node.vm_memory.remote(vm))
    device = ray.get(node.vm_info.remote(vm))
    ray.get(node.resume_vm.remote(vm))
    return memory, info["guest_time_s"], device


def vm_row(fab, vm: str) -> dict:
    return next(v for v in fab.list_vms() if v["vm"] == vm)


def wait_for(pred, what: str, timeout_s: float = 30.0):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_actors_are_named_by_role_and_pinned_to_their_data_center(fab) -> None:
    names = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
             if a["namespace"] == NAMESPACE}
    assert "fabric/controller" in names
    ledger = fab.status()["ledger"]  # replicated: a replica in each of the first nodes, no ledger actor
    assert ledger["kind"] == "raft" and ledger["replicas"] == 6 and "fabric/ledger" not in names
    assert {f"fabric/node/{dc}-{i}" for dc in ("us-east", "us-west", "eu-west") for i in (1, 2)} <= names
    topo = fab.topology()
    assert topo.emulated and topo.pinning == "resources"
    for n in fab.status()["nodes"]:
        assert n["dc"] == topo.node(n["name"]).dc


def test_migration_during_writes_is_byte_identical_and_runs_only_at_the_destination(fab) -> None:
    spec = SyntheticSpec(memory_mib=96, dirty_rate_mbps=80, hot_set_mib=24, seed=11)
    fab.create_vm("busy-1", spec, where="us-east-1")
    fab.create_vm("still-1", SyntheticSpec(memory_mib=32, dirty_rate_mbps=0, seed=18), where="us-east-1")
    time.sleep(1.0)
    # Each node measures the CPU time its guests use: the 80 MB/s writer is busy, the idle guest is not.
    busy = {v["name"]: v["cpu_busy"] for v in ray.get(fab.node("us-east-1").describe.remote())["vms"]}
    assert busy["busy-1"] > 0.001 and busy["busy-1"] > 10 * busy["still-1"], busy
    assert vm_row(fab, "busy-1")["cpu_busy"] == pytest.approx(busy["busy-1"], rel=0.5)
    fab.delete_vm("still-1")
    r = fab.migrate("busy-1", "eu-west", config=MigrationConfig(verify="full", downtime_ms_limit=50,
                                                               on_limit="switchover"))
    assert r.status == "completed", r.abort_reason
    assert r.source == "us-east-1" and r.destination.startswith("eu-west")
    assert r.pages_transferred > 0 and sum(s.dirty_pages for s in r.round_stats) > 0
    # the destination rehashed every page: same memory as the source at its stop
    assert r.source_digest == r.destination_digest
    row = vm_row(fab, "busy-1")
    assert row["node"] == r.destination and row["state"] == "running" and row["epoch"] == r.epoch
    src = fab.node("us-east-1")
    assert "busy-1" not in [v["name"] for v in ray.get(src.describe.remote())["vms"]]
    # what runs there now is the same guest, continued: recompute it from its spec and clock
    memory, guest_time, _ = frozen_memory(fab, "busy-1")
    assert guest_time > 0.5
    assert np.array_equal(memory, expected_memory(
        {"kind": "synthetic", "memory_mib": 96, "dirty_rate_mbps": 80, "hot_set_mib": 24, "seed": 11},
        guest_time))


def test_real_capture_replay_migrates_intact(fab, kv_slice: Path) -> None:
    raw = {"kind": "replay", "path": str(kv_slice), "time_scale": 8.0, "loop": True,
           "first_gap": "median", "seed": 0}
    fab.create_vm("kv-slice-1", ReplaySpec(path=str(kv_slice), time_scale=8.0), where="us-west")
    time.sleep(0.3)
    r = fab.migrate("kv-slice-1", "us-east")
    assert r.status == "completed", r.abort_reason
    assert r.source_digest == r.destination_digest
    memory, guest_time, _ = frozen_memory(fab, "kv-slice-1")
    assert np.array_equal(memory, expected_memory(raw, guest_time))


def test_progress_is_visible_while_a_migration_runs(fab) -> None:
    fab.create_vm("slow-1", SyntheticSpec(memory_mib=64, dirty_rate_mbps=5, seed=12), where="us-west")
    m = fab.migrate("slow-1", "eu-west", wait=False, config=MigrationConfig(max_bandwidth_mbps=40))
    p = wait_for(lambda: (m.progress().get("progress") or {}).get("pages_transferred"),
                 "pages to move")
    assert p > 0
    r = m.result(timeout=DEADLINE_S, check=True)
    assert r.status == "completed" and m.done()
    assert r.throughput_mbps <= 40 * 1.1


def test_an_engine_exception_aborts_and_leaves_the_vm_running_at_the_source(fab) -> None:
    raw = {"kind": "synthetic", "memory_mib": 64, "dirty_rate_mbps": 30, "hot_set_mib": 16, "seed": 13}
    fab.create_vm("fault-1", spec_from_dict(raw), where="us-east")
    src = vm_row(fab, "fault-1")["node"]
    r = fab.migrate("fault-1", "us-west", faults=FaultPlan(engine_error_at_round=0))
    assert r.status == "aborted" and "injected engine error" in r.abort_reason
    row = vm_row(fab, "fault-1")
    assert row["node"] == src and row["state"] == "running" and row["migrating_to"] is None
    memory, guest_time, _ = frozen_memory(fab, "fault-1")
    assert np.array_equal(memory, expected_memory(raw, guest_time))
    # and it can still migrate afterwards
    assert fab.migrate("fault-1", "us-west").status == "completed"


@pytest.mark.parametrize(("fault", "error"), [({"tamper_batch_seq": 1}, "TamperedFrameError"),
                                              ({"replay_batch_seq": 0}, "ReplayedFrameError")])
def test_a_tampered_or_replayed_frame_aborts_and_the_vm_stays_at_the_source(fab, fault, error) -> None:
    raw = {"kind": "synthetic", "memory_mib": 96, "dirty_rate_mbps": 10, "hot_set_mib": 16,
           "seed": 14 + len(fault)}
    name = f"frames-{next(iter(fault))}"
    fab.create_vm(name, spec_from_dict(raw), where="us-east")
    src = vm_row(fab, name)["node"]
    r = fab.migrate(name, "eu-west", faults=fault, config=MigrationConfig(codec="raw"))
    assert r.status == "aborted" and error in r.abort_reason, r.abort_reason
    row = vm_row(fab, name)
    assert row["node"] == src and row["state"] == "running" and row["migrating_to"] is None
    memory, guest_time, _ = frozen_memory(fab, name)
    assert np.array_equal(memory, expected_memory(raw, guest_time))
    assert fab.migrate(name, "eu-west").status == "completed"  # and a clean retry goes through


def test_junk_sent_to_a_node_is_refused_typed(fab) -> None:
    fab.create_vm("target-1", SyntheticSpec(memory_mib=64, dirty_rate_mbps=5, seed=14), where="us-east")
    m = fab.migrate("target-1", "eu-west-2", wait=False, config=MigrationConfig(max_bandwidth_mbps=8))
    prog = wait_for(lambda: (m.progress().get("progress") or {}).get("pages_transferred") and
                    m.progress(), "the migration to start")
    dst = fab.node("eu-west-2")
    with pytest.raises(MalformedBatchError, match="list of transport chunks"):
        ray.get(dst.receive_chunks.remote("target-1", prog["epoch"], b"\x00" * 4096))
    with pytest.raises(MalformedBatchError, match="list of transport chunks"):
        ray.get(dst.receive_chunks.remote("target-1", prog["epoch"], [{"data": b"x"}]))
    with pytest.raises(fabric.VmStateError):  # no such incoming migration
        ray.get(dst.receive_chunks.remote("target-1", prog["epoch"] + 7, []))
    with pytest.raises(MalformedBatchError, match="probe"):
        ray.get(dst.probe.remote("target-1", prog["epoch"], np.zeros(8 << 20, np.uint8)))
    # none of it touched the migration in flight
    r = m.result(timeout=DEADLINE_S)
    assert r.status == "completed", r.abort_reason
    assert r.source_digest == r.destination_digest


def test_fencing_a_node_only_takes_or_runs_what_the_ledger_gives_it(fab) -> None:
    fab.create_vm("fenced-1", SyntheticSpec(memory_mib=64, seed=15), where="us-west-1")
    other = fab.node("us-west-2")
    with pytest.raises(FencedError):  # no migration is open to it
        ray.get(other.prepare_incoming.remote("fenced-1", 99, 4096, "us-west-1", b""))
    m = fab.migrate("fenced-1", "us-west-2", wait=False, config=MigrationConfig(max_bandwidth_mbps=8))
    epoch = wait_for(lambda: (m.progress().get("progress") or {}).get("pages_transferred")
                     and m.progress()["epoch"], "the migration to start")
    with pytest.raises(FencedError):  # before the commit, the destination may not start it
        ray.get(other.activate_incoming.remote("fenced-1", epoch))
    assert m.result(timeout=DEADLINE_S).status == "completed"


def test_typed_errors_for_bad_requests(fab) -> None:
    with pytest.raises(UnknownVmError):
        fab.migrate("no-such-vm", "eu-west")
    fab.create_vm("err-1", SyntheticSpec(memory_mib=16, seed=16), where="eu-west-1")
    with pytest.raises(UnknownNodeError):
        fab.migrate("err-1", "mars-north")
    with pytest.raises(ConfigError, match="already on"):
        fab.migrate("err-1", "eu-west-1")
    with pytest.raises(ConfigError, match="unknown migration config keys"):
        fab.migrate("err-1", "us-east", config={"downtime": 5})
    with pytest.raises(LedgerRejected):
        fab.create_vm("err-1", SyntheticSpec(memory_mib=16, seed=16))
    with pytest.raises(ConfigError):
        fab.create_vm("err-2", {"kind": "synthetic", "memory_mib": -1})
    with pytest.raises(fabric.CapacityError):
        fab.create_vm("huge-1", SyntheticSpec(memory_mib=64 * 1024))
    m = fab.migrate("err-1", "us-east", wait=False, config=MigrationConfig(max_bandwidth_mbps=5))
    with pytest.raises(LedgerRejected, match="already has a migration open"):
        fab.migrate("err-1", "us-west")
    assert m.result(timeout=DEADLINE_S).status == "completed"
    assert {"huge-1", "err-2"}.isdisjoint(v["vm"] for v in fab.list_vms())


def test_metrics_reach_prometheus_tagged_by_data_center(fab) -> None:
    port = ray.nodes()[0]["MetricsExportPort"]

    def scrape() -> str | None:
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        except OSError:
            return None
        return text if "novacron_migrations_completed" in text else None
    text = wait_for(scrape, "the fabric's metrics on the Prometheus endpoint", timeout_s=60)
    completed = [line for line in text.splitlines()
                 if line.startswith("ray_novacron_migrations_completed") and 'dc="us-east"' in line]
    assert completed and any(float(line.rsplit(" ", 1)[1]) >= 1 for line in completed)
    assert re.search(r'ray_novacron_migration_downtime_ms_bucket\{[^}]*dc="', text)
    assert re.search(r'ray_novacron_migration_wire_bytes[_a-z]*\{[^}]*dst_dc="eu-west"', text)


def test_evacuating_a_node_moves_every_vm_off_it_within_its_data_center(fab) -> None:
    for i in range(3):
        fab.create_vm(f"evac-{i}", SyntheticSpec(memory_mib=32, dirty_rate_mbps=5, seed=60 + i),
                      where="us-west-2")
    reports = fab.evacuate("us-west-2", concurrency=2)
    assert sorted(r.vm for r in reports if r.vm.startswith("evac-")) == ["evac-0", "evac-1", "evac-2"]
    assert all(r.status == "completed" for r in reports), [r.abort_reason for r in reports]
    rows = {v["vm"]: v for v in fab.list_vms()}
    assert not [v for v in rows.values() if v["node"] == "us-west-2"]
    assert {rows[f"evac-{i}"]["node"] for i in range(3)} == {"us-west-1"}  # same data center first
    with pytest.raises(ConfigError):
        fab.evacuate("us-west-2", concurrency=0)


def test_killing_the_destination_mid_migration_leaves_the_vm_running_at_the_source(fab) -> None:
    raw = {"kind": "synthetic", "memory_mib": 128, "dirty_rate_mbps": 20, "hot_set_mib": 32, "seed": 17}
    fab.create_vm("victim-1", spec_from_dict(raw), where="us-west-1")
    m = fab.migrate("victim-1", "eu-west-1", wait=False, config=MigrationConfig(max_bandwidth_mbps=30))
    wait_for(lambda: (m.progress().get("progress") or {}).get("pages_transferred", 0) > 2048,
             "a few batches to arrive")
    ray.kill(fab.node("eu-west-1"), no_restart=True)
    r = m.result(timeout=DEADLINE_S)
    assert r.status == "aborted" and "died" in r.abort_reason
    assert r.vm_location == "us-west-1"
    row = vm_row(fab, "victim-1")
    assert row["node"] == "us-west-1" and row["state"] == "running" and row["migrating_to"] is None
    memory, guest_time, _ = frozen_memory(fab, "victim-1")
    assert np.array_equal(memory, expected_memory(raw, guest_time))
    # the fabric keeps working around the dead node, and says it is dead
    dead = next(n for n in fab.status()["nodes"] if n["name"] == "eu-west-1")
    assert "unreachable" in dead["error"]
    assert fab.migrate("victim-1", "eu-west").destination == "eu-west-2"
