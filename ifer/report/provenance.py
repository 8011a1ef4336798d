"""Provenance of a result: git SHA, resolved config, dataset fingerprint, hardware, package versions, seeds.

    python -c "from ifer.report.provenance import collect; import json; print(json.dumps(collect({}), indent=1))"
"""
from __future__ import annotations

import platform
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import torch

PACKAGES = ("torch", "torchvision", "timm", "torchmetrics", "lpips", "numpy", "pandas", "pillow", "dvc",
            "pytorch-optimizer", "ifer")


def git_state(root: str | Path = ".") -> dict:
    def run(*args):
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    sha = run("rev-parse", "HEAD")
    # dvc.lock and results/ are written by the run being recorded, so they do not make its code dirty
    status = run("status", "--porcelain", "--untracked-files=no", "--", ".", ":!dvc.lock", ":!results")
    changed = [line.split(maxsplit=1)[1] for line in status.splitlines()] if status else []
    return {"sha": sha, "dirty": bool(changed) if status is not None else None, "dirty_files": changed}


def hardware() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "machine": platform.machine(),
            "cpu": _cpu_name(), "cpu_count": torch.get_num_threads(), "cuda": torch.version.cuda}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info["gpu"] = {"name": p.name, "count": torch.cuda.device_count(), "memory_gb": round(p.total_memory / 2**30, 1)}
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def package_versions() -> dict:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def collect(config: dict, dataset_fingerprints: dict | None = None, seeds=None, extra: dict | None = None) -> dict:
    return {
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git": git_state(),
        "config": config,
        "datasets": dataset_fingerprints or {},
        "seeds": list(seeds) if seeds is not None else config.get("seeds"),
        "hardware": hardware(),
        "packages": package_versions(),
        **(extra or {}),
    }
