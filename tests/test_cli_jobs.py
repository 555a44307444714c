"""The jobs' conventions without Ray: --help, bad arguments, the migration plot, the rebalance input.

Each job runs as `python jobs/X.py` here, the same form `ray job submit` runs.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from fabric.clock import ManualClock
from fabric.ledger import RegisterVm, SingleWriterLedger
from fabric.memory import SyntheticSpec, Vm
from fabric.migration import MigrationConfig, migrate_in_process

ROOT = Path(__file__).resolve().parents[1]
NOT_JOBS = {"__init__", "common", "render", "cli"}  # helpers, not entry points
JOBS = sorted(p.stem for p in (ROOT / "jobs").glob("*.py") if p.stem not in NOT_JOBS)
HELP_S_MAX = 180  # train_placement's --help imports RLlib for its defaults: ~20 s on a busy machine


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_every_job_answers_help_as_a_script_and_has_json_and_an_exit_code() -> None:
    assert {"demo", "migrate", "evacuate", "rebalance", "status", "plot"} <= set(JOBS)

    def check(job: str) -> tuple[str, list[str]]:
        problems = []
        helped = run(f"jobs/{job}.py", "--help", timeout=HELP_S_MAX)
        if helped.returncode != 0 or not helped.stdout.startswith("usage:"):  # argparse: bad options exit 2
            problems.append(f"--help exited {helped.returncode}: {helped.stderr[-500:]}")
        if "--json" not in helped.stdout:
            problems.append("no --json option")
        source = (ROOT / "jobs" / f"{job}.py").read_text()
        if 'if __name__ == "__main__":\n    sys.exit(main())' not in source:
            problems.append("does not exit with main()'s code")
        if 'if __package__ in (None, ""):' not in source:
            problems.append("not importable as `python jobs/X.py` from a job's working dir")
        return job, problems
    with ThreadPoolExecutor(max_workers=4) as pool:
        failures = {job: p for job, p in pool.map(check, JOBS) if p}
    assert not failures, failures


@pytest.mark.parametrize(("args", "message"), [
    (["jobs/evacuate.py"], "--from"),
    (["jobs/evacuate.py", "--from", "us-west-2", "--concurrency", "0"], "must be at least 1"),
    (["jobs/evacuate.py", "--from", "us-west-2", "--concurrency", "many"], "not a whole number"),
    (["jobs/rebalance.py", "--cpu-busy", "kv-1"], "use VM=VCPUS"),
    (["jobs/rebalance.py", "--heuristic", "best-fit", "--checkpoint", "x"], "not allowed with"),
    (["jobs/rebalance.py", "--cores", "0"], "--cores must be > 0"),
    (["jobs/plot.py", "no-such-report.json"], "no-such-report.json"),
    (["-m", "jobs.cli", "bench", "warp-drive"], "no benchmark 'warp-drive'"),
    (["-m", "jobs.cli", "bench"], "usage: novacron bench NAME"),
])
def test_bad_arguments_give_a_clear_message_and_exit_2(args: list[str], message: str) -> None:
    out = run(*args)
    assert out.returncode == 2, (out.returncode, out.stdout[-500:], out.stderr[-500:])
    assert message in out.stderr + out.stdout


def test_bad_input_with_json_still_prints_one_json_object(tmp_path: Path) -> None:
    not_a_report = tmp_path / "x.json"
    not_a_report.write_text(json.dumps({"vm": "kv-1"}))
    out = run("jobs/plot.py", str(not_a_report), "--json")
    assert out.returncode == 2
    (line,) = out.stdout.splitlines()
    assert json.loads(line) == {"error": f"{not_a_report} is not a migration report (no round_stats)",
                                "exit_code": 2}


# -- the migration plot -----------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def report() -> dict:
    """A real multi-round migration, in process: a 60 MB/s writer over a 1 Gbit/s link, 30 ms limit."""
    clock, ledger = ManualClock(1000.0), SingleWriterLedger()
    ledger.submit(RegisterVm(vm="plotted-1", node="us-east-1"))
    vm = Vm.boot("plotted-1", SyntheticSpec(memory_mib=32, dirty_rate_mbps=60, hot_set_mib=8, seed=5))
    vm.resume(clock.now())
    clock.advance(0.3)
    vm.advance(clock.now())
    result = migrate_in_process(vm, ledger=ledger, source="us-east-1", destination="eu-west-1", clock=clock,
                                config=MigrationConfig(downtime_ms_limit=30, codec="raw"),
                                link_bytes_per_s=125e6, command_latency_s=0.0005)
    r = result.report.to_dict()
    assert r["status"] == "completed" and r["rounds"] >= 2, r["abort_reason"]
    return r


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, payload) of every chunk, each CRC checked."""
    assert data[:8] == PNG_SIGNATURE
    chunks, at = [], 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at:at + 4])
        kind, payload = data[at + 4:at + 8], data[at + 8:at + 8 + length]
        (crc,) = struct.unpack(">I", data[at + 8 + length:at + 12 + length])
        assert zlib.crc32(kind + payload) == crc, kind
        chunks.append((kind, payload))
        at += 12 + length
    return chunks


def pixels(image: np.ndarray, hex_colour: str) -> int:
    """How many pixels are within a small distance of `hex_colour`."""
    rgb = np.array([int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    return int((np.abs(image[..., :3] - rgb).max(axis=-1) < 0.03).sum())


def test_the_plot_of_a_real_migration_is_a_valid_png_with_rounds_rates_and_the_switchover(
        report: dict, tmp_path: Path) -> None:
    import matplotlib.image

    from jobs.plot import plot_migration

    path = plot_migration(report, tmp_path / "deep" / "kv.png")
    data = path.read_bytes()
    chunks = png_chunks(data)
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND"
    width, height = struct.unpack(">II", chunks[0][1][:8])
    assert width >= 800 and height >= 500 and len(data) > 20_000
    image = matplotlib.image.imread(path)
    assert image.shape[:2] == (height, width) and image[..., :3].std() > 0.05
    top, bottom = image[:height // 2], image[height // 2:]  # pages remaining; bandwidth and dirty rate
    assert pixels(top, "#1f77b4") > 500 and pixels(bottom, "#1f77b4") > 500  # pre-copy rounds, bandwidth
    assert pixels(top, "#d62728") == 0 and pixels(bottom, "#d62728") > 500  # the dirty rate, below only
    assert pixels(top, "#ff7f0e") > 100 and pixels(bottom, "#ff7f0e") > 100  # the switchover, in both


def test_the_plot_job_turns_a_saved_report_into_a_png_and_a_table(report: dict, tmp_path: Path) -> None:
    saved = tmp_path / "report.json"
    saved.write_text(json.dumps(report))
    out = run("jobs/plot.py", str(saved))
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"migration plot: {saved.with_suffix('.png')}" in out.stdout
    assert out.stdout.count("\n") >= len(report["round_stats"]) + 2  # header, rule, a row per round
    assert saved.with_suffix(".png").read_bytes()[:8] == PNG_SIGNATURE
    as_json = run("jobs/plot.py", str(saved), "--out", str(tmp_path / "b.png"), "--json")
    (line,) = as_json.stdout.splitlines()
    assert json.loads(line) == {"plot": str(tmp_path / "b.png"), "vm": "plotted-1",
                                "rounds": len(report["round_stats"])}


# -- rebalance: the placement service's input from the fabric's status ------------------------


def test_rebalance_asks_the_advisor_with_the_fabrics_nodes_and_their_cpu_load() -> None:
    from jobs.rebalance import fabric_state
    from policies.advisor import AdvisorConfig, PlacementAdvisor

    def node(name: str, dc: str, raylet: str, vms: list[tuple[str, float]]) -> dict:
        return {"name": name, "dc": dc, "ray_node_id": raylet, "memory_mib_max": 4096,
                "memory_mib_used": sum(m for _, m in vms),
                "vms": [{"name": v, "memory_mib": m} for v, m in vms]}
    status = {"topology": {"dcs": ["us-east", "eu-west"]},
              "nodes": [node("us-east-1", "us-east", "r1", [("kv-1", 256.0), ("web-1", 512.0)]),
                        node("us-east-2", "us-east", "r2", []),
                        node("eu-west-1", "eu-west", "r3", []),
                        {"name": "eu-west-2", "dc": "eu-west", "error": "unreachable: peer actor died"}]}
    cpus = {"r1": 2.0, "r2": 2.0, "r3": 4.0}
    state = fabric_state(status, cpus, {"kv-1": 1.9, "web-1": 0.2})
    hosts = {h["name"]: h for dc in state["dcs"] for h in dc["hosts"]}
    assert set(hosts) == {"us-east-1", "us-east-2", "eu-west-1"}  # the unreachable node is left out
    assert hosts["us-east-1"]["cores"] == 2.0 and hosts["eu-west-1"]["cores"] == 4.0
    advisor = PlacementAdvisor(AdvisorConfig.from_dict({"heuristic": "best-fit+migrate"}))
    moves = advisor.rebalance(state)
    assert [(m["vm"], m["from_host"]) for m in moves] == [("kv-1", "us-east-1")]
    assert moves[0]["to_host"] in {"us-east-2", "eu-west-1"}
    # no declared load and none measured: no host is hot, nothing moves
    assert advisor.rebalance(fabric_state(status, cpus, {})) == []
    # the load the node measured counts; a declared one overrides it
    measured = {**status, "nodes": [{**n, "vms": [{**v, "cpu_busy": 1.9 if v["name"] == "kv-1" else 0.1}
                                                  for v in n.get("vms", [])]} for n in status["nodes"]]}
    assert [m["vm"] for m in advisor.rebalance(fabric_state(measured, cpus, {}))] == ["kv-1"]
    assert advisor.rebalance(fabric_state(measured, cpus, {"kv-1": 0.0})) == []
    # two emulated nodes sharing one Ray node share its CPUs
    shared = fabric_state({**status, "nodes": [node("us-east-1", "us-east", "r1", []),
                                               node("us-east-2", "us-east", "r1", [])]}, cpus, {})
    assert [h["cores"] for h in shared["dcs"][0]["hosts"]] == [1.0, 1.0]


def test_evacuation_progress_in_job_logs_is_whole_lines_a_person_can_follow() -> None:
    import io

    from jobs.render import EvacuationProgress

    log = io.StringIO()  # not a TTY, as a job's log
    progress = EvacuationProgress(2, out=log)
    kv = {"id": "kv-1@2", "vm": "kv-1", "source": "us-west-2", "destination": "us-west-1", "status": "active"}
    web = {**kv, "id": "web-1@3", "vm": "web-1"}
    progress.update([kv], {"kv-1": {"round": 0, "round_pages_done": 50, "round_pages_total": 200}})
    progress.update([{**kv, "status": "completed"}, web], {"web-1": {"round": None}})
    progress.update([{**kv, "status": "completed"}, {**web, "status": "aborted"}], {})
    progress.finish()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and "\x1b" not in log.getvalue()
    assert lines == [
        "  started    kv-1: us-west-2 -> us-west-1 (kv-1@2)",
        "  [..............................] 0/2 moved; running: kv-1 round 0 25%",
        "  completed  kv-1: now on us-west-1",
        "  started    web-1: us-west-2 -> us-west-1 (web-1@3)",
        "  [###############...............] 1/2 moved; running: web-1 setup",
        "  aborted    web-1: now on us-west-2",
        "  [##############################] 1/2 moved, 1 not moved",
    ]
