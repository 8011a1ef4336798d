"""Model registry, known-weights registry and safe, strict checkpoint loading."""
import argparse

import pytest
import torch

from ifer.core.loading import CheckpointError, load_state_dict_strict, read_checkpoint, read_state_dict
from ifer.core.quirks import get_quirks, resolved_quirks
from ifer.core.weights import KNOWN_WEIGHTS, MissingWeightsError, check_sha256, resolve_weights
from ifer.models.registry import build_from_config, create_model, list_models


def test_registry_lists_and_rejects_unknown():
    names = list_models()
    assert names == sorted(names) and len(names) > 5
    with pytest.raises(KeyError, match="unknown model 'no_such_model'"):
        create_model("no_such_model")


def test_build_from_config_routes_by_family():
    # a family without a config builder: kwargs + num_classes, the rest of the context is not its business
    m = build_from_config({"model": "fer_resnet18_tiny", "kwargs": {"drop_rate": 0.1}}, num_classes=5, mode="as_released")
    assert m.head.out_features == 5 and m.dropout.p == 0.1
    # the IFER family gets the run's quirk mode (it used to be built as_described whatever the config said)
    for mode in ("as_released", "as_described"):
        net = build_from_config({"model": "ifer_tiny", "kwargs": {}}, num_classes=3, mode=mode)
        assert net.feature_model.quirks == get_quirks(mode) and net.head.out_features == 3
    with pytest.raises(KeyError, match="unknown model 'no_such_model'"):
        build_from_config({"model": "no_such_model"})


def test_ifer_init_checkpoint_loads_the_asit_encoder(tmp_path):
    asit = create_model("asit_tiny")
    asit.save_checkpoint(tmp_path / "asit.pt")
    net = build_from_config({"model": "ifer_tiny"}, num_classes=7, init_checkpoint=tmp_path / "asit.pt")
    assert all(torch.equal(a, b) for a, b in zip(net.feature_model.state_dict().values(),
                                                 asit.encoder.state_dict().values()))


def test_build_untrained_skips_start_weights_and_loads_to_the_same_network(tmp_path):
    """eval_fer and `ifer predict` build the network without its start weights (no ASIT encoder file, no ImageNet
    file: they may be gone) and load best.pt; the result equals building with them and loading best.pt."""
    from ifer.models.registry import build_untrained

    asit = create_model("asit_tiny")
    asit.save_checkpoint(tmp_path / "asit.pt")
    started = build_from_config({"model": "ifer_tiny"}, num_classes=7, mode="as_released",
                                init_checkpoint=tmp_path / "asit.pt")
    torch.nn.init.normal_(started.head.weight)  # "training"
    bare = build_untrained({"model": "ifer_tiny"}, num_classes=7, mode="as_released",
                           init_checkpoint=tmp_path / "missing.pt")
    assert bare.feature_model.quirks == get_quirks("as_released")
    enc = asit.encoder.state_dict()
    assert not all(torch.equal(v, enc[k]) for k, v in bare.feature_model.state_dict().items())  # file not read
    load_state_dict_strict(bare, started.state_dict(), "best.pt")
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(bare.eval()(x), started.eval()(x))
    r18 = build_untrained({"model": "fer_resnet18", "kwargs": {"pretrained_path": str(tmp_path / "gone.pth"),
                                                               "known_weights": "torchvision_resnet18_imagenet"}},
                          num_classes=7)
    assert r18.head.out_features == 7


def _fer_sections():
    """Every FER method section of tiny and paper, with its input size (paper's KE2NT gets a random CLIP ViT-B/16
    file in OpenAI's format for its text tower, as the rehearsal writes)."""
    from ifer.core.config import load_config

    for profile in ("tiny", "paper"):
        cfg = load_config(profile)
        for method in cfg.methods:
            spec = cfg.fer_methods[method]
            yield pytest.param(spec.to_dict() if hasattr(spec, "to_dict") else dict(spec), cfg.ifer.mode,
                               int(spec.train.img_size), id=f"{profile}-{method}")


@pytest.mark.parametrize("section,mode,size", list(_fer_sections()))
def test_build_untrained_without_init_loads_to_the_initialised_network_bit_for_bit(section, mode, size, monkeypatch,
                                                                                   tmp_path):
    """``build_untrained`` skips random initialisation (``skipped_init``): every parameter and buffer, persistent
    or not, and the output after the strict load must equal those of a network built with its initialisation
    and loaded alike; so no value the load does not replace came from the skipped initialisers."""
    import contextlib
    import copy

    from ifer.models import registry
    from ifer.rehearsal.weights import write_weights

    section = copy.deepcopy(section)
    text = (section.get("kwargs") or {}).get("text_encoder_kwargs") or {}
    if text.get("weights_path"):
        text["weights_path"] = str(write_weights(tmp_path, names=["clip_vit_b16"])["clip_vit_b16"])

    torch.manual_seed(0)
    with monkeypatch.context() as m:
        m.setattr(registry, "skipped_init", contextlib.nullcontext)
        initialised = registry.build_untrained(section, num_classes=7, mode=mode)
    with torch.no_grad():  # "trained": values neither build starts from
        trained = {k: (v + torch.randn_like(v) * 0.01 if v.is_floating_point() else v)
                   for k, v in initialised.state_dict().items()}
    initialised.load_state_dict(trained)
    bare = registry.build_untrained(section, num_classes=7, mode=mode)
    load_state_dict_strict(bare, trained, "best.pt")
    for kind in ("named_parameters", "named_buffers"):
        want, got = dict(getattr(initialised, kind)()), dict(getattr(bare, kind)())
        assert want.keys() == got.keys(), kind
        diff = [k for k in want if not torch.equal(want[k], got[k])]
        assert not diff, f"{kind} differ after the load: {diff[:5]}"
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert torch.equal(initialised.eval()(x), bare.eval()(x))


def test_skipped_init_restores_the_initialisers_and_leaves_values_alone():
    from ifer.models.registry import skipped_init

    before = torch.nn.init.kaiming_uniform_
    w = torch.full((4, 4), 3.0)
    with skipped_init():
        assert torch.nn.init.kaiming_uniform_(w) is w and torch.equal(w, torch.full((4, 4), 3.0))
    assert torch.nn.init.kaiming_uniform_ is before
    torch.nn.init.kaiming_uniform_(w)
    assert not torch.equal(w, torch.full((4, 4), 3.0))


def test_resolved_quirks_names_presets_and_custom_sets():
    assert resolved_quirks("as_described") == {"mode": "as_described", "flags": get_quirks("as_described").to_dict()}
    assert resolved_quirks(get_quirks("as_released"))["mode"] == "as_released"
    custom = resolved_quirks("as_released", adversarial_no_grad=False)
    assert custom["mode"] == "custom" and custom["flags"]["adversarial_no_grad"] is False


def test_missing_weights_error_names_the_file(tmp_path):
    with pytest.raises(MissingWeightsError, match="alexnet-owt-7be5be79.pth"):
        resolve_weights("torchvision_alexnet", tmp_path / "absent.pth")
    with pytest.raises(MissingWeightsError, match="no path was given"):
        resolve_weights("arcface_ir_se50", None)


def test_sha256_prefix_check(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc")
    digest = check_sha256(f, None)
    assert check_sha256(f, digest[:8]) == digest
    with pytest.raises(ValueError, match="does not match"):
        check_sha256(f, "00000000")
    assert KNOWN_WEIGHTS["torchvision_alexnet"].sha256_prefix == "7be5be79"


def test_checkpoint_with_namespace_reads_weights_only(tmp_path):
    lin = torch.nn.Linear(3, 2)
    path = tmp_path / "timm_style.pth.tar"
    torch.save({"state_dict": lin.state_dict(), "args": argparse.Namespace(lr=1e-4), "epoch": 3}, path)
    sd = read_state_dict(path)  # the argparse.Namespace beside the weights must not need weights_only=False
    assert sd.keys() == lin.state_dict().keys()
    fresh = torch.nn.Linear(3, 2)
    load_state_dict_strict(fresh, sd, source=path)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), lin.state_dict().values()))


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    path = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, path)
    with pytest.raises(CheckpointError, match="evil.pt: cannot read checkpoint"):
        read_checkpoint(path)


def test_strict_load_errors_are_one_line(tmp_path):
    path = tmp_path / "wrong.pt"
    torch.save({"weight": torch.zeros(4, 3), "bias": torch.zeros(4)}, path)
    with pytest.raises(CheckpointError) as e:
        load_state_dict_strict(torch.nn.Linear(3, 2), read_state_dict(path), source=path)
    msg = str(e.value)
    assert "\n" not in msg and "wrong.pt" in msg and "shape mismatch at 'weight'" in msg
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="truncated.pt"):
        read_checkpoint(truncated)
    nan = {"weight": torch.full((2, 3), float("nan")), "bias": torch.zeros(2)}
    with pytest.raises(CheckpointError, match="non-finite"):
        load_state_dict_strict(torch.nn.Linear(3, 2), nan, source="nan.pt")


def test_skip_sha256_is_explicit_named_and_logged(tmp_path, caplog):
    """The rehearsal's random AlexNet cannot carry torchvision's published hash: `weights.skip_sha256` skips that one
    check for the named asset only, with a warning; it is off by default and an unknown name is refused."""
    from ifer.core.config import load_config
    from ifer.core.weights import WeightsHashError, set_skip_sha256

    bad = tmp_path / "alexnet-owt-7be5be79.pth"
    bad.write_bytes(b"random stand-in")
    assert load_config("tiny").weights.skip_sha256 == []
    try:
        set_skip_sha256(["torchvision_alexnet"])
        with caplog.at_level("WARNING", logger="ifer"):
            assert resolve_weights("torchvision_alexnet", bad) == bad
        assert "NOT checked" in caplog.text and "torchvision_alexnet" in caplog.text
        with pytest.raises(KeyError, match="no_such_asset"):
            set_skip_sha256(["no_such_asset"])
    finally:
        set_skip_sha256([])
    with pytest.raises(WeightsHashError):
        resolve_weights("torchvision_alexnet", bad)
