"""jobs/bench_secure.py: run() measures every method on every size; the CLI prints one JSON object."""

from __future__ import annotations

import json

import pytest

from jobs import bench_secure


def test_run_measures_every_method_for_every_size() -> None:
    out = bench_secure.run(sizes=(4096, 65536), repeats=2, sample_bytes=256 << 10)
    assert [r["size_bytes"] for r in out["results"]] == [4096, 65536]
    for r in out["results"]:
        assert set(r["median_mbps"]) == set(bench_secure.METHODS)
        assert all(len(s) == 2 and min(s) > 0 for s in r["samples_mbps"].values())
        assert 0 < r["seal_vs_raw_encrypt"] < 100 and 0 < r["open_vs_raw_decrypt"] < 100
    assert "no copy of the payload" in out["copies"]


def test_cli_json_and_bad_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_secure.main(["--json", "--out", "", "--sizes", "4096", "--repeats", "1",
                              "--sample-mib", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["benchmark"] == "bench_secure" and len(report["results"]) == 1
    assert bench_secure.main(["--json", "--out", "", "--sizes", str(18 << 20)]) == 2
    assert "frame limit" in json.loads(capsys.readouterr().out)["error"]
