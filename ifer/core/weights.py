"""Known pretrained weights: every asset the suite can use, with where it comes from.

Pretrained assets never download: each is a file the user passes, checked against the sha256 in
``KNOWN_WEIGHTS`` when one is recorded, with an error that names the file and where to get it::

    python -c "from ifer.core.weights import KNOWN_WEIGHTS; print(sorted(KNOWN_WEIGHTS))"
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ifer.core.io import sha256_file

# ----------------------------------------------------------------------------------------------
# Known weights: every pretrained asset the suite can use, with where it comes from.


@dataclass(frozen=True)
class KnownWeights:
    """One pretrained asset. ``sha256`` is None where no canonical file hash is published."""

    # A record type like ifer.report.reference's paper values: the duplicate scan pairs them by shape only.

    name: str
    filename: str
    source: str
    used_by: str
    sha256: str | None = None
    sha256_prefix: str | None = None
    input_size: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    notes: str = ""
    licence: str = ""
    extra: dict = field(default_factory=dict)


# A table written as data, one KnownWeights per asset; its entries look alike because they are rows.
KNOWN_WEIGHTS: dict[str, KnownWeights] = {
    w.name: w
    for w in [
        KnownWeights(
            name="stylegan2_ffhq_256_rosinality",
            filename="550000.pt",
            source="rosinality/stylegan2-pytorch README, 'Pretrained Checkpoints' (FFHQ 256 px, 550k iterations)",
            used_by="ASIT decoder (asit_base); loaded from the 'g_ema' entry",
            input_size=256, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
            notes="The official IFER README links a 1024-px checkpoint; it does NOT fit the 256-px generator.",
            licence="code MIT (rosinality); FFHQ-trained weights: NVIDIA's FFHQ terms (CC BY-NC-SA 4.0), see source",
        ),
        KnownWeights(
            name="asit_ffhq_official",
            filename="best_model.pt",
            source="Talented-Q/IFER-master README (Baidu Pan, code 'asit')",
            used_by="asit_base encoder/decoder ('state_dict' with encoder.* / decoder.*, plus 'latent_avg')",
            input_size=256, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
            licence="not stated (repo MIT; its GC ViT code NVIDIA Source Code License-NC): see source",
        ),
        KnownWeights(
            name="ifer_rafdb_official",
            filename="model_best.pth.tar",
            source="Talented-Q/IFER-master README (Baidu Pan, code 'ifer')",
            used_by="ifer_base (timm CheckpointSaver file, 'state_dict' with feature_model.* / conv.* / style_conv.* / head.*)",
            input_size=256,
            licence="not stated (repo MIT; its GC ViT code NVIDIA Source Code License-NC): see source",
        ),
        KnownWeights(
            name="arcface_ir_se50",
            filename="model_ir_se50.pth",
            source="TreB1eN/InsightFace_Pytorch (pSp README link)",
            used_by="ID loss and ID-similarity metric (IR-SE50, 112x112 input)",
            input_size=112,
            licence="code MIT (TreB1eN/InsightFace_Pytorch); weights' terms not stated: see source",
        ),
        KnownWeights(
            name="curricularface_ir101",
            filename="CurricularFace_Backbone.pth",
            source="HuangYG123/CurricularFace (pSp README link)",
            used_by="ID-similarity metric as in the official calc_id_loss_parallel.py",
            input_size=112,
            licence="code MIT (HuangYG123/CurricularFace); weights' terms not stated: see source",
        ),
        KnownWeights(
            name="torchvision_alexnet",
            filename="alexnet-owt-7be5be79.pth",
            source="torchvision ImageNet AlexNet (download.pytorch.org/models/alexnet-owt-7be5be79.pth)",
            used_by="LPIPS(alex) backbone; the linear heads ship with the lpips package",
            sha256_prefix="7be5be79",
            notes="torchvision names its files by the first 8 hex digits of their sha256; only that prefix is known.",
            licence="BSD-3-Clause (torchvision)",
        ),
        KnownWeights(
            name="fid_inception_v3",
            filename="weights-inception-2015-12-05-6726825d.pth",
            source="torch-fidelity release v0.2.0",
            used_by="FID (torchmetrics FrechetInceptionDistance feature_extractor_weights_path)",
            licence="Apache-2.0 (torch-fidelity; ported from TensorFlow's Inception v3)",
        ),
        KnownWeights(
            name="torchvision_resnet18_imagenet",
            filename="resnet18-f37072fd.pth",
            source="torchvision ImageNet ResNet-18 (download.pytorch.org/models/resnet18-f37072fd.pth)",
            used_by="the ImageNet start of every ResNet-18-based FER method in the paper profile (fer_resnet18, ke2nt, "
                    "ke2nt_minilm, disentangled); its keys equal timm's resnet18, fc.* dropped",
            sha256_prefix="f37072fd", input_size=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
            notes="torchvision names its files by the first 8 hex digits of their sha256; only that prefix is known.",
            licence="BSD-3-Clause (torchvision)",
        ),
        KnownWeights(
            name="clip_vit_b16",
            filename="ViT-B-16.pt",
            source="OpenAI CLIP ViT-B/16 (open_clip 'ViT-B-16', pretrained='openai')",
            used_by="KE2NT text encoder (paper setting)",
            licence="MIT (openai/CLIP)",
        ),
    ]
}


class MissingWeightsError(FileNotFoundError):
    """A pretrained asset the user must supply is missing; the message says which and where to get it."""


class WeightsHashError(ValueError):
    """A user-supplied weight file is not the published one (its sha256 differs); one line naming the file."""


def check_sha256(path: str | Path, expected: str | None) -> str:
    """Return the file's sha256; raise WeightsHashError naming the file if it does not start with ``expected``.

    ``expected`` may be a full digest or a published prefix (torchvision publishes 8 hex digits)."""
    digest = sha256_file(path)
    if expected and not digest.startswith(expected.lower()):
        raise WeightsHashError(f"{path}: sha256 {digest} does not match the known value {expected}")
    return digest


# Known weights whose published hash is deliberately not checked in this process (config key
# `weights.skip_sha256`, set once by the CLI from the resolved config, so it is recorded with every result).
# Only the rehearsal uses it: a random-valued stand-in cannot carry torchvision's published digest.
_SKIP_SHA256: set[str] = set()


def set_skip_sha256(names) -> None:
    unknown = sorted(set(names) - set(KNOWN_WEIGHTS))
    if unknown:
        raise KeyError(f"weights.skip_sha256: unknown weights {unknown}; known: {sorted(KNOWN_WEIGHTS)}")
    _SKIP_SHA256.clear()
    _SKIP_SHA256.update(names)


def resolve_weights(name: str, path: str | Path | None) -> Path:
    """Return the user's file for known asset ``name``, or raise MissingWeightsError saying what to do."""
    if name not in KNOWN_WEIGHTS:
        raise KeyError(f"unknown weights {name!r}; known: {sorted(KNOWN_WEIGHTS)}")
    w = KNOWN_WEIGHTS[name]
    if path is None or not Path(path).is_file():
        where = f"the path given ({path})" if path is not None else "no path was given"
        raise MissingWeightsError(
            f"missing pretrained weights {name!r} ({w.filename}): {where}. Obtain it from {w.source} and pass "
            f"its path; nothing is downloaded at run time. Used by: {w.used_by}.")
    if name in _SKIP_SHA256:
        import logging

        logging.getLogger("ifer").warning("%s: the published sha256 of %r is NOT checked (weights.skip_sha256)",
                                          path, name)
    elif w.sha256 or w.sha256_prefix:
        check_sha256(path, w.sha256 or w.sha256_prefix)
    return Path(path)
