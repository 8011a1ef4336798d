"""Each training run records the kernel it ran on, across resumes (``ifer.stages.record_session``)::

    .venv/bin/python -m pytest tests/test_run_records.py -q
"""
import json

import torch

from ifer.core.config import Config
from ifer.report.compare import kernel_keys
from ifer.stages import record_session


def test_a_resumed_run_keeps_every_session_kernel_key(tmp_path):
    cfg = Config({"seed": 0, "profile": "tiny"})
    run = tmp_path / "runs" / "tiny" / "fer" / "clean" / "ifer" / "synthfer" / "seed0"
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        first = json.loads(record_session(cfg, run, "train_fer", [0]).read_text())
        assert first["stage"] == "train_fer" and first["hardware"]["kernel_key"].count("|threads 1|") == 1
        assert first["kernel_keys_seen"] == [first["hardware"]["kernel_key"]]
        record_session(cfg, run, "train_fer", [0])  # resumed on the same kernel: still one key
        assert json.loads((run / "provenance.json").read_text())["kernel_keys_seen"] == first["kernel_keys_seen"]
        torch.set_num_threads(2)  # resumed at another thread count: a mixed-kernel run
        second = json.loads(record_session(cfg, run, "train_fer", [0]).read_text())
    finally:
        torch.set_num_threads(before)
    assert second["kernel_keys_seen"] == [first["hardware"]["kernel_key"], second["hardware"]["kernel_key"]]
    assert second["hardware"]["kernel_key"].count("|threads 2|") == 1
    # what the report collects and compare reads: both keys, joined
    res = tmp_path / "results"
    res.mkdir()
    (res / "provenance.json").write_text(json.dumps({"hardware": {"kernel_key": "k"},
                                                     "stages": {"r": second}}))
    assert kernel_keys(res)["train_fer"] == " / ".join(second["kernel_keys_seen"])


def test_unreadable_earlier_record_counts_as_another_kernel(tmp_path):
    (tmp_path / "provenance.json").write_text("{not json")
    rec = json.loads(record_session(Config({"seed": 0}), tmp_path, "train_asit", [0]).read_text())
    assert rec["kernel_keys_seen"][0] == "unreadable earlier record" and len(rec["kernel_keys_seen"]) == 2
