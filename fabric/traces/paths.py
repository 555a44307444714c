"""Where the shared real data lives: `$NOVACRON_DATA`, else `../shared/data` next to the project."""

from __future__ import annotations

import json
import os
from importlib import metadata
from pathlib import Path

ENV_VAR = "NOVACRON_DATA"


def _editable_source() -> Path | None:
    # An editable install records where its source lives; a job's working-dir copy
    # of the code does not, so this finds the data from either.
    try:
        raw = metadata.distribution("novacron-fabric").read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    if not raw:
        return None
    url = json.loads(raw).get("url", "")
    return Path(url.removeprefix("file://")) if url.startswith("file://") else None


def default_data_root() -> Path | None:
    """The shared data folder, or None if it cannot be found."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    candidates = [Path(__file__).resolve().parents[2] / ".." / "shared" / "data",
                  Path.cwd() / ".." / "shared" / "data"]
    source = _editable_source()
    if source is not None:
        candidates.append(source / ".." / "shared" / "data")
    for c in candidates:
        if (c / "guest-memory").is_dir():
            return c.resolve()
    return None


def default_guest_captures() -> list[Path]:
    """The capture folders under the data root's guest-memory/, sorted by name."""
    root = default_data_root()
    if root is None or not (root / "guest-memory").is_dir():
        return []
    return sorted(p for p in (root / "guest-memory").iterdir() if (p / "meta.json").is_file())
