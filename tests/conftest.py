"""Shared fixtures: the real captures, and a small real slice of one for fast tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zstandard

from fabric.memory import PAGE_SIZE
from fabric.traces import GuestCapture, default_data_root

SLICE_PAGES = 2048  # 8 MiB: small enough for many tests, real content throughout


def _capture_dir(name: str) -> Path:
    root = default_data_root()
    path = root / "guest-memory" / name if root else None
    if path is None or not (path / "meta.json").is_file():
        pytest.skip(f"the real capture '{name}' is not available: set NOVACRON_DATA to the "
                    f"shared data folder (it holds guest-memory/{name})")
    return path


@pytest.fixture(scope="session")
def kv_capture() -> Path:
    """The real kv capture folder."""
    return _capture_dir("kv")


@pytest.fixture(scope="session")
def idle_capture() -> Path:
    """The real idle capture folder."""
    return _capture_dir("idle")


def write_capture(folder: Path, base: np.ndarray, deltas: list[tuple[np.ndarray, np.ndarray]],
                  dump_times: list[float], name: str) -> Path:
    """Write a capture folder in the shared data format."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "base.ram.zst").write_bytes(zstandard.ZstdCompressor(level=1).compress(base.tobytes()))
    for k, (idx, pages) in enumerate(deltas, start=1):
        np.savez_compressed(folder / f"delta-{k:03d}.npz", idx=idx.astype(np.uint32), pages=pages)
    meta = {"name": name, "mem_mib": base.nbytes >> 20, "page_size": PAGE_SIZE,
            "pages": int(base.shape[0]), "dumps": len(deltas), "dump_times": dump_times,
            "stats": [{"dump": 0, "zero_pages": int((~base.any(axis=1)).sum())}]
            + [{"dump": k, "changed_pages": int(idx.size)} for k, (idx, _) in
               enumerate(deltas, start=1)],
            "workload": f"slice of a real capture ({name})"}
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


@pytest.fixture(scope="session")
def kv_slice(kv_capture: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An 8 MiB slice of the real kv capture where its deltas are densest, in the same format."""
    cap = GuestCapture(kv_capture)
    first_idx, _ = cap.read_delta(1)
    counts = np.bincount(first_idx // SLICE_PAGES, minlength=cap.meta.pages // SLICE_PAGES)
    start = int(np.argmax(counts)) * SLICE_PAGES
    base = cap.read_base()[start:start + SLICE_PAGES].copy()
    deltas = []
    for k in range(1, cap.meta.deltas + 1):
        idx, pages = cap.read_delta(k)
        keep = (idx >= start) & (idx < start + SLICE_PAGES)
        deltas.append((idx[keep] - start, pages[keep]))
    return write_capture(tmp_path_factory.mktemp("kv-slice"), base, deltas,
                         list(cap.meta.dump_times), "kv-slice")


@pytest.fixture(scope="session")
def sources():
    """The shared Azure V1 and PlanetLab traces (skips when the data folder is absent)."""
    from policies.traces.splits import TraceSources

    root = default_data_root()
    if root is None or not (root / "azure-v1").is_dir() or not (root / "planetlab").is_dir():
        pytest.skip("the real traces are not available: set NOVACRON_DATA to the shared data folder "
                    "(it holds azure-v1/ and planetlab/)")
    return TraceSources.default(root)
