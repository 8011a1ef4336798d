"""``ifer eval-checkpoint``: official-format files (random values) load, the class-order remap is exact, and a
wrong-architecture or truncated file gives one clear line."""
import argparse
import json

import pytest
import torch

from ifer.cli import main
from ifer.core.config import ConfigError, load_config
from ifer.core.loading import CheckpointError
from ifer.data.labels import EXPRESSIONS_7
from ifer.eval.released import (
    DEFAULT_CLASS_FOLDERS,
    canonical_permutation,
    evaluate_released,
    head_order,
)
from ifer.models.registry import create_model
from tests.toy import tiny_synthfer

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def synthfer(tmp_path_factory):
    return tiny_synthfer(tmp_path_factory, n_train_identities=1)


def _overrides(synthfer, tmp_path):
    return [f"data.synthfer.out={synthfer}", f"paths.results={tmp_path / 'results'}", "eval.batch_size=7",
            "eval.inversion_metrics=[mse, ssim, psnr]", "eval.id_embedder=none", "device=cpu"]


def _cfg(synthfer, tmp_path):
    return load_config("tiny", overrides=_overrides(synthfer, tmp_path))


@pytest.fixture(scope="module")
def canonical_ifer():
    torch.manual_seed(0)
    return create_model("ifer_tiny", num_classes=7, mode="as_released").eval()  # how official files are built


def _save_official_ifer(model, order, path):
    """A timm CheckpointSaver file whose head rows follow ``order`` (canonical weights permuted)."""
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    rows = [EXPRESSIONS_7.index(name) for name in order]
    sd["head.weight"], sd["head.bias"] = sd["head.weight"][rows], sd["head.bias"][rows]
    torch.save({"epoch": 11, "arch": "ifer_model", "state_dict": sd, "version": 2, "metric": 88.1,
                "args": argparse.Namespace(model="ifer_model", num_classes=7, lr=1e-4, data_dir="/authors/rafdb",
                                           input_size=[3, 64, 64], mean=(0.5,) * 3, std=(0.5,) * 3, crop_pct=1.0,
                                           interpolation="bicubic")},
               path)
    return path


def test_head_order_follows_imagefolder_sorting():
    assert head_order(DEFAULT_CLASS_FOLDERS) == ("surprise", "fear", "disgust", "happy", "sad", "anger", "neutral")
    # folder names are sorted as strings, so the order given on the command line does not matter
    assert head_order(["7", "1", "2", "3", "4", "5", "6"]) == head_order(DEFAULT_CLASS_FOLDERS)
    assert head_order(list(EXPRESSIONS_7)) == tuple(sorted(EXPRESSIONS_7))
    with pytest.raises(ConfigError, match="neither a RAF-DB label"):
        head_order(["1", "2", "x"])
    perm = canonical_permutation(head_order(DEFAULT_CLASS_FOLDERS))
    assert [head_order(DEFAULT_CLASS_FOLDERS)[i] for i in perm] == list(EXPRESSIONS_7)


@pytest.mark.parametrize("folders", [DEFAULT_CLASS_FOLDERS, tuple(EXPRESSIONS_7)], ids=["rafdb-numbers", "names"])
def test_permuted_head_scores_exactly_like_canonical_after_remap(synthfer, tmp_path, canonical_ifer, folders):
    cfg = _cfg(synthfer, tmp_path)
    path = _save_official_ifer(canonical_ifer, head_order(folders), tmp_path / "ifer_official.pth.tar")
    released = evaluate_released(cfg, path, "synthfer", folders)

    from ifer.data.build import fer_datasets
    from ifer.eval.classify import predict
    from ifer.metrics.fer import fer_metrics

    test = fer_datasets(cfg, "synthfer", cfg.fer_methods.ifer.train, eval_only=True).test
    pred = predict(canonical_ifer, test, 7, torch.device("cpu"))
    assert released["test"] == fer_metrics(pred["logits"], pred["labels"], 7)
    assert released["test"]["num_samples"] == 14
    assert released["saved_args"]["num_classes"] == 7 and released["class_order"]["head_order"] == list(head_order(folders))
    assert {r["metric"] for r in released["rows"]} == set(cfg.eval.fer_metrics)


def test_wrong_class_order_permutes_the_confusion_matrix(synthfer, tmp_path, canonical_ifer):
    """Files written in RAF-DB-number order but read as if the folders were expression names."""
    cfg = _cfg(synthfer, tmp_path)
    path = _save_official_ifer(canonical_ifer, head_order(DEFAULT_CLASS_FOLDERS), tmp_path / "ifer.pth.tar")
    right = evaluate_released(cfg, path, "synthfer", DEFAULT_CLASS_FOLDERS)["test"]["confusion_matrix"]
    wrong = evaluate_released(cfg, path, "synthfer", EXPRESSIONS_7)
    # the wrong reading labels head output j as sorted(EXPRESSIONS_7)[j] instead of the true class
    true_of_head = head_order(DEFAULT_CLASS_FOLDERS)
    believed_of_head = head_order(EXPRESSIONS_7)
    col = {EXPRESSIONS_7.index(believed_of_head[j]): EXPRESSIONS_7.index(true_of_head[j]) for j in range(7)}
    assert wrong["test"]["confusion_matrix"] == [[row[col[c]] for c in range(7)] for row in right]
    assert "off the diagonal" in wrong["class_order"]["note"] and wrong["class_order"]["assumption"] is None


def test_official_asit_file_is_evaluated(synthfer, tmp_path):
    cfg = _cfg(synthfer, tmp_path)
    torch.manual_seed(0)
    net = create_model("asit_tiny")
    net.init_latent_avg(256, seed=0)
    path = tmp_path / "asit_official.pt"
    net.save_checkpoint(path, opts={"dataset_type": "ffhq_encode", "output_size": 64})
    result = evaluate_released(cfg, path, "synthfer")
    assert result["kind"] == "asit" and result["n_images"] == 14
    mse = result["summary"]["mse_256_pm1"]
    assert 0 < mse < 4 and {r["metric"] for r in result["rows"]} == {"mse_256_pm1", "ssim_torchmetrics_gauss11_rgb01_dr1",
                                                                    "psnr_rgb01_dr1"}
    assert result["saved_args"]["dataset_type"] == "ffhq_encode"


def test_cli_writes_released_row(synthfer, tmp_path, canonical_ifer, capsys):
    path = _save_official_ifer(canonical_ifer, head_order(DEFAULT_CLASS_FOLDERS), tmp_path / "rafdb_ifer.pth.tar")
    assert main(["eval-checkpoint", str(path), *_overrides(synthfer, tmp_path), "--dataset", "synthfer"]) == 0
    out = capsys.readouterr().out
    assert "assumption: the authors' class folders were named by RAF-DB's numbering 1..7" in out
    assert "off the diagonal" in out
    written = tmp_path / "results" / "tiny" / "released" / "ifer_synthfer_rafdb_ifer.pth.json"
    result = json.loads(written.read_text())
    assert result["method"] == "ifer (released weights)" and result["rows"][0]["dataset"] == "synthfer"


def _one_error_line(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_wrong_architecture_and_truncated_files_give_one_line(synthfer, tmp_path, canonical_ifer, capsys):
    over = _overrides(synthfer, tmp_path)
    good = _save_official_ifer(canonical_ifer, head_order(DEFAULT_CLASS_FOLDERS), tmp_path / "good.pth.tar")
    # an IFER built on another encoder width: same keys, other shapes
    ckpt = torch.load(good, weights_only=False)
    ckpt["state_dict"]["feature_model.patch_embed.proj.weight"] = torch.zeros(96, 3, 3, 3)
    torch.save(ckpt, tmp_path / "wide.pth.tar")
    line = _one_error_line(capsys, ["eval-checkpoint", str(tmp_path / "wide.pth.tar"), *over, "--dataset", "synthfer"])
    assert line.startswith("ifer eval-checkpoint: error: CheckpointError:") and "wide.pth.tar" in line
    assert "shape mismatch at 'feature_model.patch_embed.proj.weight'" in line
    # a file of neither official kind
    torch.save({"state_dict": {"fc.weight": torch.zeros(7, 4)}}, tmp_path / "resnet.pth")
    line = _one_error_line(capsys, ["eval-checkpoint", str(tmp_path / "resnet.pth"), *over, "--dataset", "synthfer"])
    assert "neither an official ASIT checkpoint" in line and "resnet.pth" in line
    # a truncated download
    data = good.read_bytes()
    (tmp_path / "cut.pth.tar").write_bytes(data[: len(data) // 2])
    line = _one_error_line(capsys, ["eval-checkpoint", str(tmp_path / "cut.pth.tar"), *over, "--dataset", "synthfer"])
    assert line.startswith("ifer eval-checkpoint: error: CheckpointError:") and "cut.pth.tar: cannot read checkpoint" in line
    line = _one_error_line(capsys, ["eval-checkpoint", str(good), *over, "--dataset", "synthfer",
                                    "--class-folders", "1,2,3,4,5,6,x"])
    assert line.startswith("ifer eval-checkpoint: error: ConfigError: --class-folders: folder 'x'")
    with pytest.raises(CheckpointError, match="no 'latent_avg'"):
        net = create_model("asit_tiny")
        net.save_checkpoint(tmp_path / "no_avg.pt")
        evaluate_released(_cfg(synthfer, tmp_path), tmp_path / "no_avg.pt", "synthfer")


def _amplify(model):
    # layer scale 1e-5 hides the attention paths (and so the quirks); gamma = 1 makes a quirk visible
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("gamma1", "gamma2")):
                p.fill_(1.0)
    return model


def test_official_ifer_is_scored_by_the_as_released_network_with_its_own_normalisation(synthfer, tmp_path):
    """An official-layout file from the as_released model, args with non-default mean/std: eval-checkpoint's
    logits equal the as_released forward on images normalised by the file's args, and differ from as_described."""
    from torch.utils.data import DataLoader

    from ifer.data import open_dataset
    from ifer.data.build import dataset_root

    cfg = _cfg(synthfer, tmp_path)
    torch.manual_seed(0)
    released = _amplify(create_model("ifer_tiny", num_classes=7, mode="as_released")).eval()
    sd = released.state_dict()
    path = tmp_path / "official.pth.tar"
    mean, std = (0.4, 0.45, 0.5), (0.2, 0.25, 0.3)
    torch.save({"epoch": 3, "state_dict": sd, "args": argparse.Namespace(model="ifer_model", mean=mean, std=std,
                                                                      crop_pct=0.9, interpolation="bilinear",
                                                                      input_size=[3, 64, 64])}, path)
    result, out = evaluate_released(cfg, path, "synthfer", tuple(EXPRESSIONS_7), return_outputs=True)
    from timm.data import create_transform

    tf = create_transform(input_size=(3, 64, 64), is_training=False, crop_pct=0.9, interpolation="bilinear",
                          mean=mean, std=std)
    test = open_dataset("synthfer", dataset_root(cfg, "synthfer"), "test", transform=tf)
    described = create_model("ifer_tiny", num_classes=7, mode="as_described").eval()
    described.load_state_dict(sd)
    perm = canonical_permutation(head_order(EXPRESSIONS_7))
    with torch.no_grad():
        batches = [x for x, _ in DataLoader(test, batch_size=cfg.eval.batch_size, shuffle=False)]
        ref = torch.cat([released(x) for x in batches])[:, perm]
        other = torch.cat([described(x) for x in batches])[:, perm]
    got = out["_logits"]
    assert ((got - ref).norm() / ref.norm()) < 1e-5
    assert ((other - ref).norm() / ref.norm()) > 1e-4
    c = result["choices"]
    assert c["mode"] == "as_released" and c["preprocessing"]["mean"] == list(mean) and c["assumptions"] == []


def test_official_asit_without_recorded_quirks_is_built_as_released(synthfer, tmp_path):
    cfg = _cfg(synthfer, tmp_path)
    torch.manual_seed(0)
    net = _amplify(create_model("asit_tiny", mode="as_released"))
    net.init_latent_avg(256, seed=0)
    path = tmp_path / "asit_official.pt"
    torch.save({"state_dict": net.state_dict(), "opts": {"output_size": 64}, "latent_avg": net.latent_avg}, path)
    result, out = evaluate_released(cfg, path, "synthfer", return_outputs=True)
    assert result["choices"]["mode"] == "as_released" and "authors' code" in result["choices"]["quirks_source"]
    from torch.utils.data import DataLoader

    from ifer.data import open_dataset
    from ifer.data.build import dataset_root
    from ifer.data.transforms import eval_transform

    test = open_dataset("synthfer", dataset_root(cfg, "synthfer"), "test", transform=eval_transform(64))
    described = create_model("asit_tiny", mode="as_described")
    described.load_state_dict(net.state_dict())
    described.set_latent_avg(net.latent_avg)
    net.eval(), described.eval()
    kw = {"use_struct": cfg.asit.use_struct, "randomize_noise": cfg.asit.invert.randomize_noise}
    with torch.no_grad():
        xs = [x for x, _ in DataLoader(test, batch_size=cfg.asit.invert.batch_size, shuffle=False)]
        ref = torch.cat([net(x, **kw) for x in xs])
        other = torch.cat([described(x, **kw) for x in xs])
    assert ((out["_outputs"] - ref).norm() / ref.norm()) < 1e-5
    assert ((other - ref).norm() / ref.norm()) > 1e-6
