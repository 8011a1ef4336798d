"""Benchmark fixtures: machine info for pytest-benchmark's JSON, device parameters, and the results CSVs.

    pytest benchmark/ --benchmark-only --benchmark-json .benchmarks/run.json

After a run that timed anything, ``results/throughput-<device>-<precision>-pt<torch>.csv`` and a chart
are written (``--throughput-dir`` changes the folder).
"""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import torch

from ifer.bench.throughput import ThroughputRecord, write_results
from ifer.core.machine import cpu_name, isa_flags

_RECORDS: list[ThroughputRecord] = []


def pytest_addoption(parser):
    parser.addoption("--throughput-dir", default="results",
                     help="folder for throughput-*.csv and the chart (default: results)")


def _nvidia_smi() -> list[dict]:
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=20, check=True)
    except (subprocess.SubprocessError, OSError):
        return []
    keys = ("name", "driver", "memory", "max_sm_clock")
    return [dict(zip(keys, (v.strip() for v in line.split(",")))) for line in out.stdout.strip().splitlines()]


def pytest_benchmark_update_machine_info(config, machine_info):
    """Record what decides the numbers: torch/CUDA/cuDNN versions, GPUs and driver, CPU and threads."""
    machine_info["torch"] = torch.__version__
    machine_info["cuda_runtime"] = torch.version.cuda
    machine_info["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    machine_info["cuda_available"] = torch.cuda.is_available()
    machine_info["gpu_count"] = torch.cuda.device_count() if torch.cuda.is_available() else 0
    machine_info["gpus"] = ([torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
                            if torch.cuda.is_available() else [])
    machine_info["nvidia_smi"] = _nvidia_smi()
    machine_info["cpu_name"] = cpu_name()
    machine_info["isa_flags"] = isa_flags()
    machine_info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    machine_info["torch_threads"] = torch.get_num_threads()
    machine_info["os_cpu_count"] = os.cpu_count()


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def device(request) -> str:
    """``cpu`` always; ``cuda`` skips (with the reason) where no GPU is visible."""
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("CUDA is not available on this machine (torch.cuda.is_available() is False)")
    return request.param


@pytest.fixture
def record_throughput(benchmark):
    """Call with a ``ThroughputRecord``; it is also stored in the benchmark JSON's ``extra_info``."""

    def record(rec: ThroughputRecord) -> None:
        _RECORDS.append(rec)
        benchmark.extra_info.update({k: v for k, v in vars(rec).items() if k != "torch_version"})

    return record


def pytest_sessionfinish(session, exitstatus):
    if _RECORDS:
        paths = write_results(_RECORDS, session.config.getoption("--throughput-dir"))
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line("throughput results: " + ", ".join(str(p) for p in paths))
