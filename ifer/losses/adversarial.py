"""Least-squares adversarial losses on the inversion discriminator's cosine output (``criteria/gan_loss.py``).

The ASIT discriminator ``D(inp1, inp2)`` returns a (B, 1) cosine between the query embedding of
``inp1`` and the (EMA) key embedding of ``inp2``. Real pairs are ``(x, x)``, fake pairs ``(x_hat, x)``:

* D step: ``MSE(D(x, x), +1) + MSE(D(x_hat, x), -1)``
* G step: ``MSE(D(x_hat, x), +1)``

As released (``quirks.adversarial_no_grad``), the G step calls D under ``torch.no_grad()``, so the
generator term is a constant with no gradient; ``generator_adversarial_term`` reproduces that.

    >>> import torch
    >>> from ifer.losses.adversarial import discriminator_loss, generator_loss
    >>> float(discriminator_loss(torch.tensor([[1.0]]), torch.tensor([[0.0]])))
    1.0
    >>> float(generator_loss(torch.tensor([[0.0], [1.0]])))
    0.5
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ifer.core.quirks import Quirks


def discriminator_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """``MSE(d_real, +1) + MSE(d_fake, -1)``, each a mean over the batch."""
    return F.mse_loss(d_real, torch.ones_like(d_real)) + F.mse_loss(d_fake, -torch.ones_like(d_fake))


def generator_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """``MSE(d_fake, +1)``."""
    return F.mse_loss(d_fake, torch.ones_like(d_fake))


def generator_adversarial_term(disc: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x_hat: torch.Tensor,
                               x: torch.Tensor, quirks: Quirks) -> torch.Tensor:
    """G-step adversarial loss ``generator_loss(disc(x_hat, x))``.

    With ``quirks.adversarial_no_grad`` (as released, coach.py l.117) D runs under ``torch.no_grad()``
    and the result carries no gradient; otherwise gradients reach ``x_hat``.
    """
    if quirks.adversarial_no_grad:
        with torch.no_grad():
            d_fake = disc(x_hat, x)
    else:
        d_fake = disc(x_hat, x)
    return generator_loss(d_fake)
