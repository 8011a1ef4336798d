"""Corruption functions against their definitions (issue 21): noise std, scipy's Gaussian filter, a PIL JPEG round
trip, area-down / bilinear-up, an exact grey square; the dataset wrapper is deterministic and two methods with
different normalisations see the same corrupted image."""
import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage
from skimage import data as skdata

from ifer.data.corruptions import SEVERITIES, CorruptedDataset, corrupt, gaussian_blur, parameter


def _photo(size: int = 64) -> torch.Tensor:
    img = Image.fromarray(skdata.astronaut()).resize((size, size), Image.BICUBIC)  # a real photo
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255


@pytest.mark.parametrize("severity", [1, 2, 3])
def test_gaussian_noise_has_the_stated_std(severity):
    x = torch.full((3, 64, 64), 0.5)
    y = corrupt(x, "gaussian_noise", severity, torch.Generator().manual_seed(0))
    sigma = SEVERITIES["gaussian_noise"][severity - 1]
    # 12,288 draws: the sample std's relative s.e. is ~0.6 %; clipping at 0 / 1 is > 1.3 sigma away at severity 3
    assert abs(float((y - x).std()) / sigma - 1) < 0.03
    assert abs(float((y - x).mean())) < 3 * sigma / 110


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_gaussian_blur_equals_scipy_gaussian_filter(severity):
    x = _photo()
    sigma = SEVERITIES["gaussian_blur"][severity - 1] * 64 / 224
    ours = corrupt(x, "gaussian_blur", severity)
    ref = np.stack([ndimage.gaussian_filter(c.double().numpy(), sigma, mode="mirror", truncate=3.0) for c in x])
    # same kernel (radius int(3 sigma + 0.5)), same mirrored border; float32 vs float64 accumulation only
    assert np.abs(ours.double().numpy() - np.clip(ref, 0, 1)).max() < 1e-5


def test_jpeg_is_a_pil_round_trip_at_the_quality_and_worsens_with_severity():
    x = _photo()
    errs = []
    for sev in range(1, 6):
        y = corrupt(x, "jpeg", sev)
        arr = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=SEVERITIES["jpeg"][sev - 1])
        ref = torch.from_numpy(np.asarray(Image.open(io.BytesIO(buf.getvalue()))).copy()).permute(2, 0, 1).float() / 255
        assert torch.equal(y, ref)
        errs.append(float((y - x).pow(2).mean()))
    assert errs == sorted(errs) and errs[-1] > 2 * errs[0]


def test_low_resolution_is_area_down_then_bilinear_up():
    x = _photo()
    for sev in (1, 5):
        f = SEVERITIES["low_resolution"][sev - 1]
        small = round(64 * f)
        ref = F.interpolate(F.adaptive_avg_pool2d(x.unsqueeze(0), small), size=(64, 64), mode="bilinear",
                            align_corners=False).squeeze(0)
        assert torch.allclose(corrupt(x, "low_resolution", sev), ref, atol=1e-6)
    flat = torch.full((3, 64, 64), 0.3)
    assert torch.allclose(corrupt(flat, "low_resolution", 5), flat, atol=1e-6)
    assert parameter("low_resolution", 5, 64) == "x0.25 (16 px)"


@pytest.mark.parametrize("severity", [1, 5])
def test_occlusion_patch_is_one_grey_square_of_the_stated_side(severity):
    x = _photo()
    y = corrupt(x, "occlusion_patch", severity, torch.Generator().manual_seed(3))
    side = round(SEVERITIES["occlusion_patch"][severity - 1] * 64)
    changed = (y != x).any(0)
    grey = (y == 0.5).all(0)
    rows, cols = torch.nonzero(grey, as_tuple=True)
    assert int(grey.sum()) == side * side
    assert int(rows.max() - rows.min()) + 1 == side and int(cols.max() - cols.min()) + 1 == side
    assert not (changed & ~grey).any()  # nothing outside the square moved


def test_blur_radius_larger_than_the_image_is_one_clear_error():
    with pytest.raises(ValueError, match="does not fit"):
        gaussian_blur(torch.rand(3, 8, 8), 6.0)


class _Normalised(torch.utils.data.Dataset):
    def __init__(self, mean, std):
        self.x = [_photo(32), _photo(32).flip(-1)]
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __len__(self):
        return 2

    def __getitem__(self, i):
        return (self.x[i] - self.mean) / self.std, i


def test_corrupted_dataset_is_deterministic_and_independent_of_normalisation():
    a = CorruptedDataset(_Normalised((0.5,) * 3, (0.5,) * 3), "gaussian_noise", 2, (0.5,) * 3, (0.5,) * 3, seed=1)
    imagenet = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    b = CorruptedDataset(_Normalised(*imagenet), "gaussian_noise", 2, *imagenet, seed=1)
    a2 = CorruptedDataset(_Normalised((0.5,) * 3, (0.5,) * 3), "gaussian_noise", 2, (0.5,) * 3, (0.5,) * 3, seed=1)
    for i in range(2):
        xa, ya = a[i]
        xb, _ = b[i]
        assert torch.equal(xa, a2[i][0]) and ya == i
        # the same corrupted [0, 1] image behind both normalisations
        assert torch.allclose(xa * 0.5 + 0.5, xb * b.std + b.mean, atol=1e-5)
    assert not torch.equal(a[0][0], CorruptedDataset(a.dataset, "gaussian_noise", 2, (0.5,) * 3, (0.5,) * 3, seed=2)[0][0])
    with pytest.raises(ValueError, match="unknown corruption"):
        CorruptedDataset(a.dataset, "fog", 1, (0.5,) * 3, (0.5,) * 3)


def test_corruption_table_states_the_parameters_at_each_methods_input_size():
    """paper: KE2NT is evaluated at 112 px, the others at 224; a blur sigma or low-resolution size stated at
    one size would mislabel the other methods' corruptions."""
    from ifer.data.corruptions import parameter
    from ifer.report.analysis import corruption_table

    def run(method, size, seed):
        return {"protocol": "clean", "method": method, "dataset": "rafdb", "seed": seed,
                "corruptions": {"n_images": 10, "input_size": size, "clean_accuracy": 0.8,
                                "accuracy": {"gaussian_blur": {"5": 0.4}}}}
    runs = [run("ifer", 224, s) for s in range(2)] + [run("ke2nt", 112, s) for s in range(2)]
    params = {str(z): {"gaussian_blur": {"5": parameter("gaussian_blur", 5, z)}} for z in (112, 224)}
    _, md = corruption_table(runs, params)
    assert "at 112 px (ke2nt): gaussian_blur: 5: sigma 3.00 px" in md       # 6 * 112 / 224
    assert "at 224 px (ifer): gaussian_blur: 5: sigma 6.00 px" in md
    # an analysis file written before sizes were recorded still renders, and says the size is unknown
    _, old = corruption_table(runs, {"gaussian_blur": {"5": "sigma 6.00 px"}})
    assert "(input size not recorded): gaussian_blur: 5: sigma 6.00 px" in old


def test_predict_each_reads_the_data_once_and_gives_each_model_its_own_logits():
    """analyze_fer corrupts each image once and scores every seed's model on it (ifer.metrics.predict.predict_each):
    per model the logits must be exactly those of scoring it alone, and the dataset is read once."""
    from torch.utils.data import Dataset

    from ifer.metrics.predict import predict, predict_each
    from ifer.models.registry import create_model

    class Counting(Dataset):
        def __init__(self):
            g = torch.Generator().manual_seed(0)
            self.x, self.reads = torch.randn(7, 3, 64, 64, generator=g), 0

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            self.reads += 1
            return self.x[i], i % 7

    torch.manual_seed(0)
    models = [create_model("fer_resnet18_tiny", num_classes=7) for _ in range(3)]
    ds = Counting()
    outs = predict_each(models, ds, 3, torch.device("cpu"), features=True)
    assert ds.reads == len(ds)
    for m, out in zip(models, outs):
        alone = predict(m, ds, 3, torch.device("cpu"), features=True)
        assert torch.equal(out["logits"], alone["logits"]) and torch.equal(out["features"], alone["features"])
        assert torch.equal(out["labels"], alone["labels"])
    assert not torch.equal(outs[0]["logits"], outs[1]["logits"])  # three different networks
