"""The benchmark's simulator models: WAN sites with fixed per-pair latencies, replica CPU per message."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest

from fabric.consensus.client import ClientConfig
from fabric.errors import ConfigError
from fabric.sim import Delay, Faults, RunConfig, run

WAN = Delay(kind="wan", base_ms=25, spread_ms=50, jitter_ms=5, cap_ms=200)


def test_wan_links_have_a_fixed_symmetric_latency_per_pair_plus_jitter() -> None:
    rng = random.Random(1)
    sites = [*range(10), "c1", "c2"]
    links = {(a, b): WAN.link_ms(a, b) for a in sites for b in sites if a != b}
    assert all(25 <= ms <= 75 for ms in links.values())
    assert all(links[(a, b)] == links[(b, a)] for a, b in links)
    assert len(set(links.values())) > 10  # the pairs differ: round trips of 50-150 ms
    for (a, b), base in list(links.items())[:20]:
        got = {WAN.sample_link(rng, a, b) for _ in range(50)}
        assert min(got) >= base and max(got) <= base + 5
    with pytest.raises(ConfigError):
        Delay(kind="uniform", jitter_ms=3).validate()  # jitter belongs to wan links


def test_replica_cpu_per_message_queues_work_and_caps_throughput() -> None:
    base = RunConfig(protocol="pbft", n=4, clients=32, vms=32, ops_per_client=3, think_ms_max=0,
                     sim_options=False, options={"batch_max": 1},
                     client=ClientConfig(retry_ms=3_000, retry_ms_max=12_000))
    free = run(base, 1, Faults(delay=WAN))
    busy = run(dataclasses.replace(base, cpu_us_per_message=10_000), 1, Faults(delay=WAN))
    assert free.ok and busy.ok and free.decisions == busy.decisions == 96
    assert busy.latency_ms_p50 > free.latency_ms_p50 + 100
    free_rate, busy_rate = (r.decisions * 1000 / r.virtual_ms for r in (free, busy))
    assert busy_rate < 0.8 * free_rate
    # Every decision makes each backup take at least its 2(n-1) votes; at 10 ms a message a
    # replica takes 100 a second, so decisions cannot outrun 100 / 6 a second.
    assert busy_rate <= 100 / 6
    with pytest.raises(ConfigError):
        RunConfig(protocol="pbft", cpu_us_per_message=-1).validate()


def test_the_wan_benchmark_reports_each_protocol(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    from jobs.bench_consensus import main

    code = main(["--wan", "--n", "4", "--protocols", "pbft", "probft", "bullshark", "--wan-clients", "8",
                 "--out", str(tmp_path / "b.json"), "--json"])
    assert code == 0
    points = json.loads(capsys.readouterr().out)["wan"]["points"]
    assert [p["protocol"] for p in points] == ["pbft", "probft", "bullshark"]
    for p in points:
        assert p["ok"] and p["unloaded"]["messages_per_decision"] > 0 and p["loaded"]["decisions_per_s"] > 0
    assert main(["--wan", "--n", "3", "--protocols", "pbft"]) == 2
