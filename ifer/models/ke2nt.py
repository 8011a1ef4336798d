"""KE2NT: knowledge-enhanced FER with emotional-to-neutral transformation (Li et al., arXiv 2409.08598, TMM 2025).

Image encoder (timm) -> projection head (Linear-BN-Linear-BN, bias-free, BN eps 2e-5 as in the
official Swin-T ``feature`` head) -> f_e in the text space. Logits = ``logit_scale`` x cos(f_e, t_k)
against frozen class-prompt embeddings t_k. Training adds an MLP f_n = MLP(f_e) (D -> 128 -> D), the
transformation loss L_t and the self-contrast loss L_c (``ifer.losses.ke2nt``); the MLP is unused at
inference. Faithful to hangyu94/KE2NT (``models/backbone_raf.py``, ``swint_raf_main.py``) except where
``docs/methods.md`` says otherwise (label order, text encoder, neutral-only batches).

Prompts are built in the suite's canonical label order (neutral=0, happy, sad, surprise, fear, disgust,
anger[, contempt]) with the official wording ("a photo of a person making a happiness facial
expression."); ``neutral_index`` says which class is neutral (the official RAF-DB order has it at 6).

    python -c "import torch, tempfile, os; from ifer.models.ke2nt import *; \
from ifer.models.text_encoders import save_precomputed; p = os.path.join(tempfile.mkdtemp(), 't.pt'); \
save_precomputed(p, class_prompts(7), torch.randn(7, 32), 'random'); \
m = ke2nt_tiny(text_encoder='precomputed', text_encoder_kwargs={'path': p}); \
print(m(torch.randn(2, 3, 64, 64)).shape, m.training_loss(torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 3]))[1])"
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from ifer.core.config import ConfigError
from ifer.losses.classification import classification_loss, hard_labels
from ifer.losses.ke2nt import self_contrast_loss, transformation_loss
from ifer.models.baselines import build_timm_backbone
from ifer.models.registry import register_model
from ifer.models.text_encoders import TextEncoder, build_text_encoder, cached_encode

__all__ = ["KE2NT", "RECIPE", "PROMPT_TEMPLATE", "CLASS_PHRASES", "PAPER_TEXT_ENCODER", "class_prompts",
           "method_label", "check_method_name", "ke2nt_resnet18", "ke2nt_minilm_resnet18", "ke2nt_swin_t", "ke2nt_tiny"]

PROMPT_TEMPLATE = "a photo of a person making {} facial expression."
# Canonical order of ifer.data.labels.EXPRESSIONS_8 (models do not import data; a test checks they agree).
# Phrases (article included) are the official ones; "contempt" is ours (RAF-DB has no such class).
CLASS_PHRASES: tuple[str, ...] = ("a neutral", "a happiness", "a sadness", "a surprise", "a fear", "a disgust",
                                  "an anger", "a contempt")

#: The published training recipe (official ``swint_raf_main.py`` + ``utils/lr_scheduler.py``), for the trainer
#: and for the test that ``profiles/paper.yaml`` follows it. Epoch 0 runs at a constant 1e-4; from epoch 1 on,
#: CosineAnnealingLR(T_max=50) stepped once per epoch (lr 0.002 at epoch 1, then 0.001 * (1 + cos(pi (e-1) / 50))),
#: 50 epochs in all. ``optimizer: momentum`` is timm's name for plain SGD (its ``sgd`` is Nesterov).
RECIPE: dict = {
    "optimizer": {"name": "momentum", "nesterov": False, "lr": 0.002, "momentum": 0.9, "weight_decay": 5e-4},
    "schedule": {"name": "cosine", "epochs": 50, "warmup_epochs": 1, "warmup_lr": 1e-4, "warmup": "constant",
                 "t_max_epochs": 50, "step": "epoch"},
    "batch_size": 64, "eval_batch_size": 100, "drop_last": True, "seed": 29, "clip_grad": None, "amp": False,
    "input_size": 112,
    "augment": {"resize": 112, "random_crop": {"size": 112, "padding": 4, "p": 0.5}, "hflip": 0.5,
                "random_erasing": {"p": 0.5, "scale": (0.02, 0.25)}},
    "eval": {"resize": 112, "crop_pct": 1.0},
    "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
    "loss_weights": {"s": 1.0, "t": 1.0, "c": 1.0},
    # The official script keeps the epoch with the best RAF-DB *test* accuracy; the suite selects on a
    # held-out split instead (see docs/methods.md).
    "model_selection": "best_test_epoch (official); held-out validation (suite)",
}

#: Paper-setting text encoder; any other encoder makes a different method (see :attr:`KE2NT.method_label`).
PAPER_TEXT_ENCODER = "clip_vit_b16"
_ENCODER_LABELS = {"clip_vit_b16": "ke2nt", "offline_minilm_l6_v2": "ke2nt_minilm"}


def method_label(text_encoder_name: str) -> str:
    """The method name results must carry for a KE2NT model with this text encoder.

    Only the paper's CLIP ViT-B/16 text tower gives ``ke2nt``; the offline MiniLM stand-in gives
    ``ke2nt_minilm``. Precomputed rows count as the encoder that produced them (``precomputed:<source>``).
    """
    source = text_encoder_name.removeprefix("precomputed:")
    return _ENCODER_LABELS.get(source, f"ke2nt_{source.replace(':', '_')}")


def check_method_name(method: str, text_encoder_name: str) -> None:
    """Raise ConfigError unless the results name ``method`` fits the text encoder (for the pipeline to call).

    ``method`` must be the label of :func:`method_label` or extend it (``ke2nt_swin`` with CLIP,
    ``ke2nt_minilm_swin`` with MiniLM), and must not extend the label of another encoder: ``ke2nt_minilm``
    with CLIP, or ``ke2nt`` with MiniLM, would put one setting's numbers under the other's name.
    """
    label = method_label(text_encoder_name)
    others = [x for x in _ENCODER_LABELS.values() if x != label and x.startswith(label)]
    fits = method == label or (method.startswith(label + "_") and not any(
        method == o or method.startswith(o + "_") for o in others))
    if not fits:
        raise ConfigError(f"fer_methods.{method}: a KE2NT model with text encoder {text_encoder_name!r} reports "
                          f"as method {label!r}; rename the method to {label!r} (or {label}_<variant>)")


def class_prompts(num_classes: int = 7, template: str = PROMPT_TEMPLATE) -> list[str]:
    """The class prompts in canonical order, e.g. index 1 -> 'a photo of a person making a happiness ...'."""
    if not 1 <= num_classes <= len(CLASS_PHRASES):
        raise ValueError(f"no prompts for {num_classes} classes (at most {len(CLASS_PHRASES)})")
    return [template.format(p) for p in CLASS_PHRASES[:num_classes]]


def _projection_head(in_dim: int, out_dim: int) -> nn.Sequential:
    # Official Swin-T ``feature`` head: bias-free linears, BN eps 2e-5 (insightface convention).
    return nn.Sequential(nn.Linear(in_dim, in_dim, bias=False), nn.BatchNorm1d(in_dim, eps=2e-5),
                         nn.Linear(in_dim, out_dim, bias=False), nn.BatchNorm1d(out_dim, eps=2e-5))


class KE2NT(nn.Module):
    """KE2NT with a timm image encoder and any :class:`~ifer.models.text_encoders.TextEncoder`.

    Args:
        backbone: timm model name; ``backbone_kwargs`` go to ``timm.create_model``.
        text_encoder: an encoder or its name (``text_encoder_kwargs`` build it); the class-prompt embeddings
            are computed once here (cached on disk by :func:`cached_encode`) and stored as the buffer
            ``class_text`` so a checkpoint carries them.
        neutral_index: index of the neutral class (0 in the suite's order, 6 in the official RAF-DB order).
        logit_scale: CLIP's exp(logit_scale) = 100 in the official code (frozen); used for every encoder.
        pairwise: self-contrast averaging, ``"all"`` = released code (B x B pairs), ``"diagonal"`` = per sample.
        loss_weights: (lambda_s, lambda_t, lambda_c), all 1 in the official code.
    """

    def __init__(self, backbone: str = "resnet18", num_classes: int = 7,
                 text_encoder: TextEncoder | str = PAPER_TEXT_ENCODER, text_encoder_kwargs: dict | None = None,
                 img_size: int = 112, neutral_index: int = 0, prompts: Sequence[str] | None = None,
                 logit_scale: float = 100.0, transform_hidden: int = 128,
                 pairwise: Literal["all", "diagonal"] = "all", loss_weights: Sequence[float] = (1.0, 1.0, 1.0),
                 pretrained_path: str | Path | None = None, known_weights: str | None = None, text_cache_dir: str | Path | None = None,
                 backbone_kwargs: dict | None = None):
        super().__init__()
        if not 0 <= neutral_index < num_classes:
            raise ValueError(f"neutral_index {neutral_index} outside 0..{num_classes - 1}")
        encoder = build_text_encoder(text_encoder, **(text_encoder_kwargs or {}))
        self.prompts = list(prompts) if prompts is not None else class_prompts(num_classes)
        if len(self.prompts) != num_classes:
            raise ValueError(f"{len(self.prompts)} prompts for {num_classes} classes")
        with torch.no_grad():
            text = cached_encode(encoder, self.prompts, text_cache_dir).float()
        self.register_buffer("class_text", text)
        self.text_encoder_name = encoder.name
        self.num_classes = num_classes
        self.img_size = img_size
        self.neutral_index = neutral_index
        self.logit_scale = logit_scale
        self.pairwise = pairwise
        self.loss_weights = tuple(float(w) for w in loss_weights)
        self.backbone = build_timm_backbone(backbone, img_size, pretrained_path, known_weights=known_weights,
                                            **(backbone_kwargs or {}))
        self.head = _projection_head(self.backbone.num_features, encoder.dim)
        self.to_neutral = nn.Sequential(nn.Linear(encoder.dim, transform_hidden), nn.ReLU(),
                                        nn.Linear(transform_hidden, encoder.dim))

    @property
    def method_label(self) -> str:
        """``ke2nt`` only with the paper's CLIP text encoder, else e.g. ``ke2nt_minilm`` (for results tables)."""
        return method_label(self.text_encoder_name)

    def expression_features(self, x: torch.Tensor) -> torch.Tensor:
        """f_e: the image feature in the text space (B, D)."""
        return self.head(self.backbone(x))

    def similarity_logits(self, f_e: torch.Tensor) -> torch.Tensor:
        return self.logit_scale * F.normalize(f_e, dim=-1) @ F.normalize(self.class_text, dim=-1).t()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.similarity_logits(self.expression_features(x))

    def training_loss(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """L = l_s * CE + l_t * L_t + l_c * L_c. Soft targets feed CE as given; L_t/L_c use their argmax."""
        f_e = self.expression_features(x)
        f_n = self.to_neutral(f_e)
        logits = self.similarity_logits(f_e)
        y = hard_labels(target)
        t_y = self.class_text[y]
        mask = y != self.neutral_index
        l_s = classification_loss(logits, target)
        l_t = transformation_loss(f_e, f_n, t_y, self.class_text[self.neutral_index], mask)
        l_c = self_contrast_loss(t_y[mask], f_e[mask], f_n[mask], self.pairwise)
        ws, wt, wc = self.loss_weights
        loss = ws * l_s + wt * l_t + wc * l_c
        logs = {"loss": loss, "ce": l_s, "transform": l_t, "self_contrast": l_c,
                "acc": (logits.argmax(-1) == y).float().mean(), "non_neutral_frac": mask.float().mean()}
        return loss, {k: v.item() for k, v in logs.items()}


@register_model(family="ke2nt")
def ke2nt_resnet18(num_classes: int = 7, text_encoder: TextEncoder | str = PAPER_TEXT_ENCODER,
                   img_size: int = 112, **kw) -> KE2NT:
    """ResNet-18 variant (the paper's CNN backbone; its face-recognition pretraining is not released).

    The paper's CLIP ViT-B/16 text encoder: pass ``text_encoder_kwargs={'weights_path': .../ViT-B-16.pt}``."""
    return KE2NT("resnet18", num_classes=num_classes, text_encoder=text_encoder, img_size=img_size, **kw)


@register_model(family="ke2nt")
def ke2nt_minilm_resnet18(num_classes: int = 7, img_size: int = 112, **kw) -> KE2NT:
    """ResNet-18 KE2NT with the offline all-MiniLM-L6-v2 text encoder: NOT the paper's setting (method
    ``ke2nt_minilm``); runs without CLIP weights."""
    return KE2NT("resnet18", num_classes=num_classes, text_encoder="offline_minilm_l6_v2", img_size=img_size, **kw)


@register_model(family="ke2nt")
def ke2nt_swin_t(num_classes: int = 7, text_encoder: TextEncoder | str = PAPER_TEXT_ENCODER,
                 img_size: int = 112, patch_size: int = 2, drop_path_rate: float = 0.1, **kw) -> KE2NT:
    """Swin-T as in the official code: 112 px, patch 2, window 7, drop path 0.1 (56x56 tokens, like 224/4)."""
    bk = {"patch_size": patch_size, "drop_path_rate": drop_path_rate, **kw.pop("backbone_kwargs", {})}
    return KE2NT("swin_tiny_patch4_window7_224", num_classes=num_classes, text_encoder=text_encoder,
                 img_size=img_size, backbone_kwargs=bk, **kw)


@register_model(family="ke2nt")
def ke2nt_tiny(num_classes: int = 7, text_encoder: TextEncoder | str = "offline_minilm_l6_v2",
               img_size: int = 64, **kw) -> KE2NT:
    """CPU-test size: timm ``test_resnet`` (0.37 M parameters) at 64 px. Its default text encoder is the offline
    MiniLM (no CLIP weights offline), so its results are method ``ke2nt_minilm`` (``model.method_label``)."""
    return KE2NT("test_resnet", num_classes=num_classes, text_encoder=text_encoder, img_size=img_size, **kw)
