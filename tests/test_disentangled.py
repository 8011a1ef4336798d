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
    m = _tiny()
    m.training_loss(x, y)[0].backward()
    joint = _grads(m)
    # the encoder's gradient is that of CE + adv_weight * KL(U || frozen adversary): the adversary's own CE
    # (on the detached embedding) reaches no encoder parameter
    m.zero_grad(set_to_none=True)
    z_e, z_n = m.embeddings(x)
    (classification_loss(m.classifier(z_e), y) + uniform_kl(m._frozen_adversary(z_n))).backward()
    assert all(p.grad is None for p in m.adversary_parameters())  # the KL term sees the adversary frozen
    for n, p in m.named_parameters():
        if not n.startswith("adversary."):
            assert torch.allclose(p.grad, joint[n], atol=1e-6), n
    # ... and the adversary's gradient is exactly that of its CE on the detached non-expression embedding
    m.zero_grad(set_to_none=True)
    classification_loss(m.adversary(m.embeddings(x)[1].detach()), y).backward()
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


@pytest.mark.parametrize("adversary", ["uniform_kl", "grad_reversal"])
def test_overfit_tiny_batch(adversary):
    m = _tiny(adversary=adversary)
    torch.manual_seed(1)
    history = overfit_steps(m)
    assert all(math.isfinite(step["loss"]) for step in history)
    assert history[-1]["ce"] < 0.5 * history[0]["ce"]


class _Faces(torch.utils.data.Dataset):
    def __init__(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.x, self.y = torch.randn(n, 3, 32, 32, generator=g), torch.arange(n) % 7

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


@pytest.mark.parametrize("adversary", ["uniform_kl", "grad_reversal"])
def test_trainer_steps_adversary_once_per_iteration_and_keeps_it_out_of_main_optimizer(tmp_path, adversary):
    from torch.optim.optimizer import register_optimizer_step_post_hook

    from ifer.core.config import Config
    from ifer.train.fer import train_fer

    recipe = Config(optimizer="adamw", momentum=0.9, epochs=2, cooldown_epochs=0, warmup_epochs=1, lr=1e-3,
                    warmup_lr=1e-4, min_lr=1e-5, weight_decay=0.05, batch_size=8, clip_grad=5.0, amp=False,
                    mixup=0.0, cutmix=0.0, smoothing=0.0, log_interval=100)
    m = _tiny(adversary=adversary)
    adv = {id(p) for p in m.adversary_parameters()}
    n_main = sum(1 for _ in m.main_parameters())
    calls = {"loss": 0}
    loss_fn = m.training_loss

    def counted(*a, **k):  # one call = one training iteration (the trainer never calls it elsewhere)
        calls["loss"] += 1
        return loss_fn(*a, **k)

    m.training_loss = counted
    adversary_steps, main_steps = [], []

    def on_step(opt, args, kwargs):
        held = [id(p) for g in opt.param_groups for p in g["params"]]
        (adversary_steps if adv & set(held) else main_steps).append((calls["loss"], held))

    handle = register_optimizer_step_post_hook(on_step)
    try:
        train_fer(m, _Faces(24, 0), _Faces(7, 1), _Faces(7, 2), recipe, tmp_path, seed=0, num_classes=7,
                  eval_batch_size=8, progress=False)
    finally:
        handle.remove()
    iterations = 2 * 3  # 2 epochs x ceil(24 / 8)
    assert calls["loss"] == iterations
    # exactly one adversary update per iteration, after that iteration's (single) forward
    assert [it for it, _ in adversary_steps] == list(range(1, iterations + 1))
    assert all(set(held) == adv for _, held in adversary_steps)  # its optimizer holds only the adversary
    # the main optimizer steps once per iteration too, over every other parameter and no adversary one
    assert [it for it, _ in main_steps] == list(range(1, iterations + 1))
    assert all(not adv & set(held) and len(held) == n_main for _, held in main_steps)
