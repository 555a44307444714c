"""The placement layer's public names stay importable; `import policies` stays light for the controller."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "package",
    [
        "policies",
        "policies.env",
        "policies.maddpg",
        "policies.evaluation",
        "policies.heuristics",
        "policies.traces",
    ],
)
def test_public_names_are_importable(package: str) -> None:
    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{package}.{name}"
    assert (ROOT / "policies" / "py.typed").is_file()


def test_the_controllers_import_loads_no_rl_stack() -> None:
    code = (
        "import sys\nfrom policies import NodeLoad, least_loaded_node\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ray'))\n"
        "assert not heavy, heavy[:5]\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
