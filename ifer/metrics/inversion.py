"""Inversion (reconstruction) metrics with protocol-pinned names.

Images are RGB, resized to 256x256 (PIL bilinear) when read from files, and held in [-1, 1]
(tensor inputs are clamped to [-1, 1], as saving to 8-bit would). Per-image values, then the mean
(and population std) over images:

* ``mse_256_pm1``: mean squared error over pixels and channels, images in [-1, 1].
* ``lpips_alex_v0.1_256``: LPIPS v0.1 AlexNet (``lpips`` package, the user's AlexNet file).
* ``ssim_torchmetrics_gauss11_rgb01_dr1``: torchmetrics SSIM, Gaussian 11x11, sigma 1.5, k1 0.01, k2 0.03,
  RGB mapped to [0, 1] with ``data_range=1.0``, averaged over the whole map with the 5-px border windows on a
  reflect-padded image (scikit-image's ``structural_similarity`` drops that border: up to ~0.01 apart on
  real photos, ``tests/test_metric_references.py``). SSIM is NOT shift invariant: [-1, 1] with range 2 gives
  other numbers, so the range is part of the name.
* ``psnr_rgb01_dr1``: torchmetrics PSNR per image, RGB in [0, 1], ``data_range=1.0`` (the official
  script used the Y channel, with bugs: reference §6 item 11).
* ``id_sim_<embedder>``: cosine of face embeddings (``ifer.metrics.embedders``).
* ``fid_inception2048_tf1bilinear_uint8``: FID on the 2048-d pool features of torch-fidelity's Inception v3
  (the user's weights file), images quantised to uint8 with rounding and resized to 299 with the
  TensorFlow-1-compatible bilinear of torch-fidelity and the original TF FID code (not PyTorch's bilinear,
  which pytorch-fid and torchmetrics' default ``antialias=True`` use); computed by torchmetrics, agrees with
  ``torch_fidelity.calculate_metrics`` on the same files (``tests/test_metric_references.py``); set-level,
  no per-image values.

A metric whose weights or package are missing is reported as ``"unavailable: <what is missing>"``.

    >>> import torch
    >>> from ifer.metrics.inversion import evaluate_tensors
    >>> x = torch.zeros(2, 3, 256, 256)
    >>> evaluate_tensors(x + 0.5, x, metrics=["mse"])["summary"]["mse_256_pm1"]
    0.25
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from ifer.core.io import IMAGE_EXTENSIONS, is_image_file, read_rgb
from ifer.core.weights import MissingWeightsError, resolve_weights
from ifer.metrics.embedders import IdentityEmbedder, get_embedder
from ifer.metrics.lpips import LPIPSLoss

METRIC_KEYS = ("mse", "lpips", "ssim", "psnr", "id_sim", "fid")
FID_NAME = "fid_inception2048_tf1bilinear_uint8"
_FIXED_NAMES = {"mse": "mse_256_pm1", "lpips": "lpips_alex_v0.1_256", "ssim": "ssim_torchmetrics_gauss11_rgb01_dr1",
                "psnr": "psnr_rgb01_dr1", "fid": FID_NAME}
_DESCRIPTIONS = {
    "mse": "MSE over all pixels and channels, 256x256 RGB in [-1,1]; per image, then mean over images",
    "lpips": "LPIPS v0.1, AlexNet trunk (torchvision alexnet-owt-7be5be79.pth) + lpips-package linear heads, "
             "256x256 RGB in [-1,1]; per image, then mean",
    "ssim": "torchmetrics structural_similarity_index_measure, gaussian kernel 11, sigma 1.5, k1=0.01, k2=0.03, "
            "population covariances, RGB mapped to [0,1], data_range=1.0, mean over the whole HxW map (border "
            "windows on the image reflect-padded by 5 px; scikit-image's structural_similarity leaves that border "
            "out instead, otherwise equal); per image, then mean",
    "psnr": "torchmetrics peak_signal_noise_ratio per image on RGB mapped to [0,1], data_range=1.0, base 10; "
            "mean of per-image PSNR",
    "id_sim": "cosine similarity of L2-normalised face embeddings of prediction and ground truth after the pSp "
              "crop [35:223, 32:220] of the 256 image pooled to 112; per image, then mean",
    "fid": "torchmetrics FrechetInceptionDistance(feature=2048, antialias=False) = torch-fidelity's Inception v3 "
           "pipeline: weights from the user's file, images in [-1,1] quantised to uint8 by round((x+1)*127.5) "
           "(the files' own pixels), resized 256->299 with torch-fidelity's TF1-compatible bilinear "
           "(align_corners=False), (x-128)/128, 2048-d pool3 features, float64 statistics; predictions vs "
           "ground truth sets",
}


def unavailable(reason: str) -> str:
    return f"unavailable: {reason}"


class InversionEvaluator:
    """Accumulate per-image inversion metrics over batches of (pred, gt) tensors in [-1, 1].

    Unavailable metrics (missing weights/package, ``id_embedder="none"``) are recorded once as strings and
    skipped. ``id_embedder`` is a name from ``ifer.metrics.embedders`` or an ``IdentityEmbedder`` instance.
    """

    def __init__(self, metrics: Sequence[str] = ("mse", "lpips", "ssim", "psnr"), *,
                 lpips_backbone: str | Path | None = None,
                 id_embedder: str | IdentityEmbedder = "curricularface_ir101", id_weights: str | Path | None = None,
                 inception_weights: str | Path | None = None, device: str | torch.device = "cpu"):
        unknown = [m for m in metrics if m not in METRIC_KEYS]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; choose from {METRIC_KEYS}")
        self.device = torch.device(device)
        self.keys = list(dict.fromkeys(metrics))
        self.unavailable: dict[str, str] = {}
        self.names: dict[str, str] = {k: _FIXED_NAMES[k] for k in self.keys if k in _FIXED_NAMES}
        self._lpips = self._fid = self._embedder = None
        if "lpips" in self.keys:
            self._lpips = self._try(self.names["lpips"], lambda: _build_lpips(lpips_backbone, self.device))
        if "id_sim" in self.keys:
            name = id_embedder if isinstance(id_embedder, str) else id_embedder.name
            self.names["id_sim"] = f"id_sim_{name}"
            if id_embedder == "none":
                self.unavailable[self.names["id_sim"]] = unavailable("no identity embedder configured (id_embedder: none)")
            else:
                self._embedder = self._try(self.names["id_sim"], lambda: id_embedder if not isinstance(id_embedder, str)
                                           else _to_device(get_embedder(id_embedder, id_weights), self.device))
        if "fid" in self.keys:
            self._fid = self._try(FID_NAME, lambda: _build_fid(inception_weights, self.device))
        self.rows: list[dict] = []
        self._fid_counts = [0, 0]

    def _try(self, name: str, build):
        try:
            return build()
        except (MissingWeightsError, ImportError) as e:
            self.unavailable[name] = unavailable(str(e))
            return None

    @torch.no_grad()
    def update(self, pred: torch.Tensor, gt: torch.Tensor, names: Sequence[str] | None = None) -> None:
        if pred.shape != gt.shape or pred.ndim != 4 or pred.shape[1] != 3:
            raise ValueError(f"pred and gt must both be (B,3,H,W); got {tuple(pred.shape)} and {tuple(gt.shape)}")
        pred = pred.to(self.device, torch.float32).clamp(-1, 1)
        gt = gt.to(self.device, torch.float32).clamp(-1, 1)
        start = len(self.rows)
        names = list(names) if names is not None else [str(start + i) for i in range(pred.shape[0])]
        values: dict[str, torch.Tensor] = {}
        if "mse" in self.keys:
            values[self.names["mse"]] = ((pred - gt) ** 2).mean(dim=(1, 2, 3))
        p01, g01 = (pred + 1) / 2, (gt + 1) / 2
        from torchmetrics.functional.image import peak_signal_noise_ratio  # here: the import costs seconds

        if "ssim" in self.keys:
            values[self.names["ssim"]] = ssim_per_image(p01, g01)
        if "psnr" in self.keys:
            values[self.names["psnr"]] = peak_signal_noise_ratio(p01, g01, data_range=1.0, base=10.0,
                                                                 reduction="none", dim=(1, 2, 3))
        if self._lpips is not None:
            values[self.names["lpips"]] = self._lpips.per_image(pred, gt)
        if self._embedder is not None:
            values[self.names["id_sim"]] = (self._embedder.embed(pred) * self._embedder.embed(gt)).sum(dim=1)
        if self._fid is not None:
            # uint8 with rounding, handed over as is (normalize=False): torchmetrics' own normalize=True path does
            # (x*255).byte(), which truncates, so after uint8 -> [-1,1] -> [0,1] many levels came out one lower
            # (FID ~2 % off the files' own pixels).
            self._fid.update(to_uint8(gt), real=True)
            self._fid.update(to_uint8(pred), real=False)
            self._fid_counts[0] += gt.shape[0]
            self._fid_counts[1] += pred.shape[0]
        for i, name in enumerate(names):
            self.rows.append({"name": name, **{k: float(v[i]) for k, v in values.items()}})

    def compute(self) -> dict:
        """``{"rows", "summary", "std", "n_images", "protocol", "unavailable"}``; plain Python values."""
        summary: dict[str, float | str] = {}
        std: dict[str, float] = {}
        for key in self.keys:
            name = self.names[key]
            if name in self.unavailable:
                summary[name] = self.unavailable[name]
            elif key == "fid":
                summary[name] = self._compute_fid()
            else:
                vals = [r[name] for r in self.rows]
                mean = sum(vals) / len(vals) if vals else math.nan
                summary[name] = mean
                std[name] = math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals)) if vals else math.nan
        return {"rows": self.rows, "summary": summary, "std": std, "n_images": len(self.rows),
                "protocol": {self.names[k]: _DESCRIPTIONS[k] for k in self.keys},
                "unavailable": dict(self.unavailable)}

    def _compute_fid(self) -> float | str:
        if min(self._fid_counts) < 2:
            return unavailable(f"FID needs at least 2 images per set, got {self._fid_counts[1]} predicted / "
                               f"{self._fid_counts[0]} ground truth")
        return float(self._fid.compute())


def ssim_per_image(p01: torch.Tensor, g01: torch.Tensor, return_full_image: bool = False):
    """The ``ssim_torchmetrics_gauss11_rgb01_dr1`` value per image of (B,3,H,W) in [0, 1]; with
    ``return_full_image`` also the (B,3,H,W) SSIM map whose mean it is (border windows see the image
    reflect-padded by 5 px; scikit-image instead leaves those 5 px out of its mean)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    return structural_similarity_index_measure(p01, g01, gaussian_kernel=True, sigma=1.5, kernel_size=11, k1=0.01,
                                               k2=0.03, data_range=1.0, reduction="none",
                                               return_full_image=return_full_image)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float -> uint8 0..255 with rounding: the inverse of ``load_image``'s ``u / 127.5 - 1``."""
    return ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def _to_device(module, device: torch.device):
    return module.to(device) if isinstance(module, torch.nn.Module) else module


def _build_lpips(weights: str | Path | None, device: torch.device):
    return LPIPSLoss(weights).to(device)


def _build_fid(weights: str | Path | None, device: torch.device):
    try:
        import torch_fidelity  # noqa: F401  (torchmetrics' FID feature extractor lives there)
    except ImportError as e:
        raise ImportError(f"FID needs the torch-fidelity package (pip install torch-fidelity==0.4.0): {e}") from e
    from torchmetrics.image.fid import FrechetInceptionDistance

    path = resolve_weights("fid_inception_v3", weights)
    # antialias=False: torchmetrics (>= 1.5) then resizes with torch-fidelity's TF1-compatible bilinear, as
    # torch-fidelity itself and the original TF FID do; its default (antialias=True) is PyTorch's bilinear.
    fid = FrechetInceptionDistance(feature=2048, normalize=False, feature_extractor_weights_path=str(path),
                                   antialias=False)
    fid.set_dtype(torch.float64)
    return fid.to(device)


# ------------------------------------------------------------------------------------------------
# Directory API


def _images_by_stem(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"not a directory: {folder}")
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if is_image_file(p):
            if p.stem in found:
                raise ValueError(f"{folder}: two images share the name {p.stem!r} ({found[p.stem].name}, {p.name})")
            found[p.stem] = p
    return found


def pair_by_name(pred_dir: str | Path, gt_dir: str | Path) -> list[tuple[str, Path, Path]]:
    """Pair predictions and ground truths by file name without extension (``001.png`` <-> ``001.jpg``).

    Every image must have a partner: unmatched names on either side raise ValueError listing them.
    """
    preds, gts = _images_by_stem(Path(pred_dir)), _images_by_stem(Path(gt_dir))
    only_pred, only_gt = sorted(set(preds) - set(gts)), sorted(set(gts) - set(preds))
    if only_pred or only_gt:
        raise ValueError(f"unmatched images: {len(only_pred)} only in {pred_dir} {only_pred[:20]}, "
                         f"{len(only_gt)} only in {gt_dir} {only_gt[:20]}")
    if not preds:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {pred_dir}")
    return [(stem, preds[stem], gts[stem]) for stem in sorted(preds)]


def load_image(path: str | Path, size: int = 256) -> torch.Tensor:
    """RGB file -> (3, size, size) float tensor in [-1, 1] (PIL bilinear resize when needed)."""
    im = read_rgb(path, exif=True)  # upright, as every dataset adapter serves images (docs/data.md)
    if im.size != (size, size):
        im = im.resize((size, size), Image.BILINEAR)
    data = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
    return data.view(size, size, 3).permute(2, 0, 1).float() / 127.5 - 1


def update_from_files(ev: InversionEvaluator, pairs: Sequence[tuple[str, Path, Path]], size: int = 256,
                      batch_size: int = 8) -> None:
    """Read ``(name, pred_file, gt_file)`` pairs (from ``pair_by_name``, or a shard of them) in batches into ``ev``."""
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i:i + batch_size]
        pred = torch.stack([load_image(p, size) for _, p, _ in chunk])
        gt = torch.stack([load_image(g, size) for _, _, g in chunk])
        ev.update(pred, gt, [name for name, _, _ in chunk])


def evaluate_inversion(pred_dir: str | Path, gt_dir: str | Path,
                       metrics: Sequence[str] = ("mse", "lpips", "ssim", "psnr"), *, size: int = 256,
                       batch_size: int = 8, **evaluator_kwargs) -> dict:
    """Evaluate every prediction in ``pred_dir`` against the same-named image in ``gt_dir``; writes nothing.

    ``evaluator_kwargs`` go to ``InversionEvaluator``: ``lpips_backbone`` (the AlexNet file),
    ``id_embedder``, ``id_weights``, ``inception_weights``, ``device``.
    """
    pairs = pair_by_name(pred_dir, gt_dir)
    ev = InversionEvaluator(metrics, **evaluator_kwargs)
    update_from_files(ev, pairs, size, batch_size)
    out = ev.compute()
    out["pred_dir"], out["gt_dir"], out["image_size"] = str(pred_dir), str(gt_dir), size
    return out


def evaluate_tensors(pred: torch.Tensor, gt: torch.Tensor, metrics: Sequence[str] = ("mse", "ssim", "psnr"),
                     names: Sequence[str] | None = None, **evaluator_kwargs) -> dict:
    """In-memory evaluation of one (B,3,H,W) batch pair in [-1, 1]; same output as ``evaluate_inversion``."""
    ev = InversionEvaluator(metrics, **evaluator_kwargs)
    ev.update(pred, gt, names)
    return ev.compute()
