"""Plots for results/: inversion grids (source over reconstruction), confusion matrices (counts or the mean over
seeds), training curves; the analyses beyond accuracy: reliability diagrams, accuracy by SynthFER factor bin,
accuracy under corruptions by severity.

    python -c "from ifer.report.plots import confusion_matrix_plot as p; p([[2, 1], [0.5, 3]], ['a', 'b'], '/tmp/cm.png', 'demo')"
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from ifer.core.io import atomic_write  # noqa: E402


def _to_uint8(img: torch.Tensor) -> np.ndarray:
    """A (3,H,W) image in [-1, 1] -> (H,W,3) uint8."""
    return ((img.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()


def inversion_grid(sources: torch.Tensor, reconstructions: torch.Tensor, path: str | Path, n: int = 8,
                   title: str = "source (top) / reconstruction (bottom)") -> Path:
    n = min(n, len(sources))
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 3.6), squeeze=False)
    for i in range(n):
        for row, imgs in enumerate((sources, reconstructions)):
            axes[row][i].imshow(_to_uint8(imgs[i]))
            axes[row][i].axis("off")
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def confusion_matrix_plot(cm: Sequence[Sequence[int]], class_names: Sequence[str], path: str | Path, title: str) -> Path:
    cm = np.asarray(cm, dtype=float)
    norm = cm / np.clip(cm.sum(1, keepdims=True), 1, None)
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    im = ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(class_names)), class_names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            # a mean over seeds is fractional: one decimal, not a truncated count
            txt = f"{cm[i, j]:.0f}" if float(cm[i, j]).is_integer() else f"{cm[i, j]:.1f}"
            ax.text(j, i, txt, ha="center", va="center", fontsize=6, color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def training_curves(series: dict[str, tuple[Sequence[float], Sequence[float]]], path: str | Path, title: str,
                    xlabel: str = "step") -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for name, (x, y) in series.items():
        ax.plot(x, y, label=name, lw=1.2)
    ax.set_xlabel(xlabel)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def reliability_diagram(bins: Sequence[dict], path: str | Path, title: str) -> Path:
    """Accuracy against mean confidence per equal-width confidence bin (``ifer.metrics.calibration.reliability_bins``);
    bar width = bin, the diagonal = perfect calibration, counts printed above the bars."""
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    for b in bins:
        if not b["count"]:
            continue
        w = b["upper"] - b["lower"]
        ax.bar(b["lower"], b["accuracy"], width=w, align="edge", color="tab:blue", alpha=0.75, edgecolor="k", lw=0.4)
        ax.plot([b["lower"], b["upper"]], [b["confidence"]] * 2, color="tab:red", lw=1.2)
        ax.text(b["lower"] + w / 2, min(0.97, b["accuracy"] + 0.02), str(b["count"]), ha="center", fontsize=5)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect calibration")
    ax.plot([], [], color="tab:red", lw=1.2, label="mean confidence in bin")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("top-1 confidence")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title(title, fontsize=8)
    return _save(fig, path)


def factor_plot(rows: Sequence[dict], path: str | Path, title: str) -> Path:
    """Accuracy per bin of one factor, one line per method: mean over seeds with its 95% t-interval as error bars
    (``rows``: the analyze stage's robustness rows of one protocol, dataset and factor, in bin order)."""
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    names = [r["bin"] for r in rows]
    for k, method in enumerate(rows[0]["methods"]):
        st = [r["methods"][method] for r in rows]
        mean = np.array([100 * s["mean"] for s in st])
        err = np.array([[100 * (s["mean"] - s["ci_low"]) if s["ci_low"] is not None else 0 for s in st],
                        [100 * (s["ci_high"] - s["mean"]) if s["ci_high"] is not None else 0 for s in st]])
        ax.errorbar(np.arange(len(names)) + 0.06 * (k - 1.5), mean, yerr=err, marker="o", capsize=3, lw=1.2,
                    label=method)
    ax.set_xticks(range(len(names)), [f"{n}\n(n={r['n_images']})" for n, r in zip(names, rows)], fontsize=7)
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=8)
    return _save(fig, path)


def corruption_plot(runs: Sequence[dict], types: Sequence[str], severities: Sequence[int], path: str | Path,
                    title: str) -> Path:
    """Accuracy (mean over seeds) against severity, one panel per corruption, one line per method; severity 0 is
    the clean accuracy on the same images."""
    fig, axes = plt.subplots(1, len(types), figsize=(2.6 * len(types), 2.9), sharey=True, squeeze=False)
    methods = list(dict.fromkeys(r["method"] for r in runs))
    for ax, name in zip(axes[0], types):
        for method in methods:
            sel = [r["corruptions"] for r in runs if r["method"] == method]
            ys = [np.mean([c["clean_accuracy"] for c in sel])] + [
                np.mean([c["accuracy"][name][str(s)] for c in sel]) for s in severities]
            ax.plot([0, *severities], 100 * np.array(ys), marker="o", lw=1.2, label=method)
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("severity (0 = clean)", fontsize=7)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy (%)")
    axes[0][-1].legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, dpi=110, format=path.suffix.lstrip(".") or "png"))
    plt.close(fig)
    return path
