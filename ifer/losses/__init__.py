"""ASIT training losses: L2, LPIPS, identity, least-squares adversarial, distribution alignment.

    python -c "from ifer.losses import l2_loss, build_perceptual_loss, IDLoss, distribution_loss"
"""
from ifer.losses.adversarial import discriminator_loss, generator_adversarial_term, generator_loss
from ifer.losses.distribution import distribution_loss, distribution_loss_all_pairs, distribution_loss_as_released
from ifer.losses.identity import IDLoss
from ifer.losses.reconstruction import LPIPSLoss, build_perceptual_loss, l2_loss

__all__ = ["l2_loss", "LPIPSLoss", "build_perceptual_loss", "IDLoss", "discriminator_loss", "generator_loss",
           "generator_adversarial_term", "distribution_loss", "distribution_loss_as_released",
           "distribution_loss_all_pairs"]
