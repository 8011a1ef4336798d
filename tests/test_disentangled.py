"""Disentangled adversarial FER: uniform-KL and gradient reversal by hand, who trains whom, overfit run."""
from __future__ import annotations

import math

import pytest
import torch

import ifer
from ifer.losses.disentangled import grad_reverse, uniform_kl
from ifer.models.baselines import classification_loss
from tests.toy import overfit_steps

pytestmark = pytest.mark.usefixtures("one_thread")


def test_uniform_kl_is_zero_for_uniform_output():
    assert uniform_kl(torch.zeros(3, 7)).item() == pytest.approx(0.0, abs=1e-6)
    assert uniform_kl(torch.full((2, 5), 3.7)).item() == pytest.approx(0.0, abs=1e-6)


def test_uniform_kl_hand_value():
    p = torch.tensor([[0.8, 0.2]])
    expected = 0.5 * math.log(0.5 / 0.8) + 0.5 * math.log(0.5 / 0.2)  # KL(U || p)
    assert uniform_kl(p.log()).item() == pytest.approx(expected, abs=1e-6)


def test_grad_reverse_flips_and_scales_gradient():
    x = torch.randn(4, 3, requires_grad=True)
    w = torch.randn(4, 3)
    y = grad_reverse(x, 0.5)
    assert torch.equal(y, x)
    (y * w).sum().backward()
    assert torch.allclose(x.grad, -0.5 * w)


def _tiny(**kw):
    torch.manual_seed(0)
    return ifer.create_model("disentangled_tiny", **kw)


def _grads(module):
    return {n: None if p.grad is None else p.grad.clone() for n, p in module.named_parameters()}


def test_shapes_and_loss_keys():
    m = _tiny()
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 3])
    assert m(x).shape == (4, 7) and m.expression_features(x).shape == (4, 32) and m.num_classes == 7
    loss, logs = m.training_loss(x, y)
    assert torch.isfinite(loss)
    assert set(logs) == {"loss", "ce", "acc", "adv_uniform_kl", "adv_ce", "adv_acc"}
    assert m.decoder is None  # reconstruction off by default (the paper found it hurt)
    _, logs = _tiny(adversary="grad_reversal", recon_weight=0.1).training_loss(x, torch.softmax(torch.randn(4, 7), -1))
    assert set(logs) == {"loss", "ce", "acc", "adv_ce", "adv_acc", "recon"}


def test_uniform_kl_players_get_only_their_own_gradients():
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 3])
    m = _tiny(joint_adversary=False)
    m.training_loss(x, y)[0].backward()
    alone = _grads(m)
    assert all(g is None for n, g in alone.items() if n.startswith("adversary."))  # encoder term: frozen adversary
    m.zero_grad(set_to_none=True)
    m.joint_adversary = True
    m.training_loss(x, y)[0].backward()
    joint = _grads(m)
    for n, g in joint.items():  # the adversary's own CE reaches no encoder parameter
        if not n.startswith("adversary."):
            assert torch.allclose(g, alone[n], atol=1e-6), n
    # ... and its adversary gradient is that of adversary_loss (CE on the detached embedding)
    m.zero_grad(set_to_none=True)
    m.adversary_loss(x, y).backward()
    assert all(p.grad is None for p in m.main_parameters())
    for n, p in m.adversary.named_parameters():
        assert torch.allclose(p.grad, joint["adversary." + n], atol=1e-6)


def test_grad_reversal_gives_encoder_the_negated_adversary_gradient():
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 3])
    m = _tiny(adversary="grad_reversal", adv_weight=0.3)
    m.training_loss(x, y)[0].backward()
    got = _grads(m.nonexpr_branch)  # reached only through the adversary (no decoder)
    m.zero_grad(set_to_none=True)
    _, z_n = m.embeddings(x)
    classification_loss(m.adversary(z_n), y).backward()
    for n, p in m.nonexpr_branch.named_parameters():
        assert torch.allclose(got[n], -0.3 * p.grad, atol=1e-6), n


def test_invalid_configurations():
    with pytest.raises(ValueError, match="adversary"):
        _tiny(adversary="wasserstein")
    with pytest.raises(ValueError, match="joint_adversary"):
        _tiny(adversary="grad_reversal", joint_adversary=False)


@pytest.mark.parametrize("adversary", ["uniform_kl", "grad_reversal"])
def test_overfit_tiny_batch(adversary):
    m = _tiny(adversary=adversary)
    torch.manual_seed(1)
    history = overfit_steps(m)
    assert all(math.isfinite(step["loss"]) for step in history)
    assert history[-1]["ce"] < 0.5 * history[0]["ce"]
