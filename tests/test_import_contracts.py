"""The import contracts in pyproject.toml hold, and breaking one makes `lint-imports` (and so `nox -s lint`) fail.

    .venv/bin/python -m pytest tests/test_import_contracts.py -q
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    # lint-imports puts its working directory first on sys.path, so a copy of the package in `cwd` is the one analysed
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=120)


def _copy_with(tmp_path: Path, module: str, line: str) -> Path:
    shutil.copytree(ROOT / "ifer", tmp_path / "ifer", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / (module.replace(".", "/") + ".py")
    target.write_text(target.read_text() + f"\n{line}\n")
    return tmp_path


def test_contracts_hold_on_the_tree():
    proc = _lint(ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "3 kept, 0 broken" in proc.stdout


@pytest.mark.parametrize(("module", "line", "broken"), [
    # a model reading a dataset: both the layer contract and the explicit "models never import data" contract
    ("ifer.models.stylegan2", "import ifer.data.common", "ifer.models.stylegan2 -> ifer.data.common"),
    # the ground floor importing upwards, hidden in a function: still an import, still a break
    ("ifer.core.io", "def _f():\n    import ifer.metrics.fer", "ifer.core.io -> ifer.metrics.fer"),
    # the old cycle, metrics -> losses, however it is spelt
    ("ifer.metrics.inversion", "from ifer.losses import l2_loss", "ifer.metrics.inversion -> ifer.losses"),
])
def test_breaking_a_contract_fails_lint(tmp_path, module, line, broken):
    proc = _lint(_copy_with(tmp_path, module, line))
    assert proc.returncode != 0
    assert broken in proc.stdout, proc.stdout[-3000:]
    assert "BROKEN" in proc.stdout


def test_type_checking_guard_does_not_hide_an_import(tmp_path):
    line = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import ifer.train.fer"
    proc = _lint(_copy_with(tmp_path, "ifer.losses.identity", line))
    assert proc.returncode != 0
    assert "ifer.losses.identity -> ifer.train.fer" in proc.stdout, proc.stdout[-3000:]
