"""The training job exports a checkpoint the service loads; the benchmark reports every policy with CIs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import ray

from jobs import bench_placement, train_placement
from policies import AdvisorConfig, PlacementAdvisor
from policies.env.config import COMPONENTS
from policies.maddpg.export import load_actors

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def trained_export(tmp_path_factory: pytest.TempPathFactory, sources) -> Path:
    """A very short run of the training job (64 env steps), exported to a temporary folder."""
    out = tmp_path_factory.mktemp("train") / "actors"
    code = train_placement.main(
        [
            "--address",
            "local",
            "--env-steps",
            "64",
            "--eval-every",
            "2",
            "--dev-seeds",
            "1",
            "--dev-windows",
            "1",
            "--out",
            str(out),
            "--json",
        ]
    )
    ray.shutdown()
    assert code == 0
    return out


def test_training_job_exports_what_the_service_loads(trained_export: Path) -> None:
    actors = load_actors(trained_export)
    provenance = actors.meta["provenance"]
    assert provenance["command"].startswith("python jobs/train_placement.py") and provenance["env_steps"] > 0
    assert "dev_objective" in provenance and actors.layout.dcs == 3
    advisor = PlacementAdvisor(AdvisorConfig(checkpoint=str(trained_export)))
    assert not advisor.describe()["fallback"]


def test_benchmark_reports_components_with_cis(trained_export: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench.json"
    code = bench_placement.main(
        [
            "--checkpoint",
            str(trained_export),
            "--seeds",
            "2",
            "--windows-max",
            "1",
            "--policies",
            "maddpg",
            "random",
            "best-fit",
            "worst-fit+migrate",
            "--out",
            str(out),
            "--json",
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report == json.loads(out.read_text())
    assert [s["policy"] for s in report["summaries"]] == ["maddpg", "random", "best-fit", "worst-fit+migrate"]
    for s in report["summaries"]:
        assert s["episodes"] == 2 and set(s["components"]) == set(COMPONENTS)
        assert s["objective"]["ci95"] >= 0 and s["decision_us"]["p50"] > 0
    comparison = report["maddpg_vs_best_heuristic"]
    assert comparison["best_heuristic"] in ("best-fit", "worst-fit+migrate")
    assert report["plan"]["split"] == "test" and report["plan"]["episodes_per_policy"] == 2


def test_benchmark_refuses_a_bad_trace(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "arrivals.txt"
    bad.write_text("300 a\n900 b\n")
    code = bench_placement.main(["--trace", str(bad), "--policies", "best-fit", "--out", "", "--json"])
    assert code == 2 and "consecutive" in json.loads(capsys.readouterr().out)["error"]
