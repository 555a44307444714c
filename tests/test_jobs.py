"""The jobs as users run them: `novacron demo --json`, and `ray job submit` against `ray start --head`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env.update(extra)
    return env


def json_line(text: str) -> dict:
    """The one JSON object a --json job printed."""
    objs = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert len(objs) == 1, text[-3000:]
    return objs[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_help_and_bad_arguments_exit_non_zero_without_ray() -> None:
    out = subprocess.run([sys.executable, "jobs/migrate.py", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "--vm" in out.stdout and "--to" in out.stdout
    bad = subprocess.run([sys.executable, "jobs/migrate.py", "--vm", "x"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--to" in bad.stderr
    cli = subprocess.run([sys.executable, "-m", "jobs.cli", "frobnicate"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 2 and "unknown command" in cli.stderr


@pytest.mark.ray
def test_demo_prints_one_json_report_of_a_completed_cross_dc_migration(tmp_path: Path) -> None:
    novacron = shutil.which("novacron")
    assert novacron, "the novacron console script is not installed (pip install -e .)"
    out = subprocess.run([novacron, "demo", "--json"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300, env=clean_env())
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"stdout must be one JSON object, got: {out.stdout[:2000]}"
    report = json.loads(lines[0])
    assert report["status"] == "completed"
    assert report["source"].split("-")[0:2] != report["destination"].split("-")[0:2]
    assert report["destination"].startswith("eu-west")
    assert report["source_digest"] == report["destination_digest"]
    assert report["round_stats"] and report["raw_bytes"] > 0
    # and the migration's plot, where the demo says it wrote it
    plot = tmp_path / "out" / "demo-migration.png"
    assert f"migration plot (pages remaining, bandwidth, dirty rate per round): {plot}" in out.stderr
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 20_000


@pytest.fixture(scope="module")
def ray_head():
    """`ray start --head` with token authentication, on free ports; stopped at the end."""
    gcs, dashboard = free_port(), free_port()
    env = clean_env(RAY_AUTH_MODE="token")
    head = subprocess.Popen(
        [RAY, "start", "--head", "--block", f"--port={gcs}", f"--dashboard-port={dashboard}",
         "--dashboard-host=127.0.0.1", f"--ray-client-server-port={free_port()}",
         f"--dashboard-agent-listen-port={free_port()}", "--num-cpus=2", "--disable-usage-stats"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    end = time.monotonic() + 120
    while time.monotonic() < end:
        probe = subprocess.run([RAY, "job", "list", "--address", address], env=env,
                               capture_output=True, text=True, timeout=60)
        if probe.returncode == 0:
            break
        time.sleep(1)
    else:
        head.kill()
        pytest.fail("ray start --head did not come up")
    yield address, env
    os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)


def submit(address: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([RAY, "job", "submit", "--address", address, "--working-dir", str(ROOT),
                           "--", "python", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.ray
def test_ray_job_submit_boots_the_fabric_then_attaches_and_migrates(ray_head) -> None:
    address, env = ray_head
    first = submit(address, env, "jobs/migrate.py", "--vm", "web-1", "--to", "eu-west", "--json")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    report = json_line(first.stdout)
    assert report["status"] == "completed" and report["vm_location"].startswith("eu-west")
    # a second job attaches to the running fabric: the VM is where the first job put it
    second = submit(address, env, "jobs/migrate.py", "--vm", "web-1", "--to", "us-west", "--json")
    assert second.returncode == 0, second.stdout[-3000:]
    again = json_line(second.stdout)
    assert again["source"] == report["vm_location"] and again["epoch"] == report["epoch"] + 1
    status = submit(address, env, "jobs/status.py", "--json")
    assert status.returncode == 0
    vms = {v["vm"]: v for v in json_line(status.stdout)["vms"]}
    assert vms["web-1"]["dc"] == "us-west" and vms["web-1"]["state"] == "running"


@pytest.mark.ray
def test_ray_job_submit_with_an_unknown_vm_fails_clearly(ray_head) -> None:
    address, env = ray_head
    out = submit(address, env, "jobs/migrate.py", "--vm", "no-such-vm", "--to", "eu-west")
    assert out.returncode != 0
    assert "no VM 'no-such-vm'" in out.stdout + out.stderr


@pytest.mark.ray
def test_ray_job_submit_evacuates_a_data_center_and_the_vms_are_where_the_job_says(ray_head) -> None:
    address, env = ray_head
    out = submit(address, env, "jobs/evacuate.py", "--from", "us-west", "--concurrency", "2", "--json")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = json_line(out.stdout)
    assert result["nodes"] == ["us-west-1", "us-west-2"] and not result["not_moved"]
    assert result["moved"] and sorted(result["moved"]) == sorted(r["vm"] for r in result["reports"])
    assert all(r["status"] == "completed" and r["source"].startswith("us-west") for r in result["reports"])
    assert all(not node.startswith("us-west") for node in result["locations"].values())
    # the status job (tables, as a person reads them) shows each VM where the evacuation said it went
    status = submit(address, env, "jobs/status.py")
    assert status.returncode == 0, status.stdout[-3000:]
    text = status.stdout
    for heading in ("data centers (", "nodes\n", "VMs\n", "running migrations", "ledger\n"):
        assert heading in text, heading
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.split()}
    for vm, node in result["locations"].items():
        assert rows[vm][1] == node and rows[vm][4] == "running", rows[vm]


@pytest.mark.ray
def test_ray_job_submit_of_evacuate_with_a_bad_target_fails_clearly(ray_head) -> None:
    address, env = ray_head
    out = submit(address, env, "jobs/evacuate.py", "--from", "mars-north")
    assert out.returncode != 0
    assert "no node 'mars-north'" in out.stdout + out.stderr
