"""What about this machine and build decides the numbers: CPU and the ISA flags that pick kernels, the torch /
oneDNN / MKL / cuDNN / CUDA versions, the numerics packages (``NUMERIC_PACKAGES``), the GPU, the thread counts. One implementation for provenance and benchmarks.

Bit-identical results are only expected for the same ``kernel_key`` (ISA flags that select kernels + torch
build + library versions + threads + device): a different ISA runs other oneDNN/MKL kernels, whose
floating-point sums round differently; after a few epochs of training those last-bit differences grow into
different models. Compare runs across machines statistically (``ifer compare``), not byte for byte.

    python -m ifer.core.machine
"""
from __future__ import annotations

import os
import platform
import re
from pathlib import Path

import torch

# CPU flags that change which oneDNN / MKL / ATen kernels run (and so the rounding of the results).
KERNEL_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve")


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def cpu_name() -> str:
    for line in _cpuinfo():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def isa_flags() -> dict[str, bool]:
    """Each of :data:`KERNEL_FLAGS`: present on this CPU? (empty off Linux, where /proc/cpuinfo is absent)."""
    for line in _cpuinfo():
        if line.startswith(("flags", "Features")):
            have = set(line.split(":", 1)[1].split())
            return {f: f in have for f in KERNEL_FLAGS}
    return {}


def _config_version(pattern: str) -> str | None:
    m = re.search(pattern, torch.__config__.show())
    return m.group(1) if m else None


#: Packages whose releases can change the floats under the same torch build, so they are part of ``kernel_key``:
#: image decoding and resizing (pillow, torchvision), model code and initialisation (timm, transformers,
#: sentence-transformers with the bundled MiniLM, open-clip-torch), the optimiser (pytorch-optimizer) and the
#: metrics (torchmetrics, lpips, torch-fidelity, scipy, numpy). Measured 2026-12-04: the same code, CPU and torch
#: build with the packages pip resolved a day apart gave other ke2nt_minilm accuracies (0.352 vs 0.359, seed 0)
#: while every other method and ASIT stayed bit-identical; only KE2NT runs MiniLM (transformers).
NUMERIC_PACKAGES = ("numpy", "scipy", "pillow", "torchvision", "timm", "transformers", "sentence-transformers",
                    "open-clip-torch", "pytorch-optimizer", "torchmetrics", "lpips", "torch-fidelity")


def package_versions(names=NUMERIC_PACKAGES) -> dict[str, str | None]:
    """``{distribution: version}`` (None when not installed), from the installed metadata."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def library_versions() -> dict:
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "torch": torch.__version__,
        "torch_git": _config_version(r"COMMIT_SHA=([0-9a-f]+)"),
        "onednn": _config_version(r"(?:MKL-DNN|oneDNN) v([\d.]+)"),
        "mkl": _config_version(r"Math Kernel Library Version ([\w.]+)"),
        "cuda": torch.version.cuda,
        "cudnn": cudnn,
        "packages": package_versions(),
    }


def packages_digest(packages: dict | None) -> str:
    """12 hex digits naming the ``NUMERIC_PACKAGES`` versions (the full list is in ``libraries.packages``)."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(packages or {}, sort_keys=True).encode()).hexdigest()[:12]


def gpu() -> dict | None:
    if not torch.cuda.is_available():
        return None
    p = torch.cuda.get_device_properties(0)
    return {"name": p.name, "count": torch.cuda.device_count(), "capability": f"{p.major}.{p.minor}",
            "memory_gb": round(p.total_memory / 2**30, 1)}


def machine_info() -> dict:
    """Everything above plus threads; ``kernel_key`` is the part that must match for bit-identical results."""
    info = {
        "platform": platform.platform(), "python": platform.python_version(), "machine": platform.machine(),
        "cpu": cpu_name(), "os_cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "isa_flags": isa_flags(),
        "libraries": library_versions(), "gpu": gpu(),
        "env_threads": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")},
    }
    info["kernel_key"] = kernel_key(info)
    return info


def native_bf16() -> bool:
    """Does this CPU compute bf16 in hardware (AVX512-BF16 or AMX-BF16)? Without it bf16 autocast is emulated and
    slower than fp32, so the CPU trainers then run fp32 (``ifer.train.fer``)."""
    flags = isa_flags()
    return bool(flags.get("avx512_bf16") or flags.get("amx_bf16"))


def kernel_key(info: dict) -> str:
    """A short string equal on two machines that run the same kernels (same ISA, build, threads, GPU) with the same
    ``NUMERIC_PACKAGES`` versions (their digest)."""
    flags = "+".join(f for f, on in sorted(info.get("isa_flags", {}).items()) if on) or "?"
    lib = info.get("libraries", {})
    g = (info.get("gpu") or {}).get("name", "cpu")
    return (f"{info.get('machine')}|{info.get('cpu_capability')}|{flags}|torch {lib.get('torch')}"
            f"|onednn {lib.get('onednn')}|cuda {lib.get('cuda')}|cudnn {lib.get('cudnn')}|{g}|threads {info.get('torch_threads')}"
            f"|packages {packages_digest(lib.get('packages'))}")


def _cpuinfo_field(name: str) -> str | None:
    for line in _cpuinfo():
        if line.split(":", 1)[0].strip() == name:
            return line.split(":", 1)[1].strip()
    return None


def cpu_peak(precision: str = "fp32", threads: int | None = None) -> dict:
    """Dense FLOP peak of ``threads`` cores (default: torch's intra-op threads) from the ISA flags and clock.

    ``flops_per_cycle`` per core: SIMD fp32 lanes (16 with avx512f, 8 with avx/avx2, 4 otherwise) x 2 for FMA x
    2 FMA pipes (every current x86 server core has two), except AMD family 25 (Zen 4), which runs 512-bit ops
    as two 256-bit halves (one 512-bit pipe's worth). bf16: avx512_bf16 ``VDPBF16PS`` does two bf16 products
    per fp32 lane, so 2x fp32; amx_bf16: 1024 FLOPs/cycle (Intel's AMX figure). Without native bf16 the peak
    is None (bf16 is emulated through fp32). The clock is ``cpu MHz`` of /proc/cpuinfo (``IFER_CPU_GHZ``
    overrides): boost clocks can push a measured fraction above what this base-clock peak implies.
    Returns ``{"tflops", "flops_per_cycle", "ghz", "cores", "basis"}`` (``tflops`` None when unknown).
    """
    flags = isa_flags()
    cores = min(threads or torch.get_num_threads(), os.cpu_count() or 1)
    ghz = os.environ.get("IFER_CPU_GHZ") or (_cpuinfo_field("cpu MHz") and float(_cpuinfo_field("cpu MHz")) / 1e3)
    ghz = float(ghz) if ghz else None
    lanes = 16 if flags.get("avx512f") else 8 if flags.get("avx") or flags.get("avx2") else 4
    fma = 2 if flags.get("fma") or flags.get("avx512f") else 1
    pipes = 2
    if flags.get("avx512f") and _cpuinfo_field("vendor_id") == "AuthenticAMD" and _cpuinfo_field("cpu family") == "25":
        pipes = 1
    fp32 = lanes * fma * pipes
    basis = f"{lanes} fp32 lanes x {fma} (FMA) x {pipes} pipes"
    if precision == "fp32":
        per_cycle = fp32
    elif precision == "bf16" and flags.get("amx_bf16"):
        per_cycle, basis = 1024, "amx_bf16: 1024 bf16 FLOPs/cycle"
    elif precision == "bf16" and flags.get("avx512_bf16"):
        per_cycle, basis = 2 * fp32, f"avx512_bf16 (2 x fp32): {basis} x 2"
    else:
        per_cycle, basis = None, f"no native {precision} on this CPU"
    tflops = per_cycle * ghz * cores / 1e3 if per_cycle and ghz else None
    return {"tflops": tflops, "flops_per_cycle": per_cycle, "ghz": ghz, "cores": cores, "basis": basis}


if __name__ == "__main__":
    import json

    print(json.dumps(machine_info(), indent=1))
