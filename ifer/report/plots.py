"""Plots for results/: inversion grids (source over reconstruction), confusion matrices (counts or the mean over
seeds), training curves.

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


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, dpi=110, format=path.suffix.lstrip(".") or "png"))
    plt.close(fig)
    return path
