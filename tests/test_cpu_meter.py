"""Busy vCPUs from measured CPU time (fabric.memory.cpu_meter)."""

from __future__ import annotations

import pytest

from fabric.errors import ConfigError
from fabric.memory.cpu_meter import CpuMeter


def test_a_steady_load_reads_as_its_rate_and_decays_when_it_stops() -> None:
    m = CpuMeter(0.0, tau_s=10.0)
    for k in range(1, 601):  # 0.05 s of CPU every 0.1 s: half a vCPU, for 60 s
        m.add(0.05, k * 0.1)
    assert m.busy(60.0) == pytest.approx(0.5, rel=0.03)
    assert m.cpu_s == pytest.approx(30.0)
    assert m.busy(60.0 + 10.0) == pytest.approx(0.5 / 2.718281828, rel=0.03)  # one tau later
    assert m.busy(60.0 + 100.0) < 1e-4


def test_a_busier_guest_reads_busier_and_bad_settings_are_refused() -> None:
    light, heavy = CpuMeter(0.0), CpuMeter(0.0)
    for k in range(1, 201):
        light.add(0.001, k * 0.1)
        heavy.add(0.09, k * 0.1)
    assert heavy.busy(20.0) > 50 * light.busy(20.0) > 0
    with pytest.raises(ConfigError):
        CpuMeter(0.0, tau_s=0.0)
