"""Evaluation metrics with protocol-pinned names: inversion (MSE/LPIPS/SSIM/PSNR/ID/FID) and FER.

    python -c "from ifer.metrics import evaluate_inversion, fer_metrics, get_embedder"
"""
# Lazy (PEP 562): the names resolve on first use, so importing one submodule (or the CLI's --help) does not load
# torchmetrics / lpips / every model (torchmetrics alone adds ~2.5 s to each process start on a 2-core CPU).
_LAZY = {
    "IdentityEmbedder": "ifer.metrics.embedders", "get_embedder": "ifer.metrics.embedders",
    "list_embedders": "ifer.metrics.embedders", "fer_metrics": "ifer.metrics.fer",
    "InversionEvaluator": "ifer.metrics.inversion", "evaluate_inversion": "ifer.metrics.inversion",
    "evaluate_tensors": "ifer.metrics.inversion",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["evaluate_inversion", "evaluate_tensors", "InversionEvaluator", "fer_metrics", "get_embedder",
           "list_embedders", "IdentityEmbedder"]
