"""Disk and output safety: results, tables, configs and checkpoints are written atomically, and a full disk or
an unwritable results folder gives one line and leaves the previous outputs intact (issue 12)::

    .venv/bin/python -m pytest tests/test_output_safety.py -q
"""
from __future__ import annotations

import errno
import os

import pandas as pd
import pytest

from ifer.cli import main
from ifer.core import io as core_io
from ifer.report import tables
from ifer.stages import write_json


def _fail_on_fsync(code: int):
    def fsync(fd):
        raise OSError(code, os.strerror(code))
    return fsync


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES])
def test_results_json_and_tables_keep_the_previous_file_when_the_write_fails(tmp_path, monkeypatch, code):
    """A full disk (ENOSPC) or an unwritable folder (EACCES) in the middle of a write: the previous file is intact,
    no temporary file is left behind, and the error names the target file."""
    res = tmp_path / "results"
    write_json(res / "fer_metrics.json", {"accuracy": 0.5})
    tables._write(pd.DataFrame({"a": [1]}), "| a |\n", res, "fer_comparison")
    before = {p.name: p.read_bytes() for p in res.iterdir()}
    monkeypatch.setattr(core_io.os, "fsync", _fail_on_fsync(code))
    with pytest.raises(OSError) as exc:
        write_json(res / "fer_metrics.json", {"accuracy": 0.9})
    assert exc.value.errno == code and exc.value.filename == str(res / "fer_metrics.json")
    with pytest.raises(OSError):
        tables._write(pd.DataFrame({"a": [2]}), "| b |\n", res, "fer_comparison")
    assert {p.name: p.read_bytes() for p in res.iterdir()} == before  # same files, same bytes, no temp files


def test_checkpoint_save_is_atomic(tmp_path, monkeypatch):
    """A checkpoint write that dies (full disk) leaves the previous checkpoint loadable, never a truncated one."""
    import torch

    ckpt = tmp_path / "last.pt"
    core_io.atomic_torch_save({"w": torch.ones(3)}, ckpt)
    monkeypatch.setattr(core_io.os, "fsync", _fail_on_fsync(errno.ENOSPC))
    with pytest.raises(OSError):
        core_io.atomic_torch_save({"w": torch.zeros(3)}, ckpt)
    assert torch.equal(torch.load(ckpt, weights_only=True)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES])
def test_cli_full_disk_or_unwritable_output_is_one_line(tmp_path, monkeypatch, capsys, code):
    """`ifer config --out` into a full disk / unwritable folder: one line naming the file, exit 2, old file intact."""
    out = tmp_path / "params.yaml"
    assert main(["config", "--profile", "tiny", "--out", str(out)]) == 0
    before = out.read_bytes()
    capsys.readouterr()
    monkeypatch.setattr(core_io.os, "fsync", _fail_on_fsync(code))
    assert main(["config", "--profile", "paper", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("ifer config: error: ") and str(out) in err and "intact" in err
    assert out.read_bytes() == before
