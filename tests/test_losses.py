"""Losses on hand-computed cases (ifer.losses.*)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ifer.core.quirks import get_quirks
from ifer.core.weights import MissingWeightsError
from ifer.losses.adversarial import discriminator_loss, generator_adversarial_term, generator_loss
from ifer.losses.classification import batch_accuracy, classification_loss, hard_labels
from ifer.losses.distribution import (
    distribution_loss,
    distribution_loss_all_pairs,
    distribution_loss_as_released,
    draw_released_indices,
)
from ifer.losses.identity import IDLoss
from ifer.losses.reconstruction import build_perceptual_loss, l2_loss


def _vec(*values: float) -> torch.Tensor:
    """A (C,1,1) feature map whose flattened form is ``values``."""
    return torch.tensor(values, dtype=torch.float32).reshape(-1, 1, 1)


def _kl_uniform_vs_pair(c: float) -> float:
    """Sum over one row of KL(uniform || softmax([c, 0])) contributions, 'mean' done by the caller."""
    q1 = 1 / (1 + math.exp(-c))
    return 0.5 * (math.log(0.5) - math.log(q1)) + 0.5 * (math.log(0.5) - math.log(1 - q1))


# --- reconstruction ----------------------------------------------------------------------------


def test_l2_is_mse_on_pm1_images():
    x = torch.zeros(2, 3, 4, 4)
    y = x.clone()
    y[0] = 1.0  # half of the elements differ by 1
    assert float(l2_loss(y, x)) == pytest.approx(0.5)


def test_perceptual_none_is_zero_with_graph():
    x = torch.rand(1, 3, 8, 8, requires_grad=True)
    loss = build_perceptual_loss("none")(x, x)
    assert float(loss) == 0.0


def test_lpips_without_backbone_names_the_file():
    with pytest.raises(MissingWeightsError, match="alexnet-owt-7be5be79.pth"):
        build_perceptual_loss("lpips_alex", None)
    with pytest.raises(ValueError, match="unknown perceptual loss"):
        build_perceptual_loss("stlpips", None)


# --- adversarial ---------------------------------------------------------------------------------


def test_adversarial_losses_on_given_cosines():
    d_real = torch.tensor([[1.0], [0.5]])
    d_fake = torch.tensor([[-1.0], [0.0]])
    # MSE(real, 1) = (0 + 0.25)/2; MSE(fake, -1) = (0 + 1)/2
    assert float(discriminator_loss(d_real, d_fake)) == pytest.approx(0.625)
    # MSE([0.5, -1], 1) = (0.25 + 4)/2
    assert float(generator_loss(torch.tensor([[0.5], [-1.0]]))) == pytest.approx(2.125)


def _cosine_disc(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a.flatten(1), b.flatten(1)).unsqueeze(1)


def test_generator_term_no_grad_as_released_and_grad_as_described():
    x = torch.rand(2, 3, 4, 4)
    x_hat = torch.rand(2, 3, 4, 4, requires_grad=True)
    released = generator_adversarial_term(_cosine_disc, x_hat, x, get_quirks("as_released"))
    described = generator_adversarial_term(_cosine_disc, x_hat, x, get_quirks("as_described"))
    assert not released.requires_grad  # constant: contributes nothing to the encoder update
    assert float(released) == pytest.approx(float(described.detach()))
    described.backward()
    assert x_hat.grad is not None and x_hat.grad.abs().sum() > 0


# --- distribution alignment ------------------------------------------------------------------------


def test_released_draw_order_feat_then_batch():
    feat_ind, batch_ind = draw_released_indices(np.random.RandomState(2), n_levels=2)
    # RandomState(2).randint(0, 2, 3) twice gives [0 1 1] then [0 0 1].
    assert feat_ind.tolist() == [0, 1, 1] and batch_ind.tolist() == [0, 0, 1]


def test_released_loss_hand_computed():
    # Two levels, two samples. Source samples are orthogonal at both levels -> all source cosines 0.
    src = [torch.stack([_vec(1, 0), _vec(0, 1)]), torch.stack([_vec(1, 0), _vec(0, 1)])]
    # Target: level 0 cos(s0, s1) = 1/sqrt2; level 1 cos(s0, s1) = -1.
    tgt = [torch.stack([_vec(1, 0), _vec(1, 1)]), torch.stack([_vec(1, 0), _vec(-1, 0)])]
    tgt = [t.requires_grad_() for t in tgt]
    # Seed 2 (L=2): feat_ind [0 1 1], batch_ind [0 0 1]:
    #   row 0 (level 0, sample 0) vs anchor 2's sample 1 -> [1/sqrt2, 0]
    #   row 1 (level 1, sample 0) vs anchor 2's sample 1 -> [-1, 0]
    #   row 2 (level 1, sample 1) vs anchors 0 and 1 (both sample 0) -> [-1, -1] (uniform after softmax)
    # Source rows are uniform, so KL('mean' over 6 entries) = (f(1/sqrt2) + f(-1)) / 6.
    expected = (_kl_uniform_vs_pair(1 / math.sqrt(2)) + _kl_uniform_vs_pair(-1.0)) / 6
    loss = distribution_loss_as_released(src, tgt, np.random.RandomState(2))
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert tgt[0].grad.abs().sum() > 0


def test_released_loss_is_exact_zero_without_graph_when_batch_ind_agree():
    levels = [torch.randn(4, 3, 2, 2, requires_grad=True) for _ in range(3)]
    zeros = 0
    for seed in range(200):
        _, batch_ind = draw_released_indices(np.random.RandomState(seed), 3)
        loss = distribution_loss_as_released(levels, levels, np.random.RandomState(seed))
        if (batch_ind == batch_ind[0]).all():
            zeros += 1
            assert float(loss) == 0.0 and not loss.requires_grad
        else:
            assert loss.requires_grad
    assert 30 <= zeros <= 70  # 25% of 200 draws in expectation


def test_released_loss_ignores_samples_beyond_the_first_two():
    src = [torch.randn(4, 3, 2, 2)]
    tgt = torch.randn(4, 3, 2, 2, requires_grad=True)
    for seed in range(20):
        loss = distribution_loss_as_released(src, [tgt], np.random.RandomState(seed))
        if loss.requires_grad:
            loss.backward()
    assert tgt.grad[2:].abs().sum() == 0 and tgt.grad[:2].abs().sum() > 0


def test_all_pairs_hand_computed_and_uses_every_sample():
    # One level, three samples. Source: mutually orthogonal -> uniform rows.
    src = [torch.stack([_vec(1, 0, 0), _vec(0, 1, 0), _vec(0, 0, 1)])]
    # Target cosines: c01 = 0, c02 = c12 = 1/sqrt2 -> rows [0, .707], [0, .707], [.707, .707].
    tgt = [torch.stack([_vec(1, 0, 0), _vec(0, 1, 0), _vec(1, 1, 0)]).requires_grad_()]
    expected = 2 * _kl_uniform_vs_pair(1 / math.sqrt(2)) / 6
    assert float(distribution_loss_all_pairs(src, tgt).detach()) == pytest.approx(expected, rel=1e-6)
    # Every sample of a generic batch gets gradient (the released loss only ever touches samples 0 and 1).
    tgt = [torch.randn(4, 3, 2, 2, requires_grad=True)]
    distribution_loss_all_pairs([torch.randn(4, 3, 2, 2)], tgt).backward()
    assert (tgt[0].grad.flatten(1).abs().sum(1) > 0).all()


def test_all_pairs_averages_levels_and_dispatch():
    src = [torch.randn(3, 2, 2, 2), torch.randn(3, 4, 1, 1)]
    tgt = [torch.randn(3, 2, 2, 2), torch.randn(3, 4, 1, 1)]
    per_level = [float(distribution_loss_all_pairs([s], [t])) for s, t in zip(src, tgt)]
    both = distribution_loss(src, tgt, get_quirks("as_described"))
    assert float(both) == pytest.approx(sum(per_level) / 2, rel=1e-6)
    with pytest.raises(ValueError, match="rng"):
        distribution_loss(src, tgt, get_quirks("as_released"))


# --- identity --------------------------------------------------------------------------------------


class _MeanColourEmbedder:
    """Toy differentiable embedder: the normalised mean colour of the pSp crop."""

    name, requires_weights, differentiable = "toy_mean_colour", False, True

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        from ifer.metrics.embedders import psp_face_crop

        return F.normalize(psp_face_crop(images).mean(dim=(2, 3)), dim=1)


def _solid(r: float, g: float, b: float) -> torch.Tensor:
    return torch.tensor([r, g, b], dtype=torch.float32).reshape(1, 3, 1, 1).expand(1, 3, 256, 256).clone()


def test_id_loss_hand_computed_on_the_psp_crop():
    loss = IDLoss(_MeanColourEmbedder())
    red, green = _solid(1, 0, 0), _solid(0, 1, 0)
    assert float(loss(red, red)) == pytest.approx(0.0, abs=1e-6)
    assert float(loss(red, green)) == pytest.approx(1.0)  # orthogonal embeddings
    # Mean over the batch: (0 + 1) / 2.
    assert float(loss(torch.cat([red, red]), torch.cat([red, green]))) == pytest.approx(0.5)
    # Only the crop [35:223, 32:220] counts: changing the border changes nothing.
    bordered = red.clone()
    bordered[:, :, :30] = -1
    assert float(loss(bordered, red)) == pytest.approx(0.0, abs=1e-6)


def test_id_loss_grad_reaches_prediction_only_and_rejects_non_differentiable():
    pred = (_solid(1, 0.2, 0) + 0.1 * torch.randn(1, 3, 256, 256)).requires_grad_()
    target = _solid(0, 1, 0).requires_grad_()
    IDLoss(_MeanColourEmbedder())(pred, target).backward()
    assert pred.grad.abs().sum() > 0 and target.grad is None

    class _Frozen(_MeanColourEmbedder):
        differentiable = False

    with pytest.raises(ValueError, match="no gradient"):
        IDLoss(_Frozen())


def test_classification_loss_is_timm_soft_ce_and_torch_hard_ce():
    """One FER cross-entropy: timm's SoftTargetCrossEntropy (the released IFER loss) for soft targets, bit for bit;
    F.cross_entropy for class indices, bit for bit, label smoothing included."""
    from timm.loss import SoftTargetCrossEntropy

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 7, generator=g)
    y = torch.randint(0, 7, (16,), generator=g)
    soft = torch.softmax(3 * torch.randn(16, 7, generator=g), dim=-1)
    assert torch.equal(classification_loss(logits, soft), SoftTargetCrossEntropy()(logits, soft))
    assert torch.equal(classification_loss(logits, y), F.cross_entropy(logits, y))
    assert torch.equal(classification_loss(logits, y, label_smoothing=0.1), F.cross_entropy(logits, y, label_smoothing=0.1))
    # smoothing soft targets: the same mixture as F.cross_entropy's (another summation order, so not bitwise)
    torch.testing.assert_close(classification_loss(logits, soft, label_smoothing=0.1),
                               F.cross_entropy(logits, soft, label_smoothing=0.1), atol=1e-6, rtol=1e-6)
    assert torch.equal(hard_labels(soft), soft.argmax(-1)) and torch.equal(hard_labels(y.float()), y)
    assert batch_accuracy(F.one_hot(y, 7).float(), soft) == (y == soft.argmax(-1)).float().mean().item()

