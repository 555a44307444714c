"""The public surface stays importable, the core stays Ray-free, and the code passes ruff."""

from __future__ import annotations

import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import fabric

ROOT = Path(__file__).resolve().parents[1]


def test_public_names_are_importable() -> None:
    for name in fabric.__all__:
        assert getattr(fabric, name) is not None, name
    assert callable(fabric.connect)
    assert (ROOT / "fabric" / "py.typed").is_file()


def test_errors_form_one_flat_hierarchy() -> None:
    errors = [getattr(fabric, n) for n in fabric.__all__ if n.endswith("Error") or n in
              ("LedgerRejected", "MigrationFailed")]
    assert all(issubclass(e, fabric.FabricError) for e in errors)
    assert issubclass(fabric.CorruptPageError, fabric.MalformedBatchError)


def test_the_core_imports_no_ray() -> None:
    modules = [m.name for m in pkgutil.walk_packages([str(ROOT / "fabric")], prefix="fabric.")]
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "bad = sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.'))\n"
            "assert not bad, bad\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr


def test_ruff_is_clean() -> None:
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    out = subprocess.run([ruff, "check", "."], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout
