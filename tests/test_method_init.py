"""Issue 13 item 3 wiring: each method's initialisation is recorded, `paper` has an ImageNet ResNet-18 from a
user path, KE2NT's published schedule and transform reach the trainer, and MiniLM KE2NT never reports as `ke2nt`.

    .venv/bin/python -m pytest tests/test_method_init.py -q
"""
from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from ifer.core.config import ConfigError, load_config
from ifer.core.weights import KNOWN_WEIGHTS, MissingWeightsError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_paper_resnet18_starts_from_imagenet_weights_of_a_user_path(tmp_path, monkeypatch):
    import torchvision

    from ifer.models.registry import build_from_config

    spec = load_config("paper").fer_methods.fer_resnet18
    assert spec.init == "imagenet" and spec.kwargs.known_weights == "torchvision_resnet18_imagenet"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MissingWeightsError, match=r"torchvision_resnet18_imagenet.*resnet18-f37072fd\.pth"):
        build_from_config(spec, num_classes=7)
    # a stand-in file (random torchvision weights; only the real file has the published sha256 prefix)
    (tmp_path / "weights").mkdir()
    sd = torchvision.models.resnet18().state_dict()
    torch.save(sd, tmp_path / "weights" / "resnet18-f37072fd.pth")
    monkeypatch.setitem(KNOWN_WEIGHTS, "torchvision_resnet18_imagenet",
                        dataclasses.replace(KNOWN_WEIGHTS["torchvision_resnet18_imagenet"], sha256_prefix=None))
    model = build_from_config(spec, num_classes=7)
    assert torch.equal(model.backbone.conv1.weight, sd["conv1.weight"])  # loaded strictly, fc.* dropped
    assert torch.equal(model.backbone.layer4[1].bn2.running_var, sd["layer4.1.bn2.running_var"])


def test_fer_init_records_every_methods_initialisation(tmp_path, monkeypatch):
    from ifer.stages import stage_fer_init

    monkeypatch.chdir(tmp_path)
    for profile, expected in [("tiny", {"fer_resnet18": "scratch", "ke2nt_minilm": "scratch", "disentangled": "scratch"}),
                              ("paper", {"fer_resnet18": "imagenet", "ke2nt": "imagenet", "disentangled": "imagenet"})]:
        written = stage_fer_init(load_config(profile, overrides=["seeds=[0]"]))
        got = {m: json.loads(written[f"clean/{m}_seed0"].read_text())["init"] for m in expected}
        assert got == expected, profile
    paper = json.loads(written["released/fer_resnet18_seed0"].read_text())
    # one record format for every start file (stages._file_record), a missing one included
    assert paper["weights"] == {"path": "weights/resnet18-f37072fd.pth", "status": "missing"}


def test_paper_resnet18_methods_start_from_the_same_imagenet_file(tmp_path, monkeypatch):
    """Like-for-like (issue 18 item 6): in `paper` every ResNet-18-based method (fer_resnet18, ke2nt, ke2nt_minilm,
    disentangled) builds its backbone from the one ImageNet file, bit for bit; `init` says `imagenet` for each;
    fer_init records the file's sha256 (and KE2NT's CLIP file), and fingerprint-inputs tracks both, so
    replacing one reruns the runs that start from it."""
    import torchvision

    from ifer.models.registry import build_from_config
    from ifer.stages import _used_weights, stage_fer_init

    paper = load_config("paper")
    users = [m for m, spec in paper.fer_methods.items() if "resnet18" in spec.model]
    assert sorted(users) == ["disentangled", "fer_resnet18", "ke2nt", "ke2nt_minilm"]
    assert {paper.fer_methods[m].kwargs.pretrained_path for m in users} == {"weights/resnet18-f37072fd.pth"}
    assert {paper.fer_methods[m].init for m in users} == {"imagenet"}
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights").mkdir()
    torch.manual_seed(0)
    sd = torchvision.models.resnet18().state_dict()
    torch.save(sd, tmp_path / "weights" / "resnet18-f37072fd.pth")
    monkeypatch.setitem(KNOWN_WEIGHTS, "torchvision_resnet18_imagenet",
                        dataclasses.replace(KNOWN_WEIGHTS["torchvision_resnet18_imagenet"], sha256_prefix=None))
    want = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    for method in ("fer_resnet18", "ke2nt_minilm", "disentangled"):  # ke2nt also needs the CLIP file: same backbone code
        backbone = build_from_config(paper.fer_methods[method], num_classes=7).backbone.state_dict()
        assert backbone.keys() == want.keys() and all(torch.equal(backbone[k], want[k]) for k in want), method
    fer_keys = _used_weights(paper)["fer_weights"]
    assert fer_keys["fer_methods.ke2nt.kwargs.pretrained_path"] == "weights/resnet18-f37072fd.pth"
    assert fer_keys["fer_methods.ke2nt.kwargs.text_encoder_kwargs.weights_path"] == "weights/ViT-B-16.pt"
    written = stage_fer_init(load_config("paper", overrides=["seeds=[0]"]))
    ke2nt = json.loads(written["clean/ke2nt_seed0"].read_text())
    assert ke2nt["weights"]["path"] == "weights/resnet18-f37072fd.pth" and len(ke2nt["weights"]["sha256"]) == 64
    assert ke2nt["text_weights"] == {"path": "weights/ViT-B-16.pt", "status": "missing"}


def test_minilm_ke2nt_is_its_own_method(tmp_path):
    from ifer.stages import build_fer_model

    tiny = load_config("tiny")
    assert "ke2nt" not in tiny.methods and "ke2nt_minilm" in tiny.methods
    assert build_fer_model(tiny, "ke2nt_minilm", 7).method_label == "ke2nt_minilm"
    wrong = load_config("tiny", overrides=["fer_methods.ke2nt.model=ke2nt_tiny"])
    with pytest.raises(ConfigError, match="rename the method to 'ke2nt_minilm'"):
        build_fer_model(wrong, "ke2nt", 7)


def test_paper_ke2nt_schedule_and_transform_reach_the_trainer():
    from torchvision import transforms as T

    from ifer.data.build import fer_train_transform
    from ifer.train.fer import build_scheduler

    tr = load_config("paper").fer_methods.ke2nt.train
    assert any(isinstance(t, T.RandomApply) for t in fer_train_transform(tr).transforms)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=tr.lr)
    sched, upe, lrs = build_scheduler(opt, tr, 7), 7, []
    for epoch in range(tr.epochs):  # as train_fer: step_update per update, step per epoch
        lrs.append(opt.param_groups[0]["lr"])
        for u in range(upe):
            sched.step_update(num_updates=epoch * upe + u + 1)
            assert opt.param_groups[0]["lr"] == lrs[-1]  # constant within an epoch
        sched.step(epoch + 1)
    official = [1e-4] + [0.001 * (1 + math.cos(math.pi * (e - 1) / 50)) for e in range(1, 50)]
    assert lrs == pytest.approx(official, rel=1e-12)


def test_paper_ke2nt_evaluates_with_its_codes_bilinear_resize():
    """KE2NT's test transform is torchvision Resize(112) (bilinear, its default) then ImageNet normalisation: the
    suite's eval pipeline for the paper KE2NT recipe resizes bilinearly to 112 and crops nothing (crop_pct 1)."""
    from torchvision import transforms as T
    from torchvision.transforms import InterpolationMode

    from ifer.data.build import fer_eval_transform

    for method in ("ke2nt", "ke2nt_minilm"):
        ops = fer_eval_transform(load_config("paper").fer_methods[method].train).transforms
        resize = next(t for t in ops if isinstance(t, T.Resize))
        assert resize.interpolation == InterpolationMode.BILINEAR and resize.size in (112, [112], (112, 112)), method
    assert load_config("paper").fer_methods.fer_resnet18.train.interpolation == "bicubic"  # the timm recipes keep theirs
