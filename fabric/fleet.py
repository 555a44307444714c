"""The VMs a freshly booted fabric starts with (the demo's guests)."""

from __future__ import annotations

from typing import Any

from fabric.memory.workloads import ReplaySpec, SyntheticSpec, spec_to_dict
from fabric.traces.paths import default_data_root


def default_fleet() -> list[dict[str, Any]]:
    """Three guests: a synthetic web server, and the real kv and idle captures when found.

    Without the shared data folder the captures are replaced by synthetic
    guests of the same size, and their names say so (`kv-syn-1`, `idle-syn-1`).
    """
    root = default_data_root()
    fleet: list[dict[str, Any]] = [{
        "name": "web-1", "where": "us-east",
        "workload": spec_to_dict(SyntheticSpec(memory_mib=512, dirty_rate_mbps=20,
                                               hot_set_mib=64, seed=1))}]
    for name, dc, rate, seed in (("kv", "us-east", 16.0, 2), ("idle", "us-west", 0.6, 3)):
        capture = root / "guest-memory" / name if root else None
        if capture is not None and (capture / "meta.json").is_file():
            fleet.append({"name": f"{name}-1", "where": dc,
                          "workload": spec_to_dict(ReplaySpec(path=str(capture), seed=seed))})
        else:
            fleet.append({"name": f"{name}-syn-1", "where": dc,
                          "workload": spec_to_dict(SyntheticSpec(memory_mib=256,
                                                                 dirty_rate_mbps=rate, seed=seed))})
    return fleet
