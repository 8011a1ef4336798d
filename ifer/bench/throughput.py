"""Throughput records: MACs per image, achieved fraction of the device's peak, timm-style CSVs and a chart.

One CSV per (device, precision, torch version), named like timm's ``results/benchmark-*.csv`` so the
file name alone says what was measured, e.g. ``results/throughput-cpu-fp32-pt2.14.1.csv`` or
``results/throughput-cuda-h100-bf16-pt2.14.1-cu12.8.csv``; plus ``throughput-<device>-pt<ver>.png``.

    python -c "from ifer.bench.throughput import gmacs_per_image; print(gmacs_per_image('asit_encoder_tiny'))"
"""
from __future__ import annotations

import csv
import json
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from functools import cache
from pathlib import Path

import torch
from torch import nn

from ifer.bench.init import deterministic_init_, seeded_init_
from ifer.models.registry import create_model

__all__ = ["ThroughputRecord", "gmacs_per_image", "peak_tflops", "device_tag", "csv_path", "write_results",
           "plot_throughput", "BenchModule"]

#: Dense (no structured sparsity) tensor-core peaks in TFLOP/s from NVIDIA's datasheets; fp32 is the
#: non-tensor-core FP32 rate, because PyTorch's default fp32 matmul precision ("highest") does not use TF32.
#: Matched against ``torch.cuda.get_device_name()``; an unknown GPU (and every CPU) gets None.
_PEAKS: list[tuple[str, dict[str, float]]] = [
    ("H200", {"bf16": 989.4, "fp32": 67.0}),        # H200 SXM datasheet
    ("H100 NVL", {"bf16": 835.5, "fp32": 60.0}),    # H100 NVL datasheet
    ("H100 PCIe", {"bf16": 756.0, "fp32": 51.0}),   # H100 PCIe datasheet
    ("H100", {"bf16": 989.4, "fp32": 67.0}),        # H100 SXM5 datasheet ("NVIDIA H100 80GB HBM3")
    ("A100", {"bf16": 312.0, "fp32": 19.5}),        # A100 datasheet (SXM and PCIe alike)
]

#: Input image size of every benchmarked model (generators take W+ codes but produce this size).
_MODEL_IMG_SIZE = {"tiny": 64, "base": 256}


@dataclass
class ThroughputRecord:
    """One row of a results CSV (timm ``benchmark.py`` column spirit, plus the roofline columns)."""

    model: str
    device: str
    batch_size: int
    precision: str
    channels_last: bool
    compiled: bool
    fused_attn: bool
    img_size: int
    images_per_s: float
    step_time_ms_median: float
    step_time_ms_p10: float
    step_time_ms_p90: float
    gmacs_per_image: float | None
    achieved_tflops: float | None = None
    peak_tflops: float | None = None
    fraction_of_peak: float | None = None
    torch_version: str = torch.__version__

    def __post_init__(self):
        # fvcore counts one multiply-add as one "flop"; a MAC is 2 FLOPs on the device's scale
        if self.gmacs_per_image is not None:
            self.achieved_tflops = 2 * self.gmacs_per_image * self.images_per_s / 1e3
            if self.peak_tflops:
                self.fraction_of_peak = self.achieved_tflops / self.peak_tflops


class BenchModule(nn.Module):
    """A registered model behind a one-tensor ``forward`` so every benchmark times the same kind of call.

    ``kind``: ``encoder`` (image -> ``(styles, structure, features)``), ``generator`` (W+ codes -> image,
    stored noise), ``inversion`` (image -> encode + decode with the structure code), ``ifer`` (image -> logits).
    Weights are seeded (``deterministic_init_`` / ``seeded_init_``, which make every residual path matter,
    unlike the layer-scale-1e-5 training init), so parity checks compare outputs that depend on all layers.
    """

    def __init__(self, name: str, seed: int = 0):
        super().__init__()
        self.name = name
        self.net = create_model(name)
        self.img_size = _MODEL_IMG_SIZE["tiny" if name.endswith("tiny") else "base"]
        if name.startswith("stylegan2"):
            self.kind = "generator"
            seeded_init_(self.net, seed)
        elif name.startswith("asit_encoder"):
            self.kind = "encoder"
            deterministic_init_(self.net, seed)
        elif name.startswith("asit"):
            self.kind = "inversion"
            deterministic_init_(self.net.encoder, seed)
            seeded_init_(self.net.decoder, seed)
            # ~1k mapped samples fix latent_avg to 1e-2 of the 1e5-sample value; enough for timing
            self.net.init_latent_avg(1024, seed=seed)
        elif name.startswith("ifer"):
            self.kind = "ifer"
            deterministic_init_(self.net, seed)
        else:
            raise KeyError(f"no benchmark wrapper for {name!r}")
        self.eval()

    def example_input(self, batch_size: int, seed: int = 0) -> torch.Tensor:
        """Seeded N(0, 1) input on the module's device: W+ codes for a generator, images otherwise."""
        g = torch.Generator().manual_seed(seed)
        if self.kind == "generator":
            shape = (batch_size, self.net.n_latent, self.net.style_dim)
        else:
            shape = (batch_size, 3, self.img_size, self.img_size)
        return torch.randn(shape, generator=g).to(next(self.parameters()).device)

    def forward(self, x: torch.Tensor):
        if self.kind == "generator":
            return self.net([x], input_is_latent=True, randomize_noise=False)[0]
        if self.kind == "inversion":
            return self.net(x, use_struct=True, randomize_noise=False)
        return self.net(x)


def _cache_file() -> Path:
    return Path("results") / "gmacs_per_image.json"


@cache
def gmacs_per_image(name: str) -> float:
    """fvcore MACs (``FlopCountAnalysis``; elementwise and softmax ignored) of one image, in G.

    Counted once per model (each has one input size) with the plain eager module at batch 1 and cached in memory and in
    ``results/gmacs_per_image.json`` (keyed with the parameter count, so a changed model is recounted).
    """
    module = BenchModule(name)
    n_params = sum(p.numel() for p in module.parameters())
    key = f"{name}@{module.img_size}"
    path = _cache_file()
    cached = json.loads(path.read_text()) if path.is_file() else {}
    if cached.get(key, {}).get("params") == n_params:
        return cached[key]["gmacs"]
    from fvcore.nn import FlopCountAnalysis

    counter = FlopCountAnalysis(module, (module.example_input(1),))
    counter.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    with torch.no_grad():
        gmacs = counter.total() / 1e9
    cached[key] = {"gmacs": gmacs, "params": n_params, "counter": "fvcore FlopCountAnalysis, batch 1, eager fp32"}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(sorted(cached.items())), indent=2) + "\n")
    return gmacs


def peak_tflops(device: str | torch.device, precision: str) -> float | None:
    """The device's dense peak for ``precision`` in TFLOP/s, or None when not known (every CPU)."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, peaks in _PEAKS:
        if key in name:
            return peaks.get(precision)
    return None


def device_tag(device: str | torch.device) -> str:
    """``cpu`` or ``cuda-<gpu>`` (e.g. ``cuda-h100``), as used in file names."""
    device = torch.device(device)
    if device.type != "cuda":
        return device.type
    name = torch.cuda.get_device_name(device).lower().replace("nvidia", "")
    words = re.findall(r"[a-z]+\d+[a-z]*|\d+[a-z]+", name)
    return "cuda-" + (words[0] if words else re.sub(r"[^a-z0-9]+", "", name))


def csv_path(out_dir: str | Path, device: str, precision: str, torch_version: str = torch.__version__) -> Path:
    """``<out_dir>/throughput-<device>-<precision>-pt<torch>[-cu<cuda>].csv``."""
    version = torch_version.split("+")[0]
    cuda = f"-cu{torch.version.cuda}" if device.startswith("cuda") and torch.version.cuda else ""
    return Path(out_dir) / f"throughput-{device}-{precision}-pt{version}{cuda}.csv"


def write_results(records: Iterable[ThroughputRecord], out_dir: str | Path = "results") -> list[Path]:
    """Write one CSV per (device, precision) and one chart per device; return the paths written."""
    groups: dict[tuple[str, str], list[ThroughputRecord]] = defaultdict(list)
    for r in records:
        groups[(r.device, r.precision)].append(r)
    written = []
    columns = [f.name for f in fields(ThroughputRecord)]
    for (device, precision), rows in sorted(groups.items()):
        path = csv_path(out_dir, device, precision)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            for r in sorted(rows, key=lambda r: (r.model, r.batch_size, r.compiled)):
                writer.writerow({k: _fmt(v) for k, v in asdict(r).items()})
        written.append(path)
    for device in sorted({d for d, _ in groups}):
        rows = [r for (d, _), rs in groups.items() if d == device for r in rs]
        png = csv_path(out_dir, device, "all").with_suffix(".png")
        written.append(plot_throughput(rows, png))
    return written


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.6g}"
    return "None" if v is None else v


def plot_throughput(records: list[ThroughputRecord], path: str | Path) -> Path:
    """Images/s against batch size, one line per (model, precision, compiled), log-scaled y."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for r in records:
        label = f"{r.model} {r.precision}{' compiled' if r.compiled else ''}"
        series[label].append((r.batch_size, r.images_per_s))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, points in sorted(series.items()):
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("images / s (median)")
    r0 = records[0]
    ax.set_title(f"Inference throughput, {r0.device}, torch {r0.torch_version}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
