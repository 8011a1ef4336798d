"""Device correctness without a GPU: one dry step on PyTorch's ``meta`` device.

Every module is placed the way the pipeline places it (``ifer.stages`` builders, the trainers' ``.to(device)``
calls), then fed meta inputs. A parameter, buffer or tensor left on the CPU meets a meta tensor and raises, just
as it would meet a CUDA tensor on a GPU. What cannot run on meta (anything that reads a value back: ``float()``,
``.item()``, ``.cpu()``) is not part of these steps; for the evaluators a device-assert walk over their networks
stands in (see ``test_eval_networks_live_on_the_configured_device``).

    OMP_NUM_THREADS=1 python -m pytest tests/test_device_meta.py -q
"""
from __future__ import annotations

import pytest
import torch

from ifer import stages
from ifer.core.config import load_config
from ifer.core.quirks import get_quirks

META = torch.device("meta")


def _on(module: torch.nn.Module, device: torch.device) -> list[str]:
    """Names of parameters/buffers NOT on ``device`` (empty = correct)."""
    return [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.device.type != device.type]


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    from ifer.rehearsal.weights import write_weights

    return write_weights(tmp_path_factory.mktemp("weights"),
                         names=["torchvision_alexnet", "arcface_ir_se50", "curricularface_ir101"])


@pytest.fixture
def weights(weight_files, monkeypatch):
    """Random-valued files in the upstream formats (ifer.rehearsal.weights), small ones only. A random AlexNet
    cannot carry torchvision's published sha256 prefix, so that one check is switched off here."""
    import ifer.core.weights

    monkeypatch.setattr(ifer.core.weights, "check_sha256", lambda path, expected: "")
    return weight_files


def _asit_cfg(weights):
    return load_config("tiny", overrides=[
        "asit.perceptual=lpips_alex", "asit.id_embedder=arcface_ir_se50", "asit.lambdas.lpips=0.8",
        "asit.lambdas.id=0.1", f"asit.lpips_backbone={weights['torchvision_alexnet']}",
        f"asit.id_weights={weights['arcface_ir_se50']}", "asit.latent_avg_samples=16"])


def test_asit_training_step_with_lpips_and_identity_runs_on_the_training_device(weights):
    """Guards: "the LPIPS and identity loss modules (ASITLosses) are never moved to the training device, so the
    first G step fails on a GPU" -- here the losses are moved exactly as ``train_asit`` moves them."""
    # Not run here: the distribution loss (it masks with nonzero(), data-dependent, impossible on meta; it owns no
    # weights and builds its tensors from its inputs' device).
    from ifer.losses.adversarial import discriminator_loss, generator_adversarial_term

    cfg = _asit_cfg(weights)
    net, disc, losses = stages.build_asit(cfg)
    assert losses.perceptual is not None and losses.identity is not None
    for m in (net, disc, losses):  # the calls train_asit makes
        m.to(META)
    assert not _on(net, META) and not _on(disc, META)
    assert not _on(losses.perceptual, META) and not _on(losses.identity, META)
    quirks = get_quirks(cfg.asit.mode)
    x = torch.randn(2, 3, cfg.asit.img_size, cfg.asit.img_size, device=META)
    z = torch.randn(2, net.decoder.style_dim, device=META)
    fake, _, s_fea = net.decoder([z], randomize_noise=True, return_features=True)
    loss_d = discriminator_loss(disc(x, x), disc(net(x, use_struct=True, randomize_noise=True).detach(), x))
    y_hat, _, t_fea = net(x, use_struct=True, randomize_noise=True, return_features=True)
    assert fake.device.type == "meta" and all(f.device.type == "meta" for f in [*s_fea, *t_fea])
    loss = (torch.nn.functional.mse_loss(y_hat, x) + losses.lambdas["lpips"] * losses.perceptual(y_hat, x).mean()
            + losses.lambdas["id"] * losses.identity(y_hat, x)
            + generator_adversarial_term(disc, y_hat, x, quirks))
    (loss + loss_d).backward()
    assert loss.device.type == "meta"
    assert all(p.grad is None or p.grad.device.type == "meta" for p in net.parameters())


@pytest.mark.parametrize("method", ["ifer", "fer_resnet18", "ke2nt_minilm", "disentangled"])
def test_fer_training_step_runs_on_the_training_device(method):
    """Guards: a FER model (or a tensor it makes, e.g. KE2NT's text embeddings) staying on the CPU when
    ``train_fer`` moves the model to the configured device.

    Forward, cross-entropy and backward on meta. The methods' own ``training_loss`` is not run: KE2NT's and the
    disentangled method's branch on tensor values (``bool(mask.any())``, logged floats), which meta cannot do."""
    cfg = load_config("tiny", overrides=["ifer.init=scratch"])
    model = stages.build_fer_model(cfg, method, 7)
    model.to(META)  # what train_fer does
    assert not _on(model, META), _on(model, META)[:5]
    x = torch.randn(4, 3, 64, 64, device=META)
    y = torch.tensor([0, 1, 2, 3], device=META)
    logits = model(x)
    assert logits.device.type == "meta" and logits.shape == (4, 7)
    torch.nn.functional.cross_entropy(logits, y).backward()
    assert all(p.grad is None or p.grad.device.type == "meta" for p in model.parameters())
    if hasattr(model, "expression_features"):
        assert model.expression_features(x).device.type == "meta"


def test_invert_forward_runs_on_the_configured_device(weights):
    """Guards: ``stage_invert`` decoding with a latent average, noise or struct tensor left on the CPU."""
    cfg = load_config("tiny", overrides=["asit.latent_avg_samples=16"])
    net, _, _ = stages.build_asit(cfg, for_training=False)
    net.to(META).eval()
    with torch.no_grad():
        y = net(torch.randn(2, 3, 64, 64, device=META), use_struct=stages._decode_with_struct(cfg), randomize_noise=False)
    assert y.device.type == "meta" and y.shape == (2, 3, 64, 64)


def test_eval_networks_live_on_the_configured_device(weights):
    """Guards: "eval_inversion ... runs on the CPU whatever `device` says" and "curricularface_ir101 is handed the
    ArcFace IR-SE50 file". A device-assert walk, not a meta step: the evaluator reads values back per image
    (``float``), which meta tensors cannot do. ``eval.id_weights`` (not ``asit.id_weights``) reaches the embedder."""
    from ifer.metrics.inversion import InversionEvaluator

    ev = InversionEvaluator(["mse", "lpips", "id_sim"], lpips_backbone=weights["torchvision_alexnet"],
                            id_embedder="curricularface_ir101", id_weights=weights["curricularface_ir101"],
                            device=META)
    assert not ev.unavailable, ev.unavailable
    assert not _on(ev._lpips, META) and not _on(ev._embedder, META)
    cfg = load_config("paper")
    assert cfg.eval.id_weights.endswith("CurricularFace_Backbone.pth") and "fid" in cfg.eval.inversion_metrics
    assert cfg.eval.inception_weights.endswith("weights-inception-2015-12-05-6726825d.pth")


@pytest.mark.parametrize("name,kwargs,size", [
    ("ifer_base", {"num_classes": 7}, 256), ("fer_resnet18", {"num_classes": 7}, 224),
    ("disentangled_resnet18", {"num_classes": 7}, 224), ("inversion_disc_256", {}, 256),
    ("asit_base", {"train_decoder": False}, 256),
])
def test_full_size_models_forward_on_the_configured_device(name, kwargs, size):
    """Guards: a tensor made inside a `paper`-size forward without ``device=`` (positional tables, masks, noise,
    relative-position indices) that the small `tiny` models never exercise. Built on meta (no memory), then run
    outside the meta context, so any tensor the forward creates without ``device=`` lands on the CPU and raises.
    ``ke2nt_resnet18`` is left out: it needs the CLIP file to build."""
    from ifer.models.registry import create_model

    with torch.device("meta"):
        model = create_model(name, **kwargs)
    model.to(META).eval()
    if name == "asit_base":  # the pipeline sets it on the CPU before moving (build_asit), i.e. from a loaded file
        model.set_latent_avg(torch.zeros(model.decoder.style_dim, device=META))
    assert not _on(model, META)
    x = torch.randn(2, 3, size, size, device=META)
    with torch.no_grad():
        out = model(x, x) if name.startswith("inversion_disc") else model(x)
    out = out[0] if isinstance(out, tuple) else out
    assert out.device.type == "meta"
