"""Evaluation metrics with protocol-pinned names: inversion (MSE/LPIPS/SSIM/PSNR/ID/FID) and FER.

    python -c "from ifer.metrics import evaluate_inversion, fer_metrics, get_embedder"
"""
# Lazy (PEP 562): the names resolve on first use, so importing one submodule (or the CLI's --help) does not load
# torchmetrics / lpips / every model (torchmetrics alone adds ~2.5 s to each process start on a 2-core CPU).
from ifer.core.lazy import lazy_attributes

_LAZY = {
    "IdentityEmbedder": "ifer.metrics.embedders", "get_embedder": "ifer.metrics.embedders",
    "list_embedders": "ifer.metrics.embedders", "fer_metrics": "ifer.metrics.fer",
    "InversionEvaluator": "ifer.metrics.inversion", "evaluate_inversion": "ifer.metrics.inversion",
    "evaluate_tensors": "ifer.metrics.inversion",
}

__getattr__ = lazy_attributes(__name__, _LAZY)


__all__ = ["evaluate_inversion", "evaluate_tensors", "InversionEvaluator", "fer_metrics", "get_embedder",
           "list_embedders", "IdentityEmbedder"]
