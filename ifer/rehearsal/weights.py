"""Random-valued weight files in each upstream format, under the file names the ``paper`` profile expects.

Every file is built from the suite's own model classes (or the library's, for FID), seeded, so its keys and
shapes are exactly what the strict loaders accept; the values are random, so metrics computed with them are
numbers without meaning. A random file cannot match a published sha256: the rehearsal profile records which
checks it skips (see ``ifer/configs/profiles/rehearse.yaml``)::

    python -c "from ifer.rehearsal.weights import write_weights; print(write_weights('/tmp/rh/weights'))"
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import torch

#: KNOWN_WEIGHTS name -> file name, as in ``ifer/configs/profiles/paper.yaml`` (and the upstream file names).
FILES = {
    "stylegan2_ffhq_256_rosinality": "stylegan2-ffhq-256-550000.pt",
    "torchvision_alexnet": "alexnet-owt-7be5be79.pth",
    "arcface_ir_se50": "model_ir_se50.pth",
    "curricularface_ir101": "CurricularFace_Backbone.pth",
    "fid_inception_v3": "weights-inception-2015-12-05-6726825d.pth",
    "torchvision_resnet18_imagenet": "resnet18-f37072fd.pth",
    "clip_vit_b16": "ViT-B-16.pt",
}


def stylegan2_rosinality(seed: int = 0) -> dict:
    """A dict as rosinality's ``train.py`` saves it (``550000.pt``): ``g``, ``d``, ``g_ema``, ``g_optim``,
    ``d_optim``, ``args`` (an argparse Namespace). No ``latent_avg``: train.py does not save one, so loaders
    must compute it (``asit.latent_avg_samples``)."""
    from ifer.models.stylegan2 import Discriminator, Generator

    torch.manual_seed(seed)
    g_ema, g, d = Generator(256, 512, 8), Generator(256, 512, 8), Discriminator(256)
    args = argparse.Namespace(size=256, batch=16, iter=800000, r1=10.0, path_regularize=2.0, lr=0.002,
                              channel_multiplier=2, mixing=0.9, n_sample=64, latent=512, n_mlp=8)
    # Empty Adam states (no step taken) keep the file small while matching the saved structure.
    g_optim = torch.optim.Adam(g.parameters(), lr=args.lr, betas=(0.0, 0.99)).state_dict()
    d_optim = torch.optim.Adam(d.parameters(), lr=args.lr, betas=(0.0, 0.99)).state_dict()
    return {"g": g.state_dict(), "d": d.state_dict(), "g_ema": g_ema.state_dict(), "g_optim": g_optim,
            "d_optim": d_optim, "args": args}


def torchvision_alexnet(seed: int = 0) -> dict:
    """``torchvision.models.alexnet().state_dict()`` (``features.*``, ``classifier.*``), what LPIPS' trunk reads."""
    from torchvision.models import alexnet

    torch.manual_seed(seed)
    return alexnet(weights=None).state_dict()


def arcface_ir_se50(seed: int = 0) -> dict:
    """TreB1eN ``model_ir_se50.pth``: a bare IR-SE50 state dict."""
    from ifer.metrics.irse import ir_se50

    torch.manual_seed(seed)
    return ir_se50().state_dict()


def curricularface_ir101(seed: int = 0) -> dict:
    """``CurricularFace_Backbone.pth``: a bare IR-101 state dict (final BN1d without affine)."""
    from ifer.metrics.irse import ir101

    torch.manual_seed(seed)
    return ir101().state_dict()


def fid_inception_v3(seed: int = 0) -> dict:
    """torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth``: the state dict of its
    ``FeatureExtractorInceptionV3`` (what torchmetrics' ``feature_extractor_weights_path`` loads)."""
    from torch_fidelity import feature_extractor_inceptionv3 as fe

    torch.manual_seed(seed)
    # The class loads weights inside __init__ (downloading without a path); building the bare architecture
    # needs both steps stubbed. The keys then come from the library's own module, whatever its version.
    with mock.patch.object(fe, "load_state_dict_from_url", lambda *a, **k: {}), \
            mock.patch.object(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, *a, **k: None):
        net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    return net.state_dict()


def torchvision_resnet18_imagenet(seed: int = 0) -> dict:
    """``torchvision.models.resnet18().state_dict()`` (``conv1.*``, ``layer1.*`` ... ``fc.*``), as
    ``resnet18-f37072fd.pth``: the ImageNet initialisation of the paper profile's ``fer_resnet18``."""
    from torchvision.models import resnet18

    torch.manual_seed(seed)
    return resnet18(weights=None).state_dict()


def clip_vit_b16(seed: int = 0) -> dict:
    """OpenAI CLIP ViT-B/16 (``ViT-B-16.pt``) as a state dict with OpenAI's keys (``visual.*``, ``transformer.*``,
    ``token_embedding.weight``, ``text_projection``, ``logit_scale``) in fp16, as released; open_clip's
    ``load_openai_model`` reads it like the TorchScript archive's state dict. ``logit_scale`` is set to
    ln(100), the released value, so KE2NT's logits have their real scale."""
    import math

    import open_clip

    torch.manual_seed(seed)
    model = open_clip.create_model("ViT-B-16-quickgelu", pretrained=None)  # OpenAI's CLIP uses QuickGELU
    sd = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    sd["logit_scale"] = torch.tensor(math.log(100.0), dtype=torch.float16)
    return sd


BUILDERS: dict[str, Callable[[int], dict]] = {
    "stylegan2_ffhq_256_rosinality": stylegan2_rosinality,
    "torchvision_alexnet": torchvision_alexnet,
    "arcface_ir_se50": arcface_ir_se50,
    "curricularface_ir101": curricularface_ir101,
    "fid_inception_v3": fid_inception_v3,
    "torchvision_resnet18_imagenet": torchvision_resnet18_imagenet,
    "clip_vit_b16": clip_vit_b16,
}


def write_weights(folder: str | Path, seed: int = 0, names=None) -> dict[str, Path]:
    """Write the weight files (all of ``FILES`` unless ``names``) into ``folder``; returns ``{name: path}``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in names or FILES:
        path = folder / FILES[name]
        torch.save(BUILDERS[name](seed), path)
        out[name] = path
    return out


#: official-layout checkpoints of the authors' two released kinds, written by :func:`write_official_checkpoints`
OFFICIAL_FILES = {"ifer": "official/ifer_rafdb_model_best.pth.tar", "asit": "official/asit_ffhq_best_model.pt"}


def write_official_checkpoints(folder: str | Path, seed: int = 0, ifer_model: str = "ifer_base",
                               asit_model: str = "asit_base", latent_samples: int = 1000) -> dict[str, Path]:
    """Random-valued files in the layouts of the authors' released weights, what ``ifer eval-checkpoint`` reads:

    * IFER: a timm ``CheckpointSaver`` file (``state_dict`` with ``feature_model.*, conv.*, style_conv.*, head.*``,
      ``args`` Namespace, ``epoch``, ``arch``, ``version``, ``metric``) from the ``as_released`` network (the
      authors' GC ViT code; random rows, so their class order carries nothing); its ``args`` leave mean, std, crop_pct and
      interpolation at timm's train.py defaults (unset), as a run without those flags saves them.
    * ASIT: ``{'state_dict': {'encoder.*', 'decoder.*'}, 'opts': dict, 'latent_avg': (512,)}`` with no
      ``opts['quirks']`` (the authors' code records none, so the loader builds it ``as_released``).

        python -c "from ifer.rehearsal.weights import write_official_checkpoints as w; print(w('/tmp/rh/weights'))"
    """
    from ifer.core.quirks import Quirks
    from ifer.models.registry import create_model

    folder = Path(folder)
    out = {k: folder / v for k, v in OFFICIAL_FILES.items()}
    out["ifer"].parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    net = create_model(ifer_model, num_classes=7, mode="as_released")
    sd = net.state_dict()
    args = argparse.Namespace(model="ifer_model", num_classes=7, img_size=256, input_size=None, mean=None, std=None,
                              crop_pct=None, interpolation="", lr=1e-4, batch_size=16, epochs=320,
                              data_dir="/authors/rafdb", ckpt_asit="/authors/best_model1.pt")
    torch.save({"epoch": 0, "arch": "ifer_model", "state_dict": sd, "version": 2, "metric": 0.0, "args": args},
               out["ifer"])
    del net, sd
    torch.manual_seed(seed + 1)
    asit = create_model(asit_model, quirks=Quirks(), start_from_latent_avg=True)
    asit.init_latent_avg(latent_samples, seed=seed)
    torch.save({"state_dict": asit.state_dict(), "latent_avg": asit.latent_avg.cpu(),
                "opts": {"exp_dir": "/authors/ffhq_asit", "dataset_type": "ffhq_encode", "batch_size": 8,
                         "output_size": asit.decoder.size}}, out["asit"])
    return out
