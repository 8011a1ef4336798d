"""Evaluation metrics with protocol-pinned names: inversion (MSE/LPIPS/SSIM/PSNR/ID/FID) and FER.

    python -c "from ifer.metrics import evaluate_inversion, fer_metrics, get_embedder"
"""
from ifer.metrics.embedders import IdentityEmbedder, get_embedder, list_embedders
from ifer.metrics.fer import fer_metrics
from ifer.metrics.inversion import InversionEvaluator, evaluate_inversion, evaluate_tensors

__all__ = ["evaluate_inversion", "evaluate_tensors", "InversionEvaluator", "fer_metrics", "get_embedder",
           "list_embedders", "IdentityEmbedder"]
