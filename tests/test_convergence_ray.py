"""Convergence on Ray: a guest that dirties memory faster than the link sends it.

It converges with auto-converge or with post-copy, and aborts cleanly with
both off; post-copy survives a partitioned link and resumes when it is back.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import ray

import fabric
from fabric import MigrationConfig, SyntheticSpec
from fabric.memory import PageStore, make_workload, spec_from_dict, spec_to_dict

pytestmark = pytest.mark.ray

# 400 Mbit/s = 50 MB/s; the guest dirties 100 MB/s of raw pages: twice the link.
LINK = {"bandwidth_bps": 400e6, "rtt_s": 0.02, "jitter_s": 0.0005, "loss": 0.0}
WRITER = SyntheticSpec(memory_mib=64, dirty_rate_mbps=100, hot_set_mib=32, seed=71)


@pytest.fixture(scope="module")
def fab():
    """An embedded fabric with one fast writer."""
    h = fabric.connect(num_cpus=2, include_dashboard=False, fleet=[])
    h.create_vm("hot-1", WRITER, where="us-east-1")
    yield h
    ray.shutdown()


def where(fab, vm: str) -> str:
    return next(v for v in fab.list_vms() if v["vm"] == vm)["node"]


def other(fab, vm: str) -> str:
    return "us-east-2" if where(fab, vm) == "us-east-1" else "us-east-1"


def check_memory(fab, vm: str) -> None:
    """Pause the guest where it runs; its memory must be its own timeline, recomputed here."""
    node = fab.node(where(fab, vm))
    info = ray.get(node.pause_vm.remote(vm))
    memory = ray.get(node.vm_memory.remote(vm))
    ray.get(node.resume_vm.remote(vm))
    w = make_workload(spec_from_dict(spec_to_dict(WRITER)))
    expected = PageStore(w.pages)
    w.boot(expected)
    w.run(expected, 0.0, info["guest_time_s"])
    assert np.array_equal(memory, expected.view())


def test_with_both_off_a_too_fast_writer_aborts_cleanly(fab) -> None:
    src = where(fab, "hot-1")
    r = fab.migrate("hot-1", other(fab, "hot-1"),
                    config=MigrationConfig(link=LINK, codec="raw", rounds_max=4, downtime_ms_limit=300))
    assert r.status == "aborted" and "did not converge" in r.abort_reason
    assert where(fab, "hot-1") == src and r.throttle_steps == 0 and not r.postcopy
    check_memory(fab, "hot-1")


def test_auto_converge_throttles_it_until_it_converges(fab) -> None:
    r = fab.migrate("hot-1", other(fab, "hot-1"),
                    config=MigrationConfig(link=LINK, codec="raw", auto_converge=True, rounds_max=80,
                                           bytes_max_factor=60, downtime_ms_limit=300))
    assert r.status == "completed", r.abort_reason
    assert r.throttle_steps >= 1 and r.switchover_reason == "converged"
    assert r.source_digest == r.destination_digest
    node = fab.node(where(fab, "hot-1"))
    assert ray.get(node.vm_info.remote("hot-1"))["state"] == "running"
    check_memory(fab, "hot-1")


def test_post_copy_moves_it_and_every_page_arrives(fab) -> None:
    r = fab.migrate("hot-1", other(fab, "hot-1"),
                    config=MigrationConfig(link=LINK, codec="raw", postcopy=True, postcopy_after_rounds=2,
                                           downtime_ms_limit=300))
    assert r.status == "completed", r.abort_reason
    assert r.postcopy and r.postcopy_pages > 0 and r.faults["faults"] > 0
    assert r.source_digest == r.destination_digest  # the received image is the frozen source
    # a fault waits behind at most two 1 MiB batches and a round trip, plus Ray's cost here
    assert r.faults["fault_ms_max"] < 2000
    check_memory(fab, "hot-1")


def test_post_copy_survives_a_partitioned_link_and_resumes_when_it_is_back(fab) -> None:
    t0 = time.monotonic()
    r = fab.migrate("hot-1", other(fab, "hot-1"),
                    config=MigrationConfig(link=LINK, codec="raw", postcopy=True, postcopy_after_rounds=2,
                                           peer_timeout_s=5, downtime_ms_limit=300),
                    faults={"link_down_in_postcopy_s": 8.0})
    assert r.status == "completed", r.abort_reason
    assert r.postcopy and r.postcopy_recoveries >= 1
    assert r.source_digest == r.destination_digest
    assert time.monotonic() - t0 > 8  # it waited the partition out
    check_memory(fab, "hot-1")


def test_losing_the_source_in_post_copy_is_reported_as_a_failure_not_a_completion(fab) -> None:
    """docs/postcopy.md: pages not pushed yet exist only at the source; losing it loses the guest."""
    fab.create_vm("doomed-1", SyntheticSpec(memory_mib=64, dirty_rate_mbps=100, hot_set_mib=32, seed=72),
                  where="us-east-1")
    m = fab.migrate("doomed-1", "us-east-2", wait=False,
                    config=MigrationConfig(link=LINK, codec="raw", postcopy=True, postcopy_after_rounds=2,
                                           postcopy_recovery_s_max=10, downtime_ms_limit=300),
                    faults={"link_down_in_postcopy_s": 60.0})  # post-copy stalls with pages left
    deadline = time.monotonic() + 60
    while (m.progress().get("progress") or {}).get("phase") not in ("postcopy", "postcopy-recovering"):
        assert time.monotonic() < deadline and not m.done(), m.progress()
        time.sleep(0.05)
    ray.kill(fab.node("us-east-1"), no_restart=False)  # the source's process dies with its memory
    r = m.result(timeout=120)
    assert r.status == "failed" and r.vm_location == "us-east-2"
    assert "existed only at the source" in r.abort_reason, r.abort_reason
