"""Workloads and the VM: real replays, synthetic writers, determinism in guest time, capture checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zstandard

from fabric.errors import CaptureFormatError, ConfigError, VmStateError
from fabric.memory import (
    PAGE_SIZE,
    PageStore,
    ReplaySpec,
    RunState,
    SyntheticSpec,
    Vm,
    make_workload,
    spec_from_dict,
    spec_to_dict,
)
from fabric.traces import GuestCapture


def run_in_steps(spec, steps: list[float]) -> PageStore:
    """Boot a workload and run it through guest times `steps`."""
    w = make_workload(spec)
    mem = PageStore(w.pages)
    w.boot(mem)
    t = 0.0
    for s in steps:
        w.run(mem, t, s)
        t = s
    return mem


# -- synthetic -------------------------------------------------------------------------------

def test_synthetic_writes_at_the_stated_rate_into_the_hot_set() -> None:
    spec = SyntheticSpec(memory_mib=16, dirty_rate_mbps=8.192, hot_set_mib=2, seed=5)
    w = make_workload(spec)
    mem = PageStore(w.pages)
    w.boot(mem)
    mem.take_dirty()
    written = w.run(mem, 0.0, 1.0)
    assert written == 2000  # 8.192 MB/s / 4096 B = 2000 page writes per second
    dirty = mem.take_dirty()
    assert 0 < dirty.size <= 512  # a 2 MiB hot set is 512 pages
    assert set(dirty.tolist()) <= set(w._hot.tolist())


def test_synthetic_content_is_realistic_not_random() -> None:
    mem = run_in_steps(SyntheticSpec(memory_mib=16, seed=1), [])
    data = mem.view()
    zero = ~data.any(axis=1)
    assert 0.2 < zero.mean() < 0.5  # real guests hold many zero pages
    ratio = len(zstandard.ZstdCompressor(level=1).compress(data[~zero].tobytes())) / data[~zero].nbytes
    assert ratio < 0.6, f"non-zero pages compress to {ratio:.2f}: too close to random"
    assert np.unique(data[~zero], axis=0).shape[0] > 0.5 * (~zero).sum()  # not a few repeated pages


def test_synthetic_is_deterministic_in_guest_time_whatever_the_steps() -> None:
    spec = SyntheticSpec(memory_mib=8, dirty_rate_mbps=40, hot_set_mib=1, seed=9)
    coarse = run_in_steps(spec, [0.5, 1.0])
    fine = run_in_steps(spec, list(np.linspace(0.003, 1.0, 337)))
    assert coarse.full_digest() == fine.full_digest()
    other_seed = run_in_steps(SyntheticSpec(memory_mib=8, dirty_rate_mbps=40, hot_set_mib=1, seed=10),
                              [1.0])
    assert other_seed.full_digest() != coarse.full_digest()


def test_spec_round_trips_and_rejects_nonsense() -> None:
    spec = SyntheticSpec(memory_mib=32, dirty_rate_mbps=5, seed=3)
    assert spec_from_dict(json.loads(json.dumps(spec_to_dict(spec)))) == spec
    with pytest.raises(ConfigError):
        spec_from_dict({"kind": "quantum"})
    with pytest.raises(ConfigError):
        spec_from_dict({"kind": "synthetic", "memory_mib": 0})
    with pytest.raises(ConfigError):
        spec_from_dict({"kind": "synthetic", "memory_mib": 8, "hot_set_mib": 9})
    with pytest.raises(ConfigError):
        spec_from_dict({"kind": "replay", "path": "x", "time_scale": 0})


# -- replay of real captures -------------------------------------------------------------------

def test_replay_boots_the_real_base_and_ends_at_base_plus_all_deltas(kv_slice: Path) -> None:
    cap = GuestCapture(kv_slice)
    expected = cap.read_base()
    spec = ReplaySpec(path=str(kv_slice), loop=False)
    booted = run_in_steps(spec, [])
    assert np.array_equal(booted.view(), expected)
    for k in range(1, cap.meta.deltas + 1):
        idx, pages = cap.read_delta(k)
        expected[idx] = pages
    w = make_workload(spec)
    end = sum(w._gaps) + 1.0
    replayed = run_in_steps(spec, list(np.linspace(0.01, end, 123)))
    assert np.array_equal(replayed.view(), expected)


def test_replay_spreads_each_delta_over_its_gap(kv_slice: Path) -> None:
    spec = ReplaySpec(path=str(kv_slice), loop=False)
    w = make_workload(spec)
    mem = PageStore(w.pages)
    w.boot(mem)
    half = w.run(mem, 0.0, w._gaps[0] / 2)
    n1 = GuestCapture(kv_slice).meta.changed_pages[0]
    assert abs(half - n1 / 2) <= 1
    # first gap: the median of the others, not the 75 s the guest spent setting up
    assert w._gaps[0] == pytest.approx(float(np.median(w._gaps[1:])))


def test_replay_is_deterministic_and_loops(kv_slice: Path) -> None:
    spec = ReplaySpec(path=str(kv_slice), loop=True, time_scale=4.0, seed=1)
    period = sum(make_workload(spec)._gaps)
    a = run_in_steps(spec, [period * 2.5])
    b = run_in_steps(spec, list(np.linspace(0.05, period * 2.5, 211)))
    assert a.full_digest() == b.full_digest()
    w = make_workload(spec)
    mem = PageStore(w.pages)
    w.boot(mem)
    assert w.run(mem, period * 1.1, period * 1.2) > 0  # still writing after the last delta


def test_real_kv_capture_replays_its_real_dirty_rate(kv_capture: Path) -> None:
    """The full capture: ~15.5k changed pages per dump gap of ~4.7 s, i.e. ~13 MB/s of page writes."""
    w = make_workload(ReplaySpec(path=str(kv_capture)))
    mem = PageStore(w.pages)
    w.boot(mem)
    mem.take_dirty()
    n = w.run(mem, 0.0, 1.0)
    assert 2500 < n < 4500
    assert mem.take_dirty().size == n


def _broken_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_capture_checks_reject_bad_folders(kv_slice: Path, tmp_path: Path) -> None:
    with pytest.raises(CaptureFormatError, match=r"no meta\.json"):
        GuestCapture(tmp_path)

    bad = _broken_copy(kv_slice, tmp_path / "pagesize")
    meta = json.loads((bad / "meta.json").read_text())
    meta["page_size"] = 8192
    (bad / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CaptureFormatError, match="page_size"):
        GuestCapture(bad)

    bad = _broken_copy(kv_slice, tmp_path / "short")
    (bad / "base.ram.zst").write_bytes(zstandard.ZstdCompressor().compress(b"\x00" * PAGE_SIZE))
    with pytest.raises(CaptureFormatError, match="bytes"):
        GuestCapture(bad).read_base()

    bad = _broken_copy(kv_slice, tmp_path / "range")
    np.savez_compressed(bad / "delta-001.npz", idx=np.array([10**6] * 1, np.uint32),
                        pages=np.zeros((1, PAGE_SIZE), np.uint8))
    meta = json.loads((bad / "meta.json").read_text())
    meta["stats"][1]["changed_pages"] = 1
    (bad / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CaptureFormatError, match="outside"):
        GuestCapture(bad).read_delta(1)

    bad = _broken_copy(kv_slice, tmp_path / "missing")
    (bad / "delta-002.npz").unlink()
    with pytest.raises(CaptureFormatError, match="missing"):
        GuestCapture(bad)


# -- the VM -----------------------------------------------------------------------------------------

def test_one_advance_runs_at_most_advance_s_max_of_guest_time() -> None:
    from fabric.memory.vm import ADVANCE_S_MAX
    vm = Vm.boot("v", SyntheticSpec(memory_mib=8, dirty_rate_mbps=1, seed=2))
    vm.resume(0.0)
    vm.advance(60.0)  # the node stalled for a minute
    assert vm.guest_time_s == pytest.approx(ADVANCE_S_MAX)


def test_vm_runs_only_while_running_and_pause_freezes_memory() -> None:
    vm = Vm.boot("v", SyntheticSpec(memory_mib=8, dirty_rate_mbps=20, seed=2))
    assert vm.state is RunState.PAUSED and vm.memory.dirty_count() == 0
    assert vm.advance(5.0) == 0  # paused: no guest time passes
    vm.resume(10.0)
    assert vm.advance(10.5) > 0
    device = vm.pause(11.0)
    assert device.guest_time_s == pytest.approx(1.0)
    frozen = vm.memory.full_digest()
    assert vm.advance(20.0) == 0 and vm.memory.full_digest() == frozen
    vm.stop()
    with pytest.raises(VmStateError):
        vm.resume(21.0)


def test_restored_vm_continues_the_same_guest_timeline() -> None:
    spec = SyntheticSpec(memory_mib=8, dirty_rate_mbps=30, hot_set_mib=1, seed=4)
    straight = Vm.boot("a", spec)
    straight.resume(0.0)
    straight.advance(1.0)
    straight.pause(2.0)
    assert straight.guest_time_s == pytest.approx(2.0)

    moved = Vm.boot("a", spec)
    moved.resume(100.0)
    moved.advance(100.7)
    device = moved.pause(100.7)
    copy = PageStore(moved.memory.pages)
    contents, hashes = moved.memory.snapshot_for_send(np.arange(moved.memory.pages))
    copy.apply_received(np.arange(copy.pages), contents, hashes)
    restored = Vm.restore("a", copy, device)
    restored.resume(500.0)
    restored.advance(500.6)  # steps under ADVANCE_S_MAX, as the vCPU loop takes them
    restored.advance(501.3)
    restored.pause(501.3)
    assert restored.guest_time_s == pytest.approx(2.0)
    assert restored.memory.full_digest() == straight.memory.full_digest()
