"""ASIT training losses: L2, LPIPS, identity, least-squares adversarial, distribution alignment.

    python -c "from ifer.losses import l2_loss, build_perceptual_loss, IDLoss, distribution_loss"
"""
# Lazy (PEP 562): the names resolve on first use, so importing one submodule (or the CLI's --help) does not load
# torchmetrics / lpips / every model (torchmetrics alone adds ~2.5 s to each process start on a 2-core CPU).
from ifer.core.lazy import lazy_attributes

_LAZY = {
    "discriminator_loss": "ifer.losses.adversarial", "generator_adversarial_term": "ifer.losses.adversarial",
    "generator_loss": "ifer.losses.adversarial", "distribution_loss": "ifer.losses.distribution",
    "distribution_loss_all_pairs": "ifer.losses.distribution",
    "distribution_loss_as_released": "ifer.losses.distribution", "IDLoss": "ifer.losses.identity",
    "LPIPSLoss": "ifer.losses.reconstruction", "build_perceptual_loss": "ifer.losses.reconstruction",
    "l2_loss": "ifer.losses.reconstruction",
}

__getattr__ = lazy_attributes(__name__, _LAZY)


__all__ = ["l2_loss", "LPIPSLoss", "build_perceptual_loss", "IDLoss", "discriminator_loss", "generator_loss",
           "generator_adversarial_term", "distribution_loss", "distribution_loss_as_released",
           "distribution_loss_all_pairs"]
