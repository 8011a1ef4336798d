"""Your own photos: expression prediction (``ifer predict``) and inversion (``ifer invert --folder``) for a folder.

Every file in the folder gets one CSV row: ``file, status, face_found, box_x, box_y, box_w, box_h,
det_score, predicted, p_<class>...``. ``status`` is ``ok``, ``no face`` or ``unreadable: <reason>``; a bad
file never stops the batch. Faces are found by YuNet and aligned FFHQ-style (``ifer.data.faces``); the
highest-scoring face of each photo is used.

Precision: bf16 (``torch.autocast``) only where the CPU has native bf16 (avx512_bf16 or amx_bf16) **and** the
checkpoint's measured fp32/bf16 top-1 agreement on a test split is >= ``BF16_MIN_AGREEMENT``; otherwise fp32.
The agreement is measured once per checkpoint and stored next to it (``<checkpoint>.bf16_agreement.json``).

    ifer predict photos/ --checkpoint runs/tiny/fer/clean/ifer/synthfer/seed0/best.pt --out predictions.csv
    ifer predict photos/ --checkpoint runs/tiny/fer/clean/disentangled/synthfer/seed0/best.pt   # no --method: the file says
    ifer invert photos/ --folder --checkpoint runs/tiny/asit/asit_best.pt --out inversions/
"""
from __future__ import annotations

import contextlib
import csv
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from ifer.core.machine import isa_flags
from ifer.data.common import DataError
from ifer.data.faces import FaceDetector, align_ffhq, read_photo

log = logging.getLogger(__name__)

#: bf16 is used only when at least this fraction of test images keep their fp32 top-1 class.
BF16_MIN_AGREEMENT = 0.995


def native_bf16() -> tuple[bool, str]:
    """Does this CPU compute bf16 natively (not emulated through fp32, which is slower than fp32)?"""
    flags = isa_flags()
    have = [f for f in ("avx512_bf16", "amx_bf16") if flags.get(f)]
    if have:
        return True, f"CPU has {'+'.join(have)}"
    return False, "CPU has neither avx512_bf16 nor amx_bf16 (bf16 would be emulated, slower than fp32)"


def _autocast(precision: str):
    return torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()


@torch.inference_mode()
def bf16_agreement(model: torch.nn.Module, dataset: Dataset, batch_size: int = 32) -> dict:
    """fp32 vs bf16 top-1 agreement (and both accuracies) of ``model`` over ``dataset`` on the CPU."""
    model.eval()
    same = n = right32 = right16 = 0
    for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=False, drop_last=False):
        p32 = model(x).argmax(1)
        with _autocast("bf16"):
            p16 = model(x).float().argmax(1)
        y = torch.as_tensor(y)
        same += int((p32 == p16).sum())
        right32 += int((p32 == y).sum())
        right16 += int((p16 == y).sum())
        n += len(y)
    return {"top1_agreement": same / n, "n": n, "accuracy_fp32": right32 / n, "accuracy_bf16": right16 / n}


def choose_precision(requested: str, agreement: float | None, native: tuple[bool, str] | None = None) -> tuple[str, str]:
    """``(precision, reason)`` for ``requested`` in ``auto | fp32 | bf16`` (the reason is printed and saved)."""
    if requested == "fp32":
        return "fp32", "fp32 requested"
    has, why = native_bf16() if native is None else native
    if requested == "bf16":
        return "bf16", f"bf16 requested ({why})"
    if not has:
        return "fp32", why
    if agreement is None:
        return "fp32", "no measured fp32/bf16 agreement for this checkpoint"
    if agreement < BF16_MIN_AGREEMENT:
        return "fp32", f"fp32/bf16 top-1 agreement {100 * agreement:.2f} % < {100 * BF16_MIN_AGREEMENT:.1f} %"
    return "bf16", f"{why}; fp32/bf16 top-1 agreement {100 * agreement:.2f} % >= {100 * BF16_MIN_AGREEMENT:.1f} %"


def agreement_sidecar(checkpoint: str | Path) -> Path:
    return Path(f"{checkpoint}.bf16_agreement.json")


def load_classifier(cfg, checkpoint: str | Path, method: str | None = None,
                    class_folders: Sequence[str] | None = None) -> tuple[torch.nn.Module, tuple[str, ...]]:
    """A FER model and its class names, in the network and normalisation the file says: the suite's own
    ``best.pt`` from its ``meta`` (``method`` only for older files without it), or the official IFER file (a timm
    CheckpointSaver file with ``args``: ``as_released``, head remapped from ``class_folders``). The model has
    ``preprocessing`` (for ``eval_transform_from``) and ``choices`` (every choice made, printed by the CLI)."""
    from ifer.core.loading import read_checkpoint
    from ifer.data.labels import class_names
    from ifer.eval.released import DEFAULT_CLASS_FOLDERS, load_released_ifer, load_suite_classifier, suite_meta

    ckpt = read_checkpoint(checkpoint)
    if "args" in ckpt and suite_meta(ckpt) is None and method in (None, "ifer"):
        model = load_released_ifer(cfg, Path(checkpoint), ckpt, class_folders or DEFAULT_CLASS_FOLDERS)
        return model, class_names(len(model.order))
    model = load_suite_classifier(cfg, Path(checkpoint), ckpt, method)
    return model, model.class_names


def precision_for(cfg, model: torch.nn.Module, checkpoint: str | Path, requested: str,
                  dataset: str | None = None) -> tuple[str, str, dict | None]:
    """``choose_precision`` with the checkpoint's agreement: read from its sidecar, else measured on the test
    split of ``dataset`` (default: the dataset the checkpoint records, else the first configured FER dataset),
    normalised as ``model.preprocessing`` says, and stored. Returns (precision, reason, the measurement or None)."""
    native = native_bf16()
    if requested != "auto" or not native[0]:
        return (*choose_precision(requested, None, native), None)
    dataset = dataset or getattr(model, "choices", {}).get("dataset") or cfg.data.fer.datasets[0]
    sidecar = agreement_sidecar(checkpoint)
    measured = json.loads(sidecar.read_text()) if sidecar.is_file() else None
    if measured is None or measured.get("dataset") != dataset:
        from ifer.data.build import fer_datasets, recipe_with_preprocessing

        try:
            recipe = recipe_with_preprocessing(cfg.fer_methods.ifer.train, model.preprocessing)
            test = fer_datasets(cfg, dataset, recipe, eval_only=True).test
        except (DataError, FileNotFoundError) as e:
            return "fp32", f"fp32/bf16 agreement not measurable on {dataset}: {e}", None
        measured = {"dataset": dataset, "split": "test", "checkpoint": str(checkpoint),
                    **bf16_agreement(model, test, cfg.eval.batch_size)}
        sidecar.write_text(json.dumps(measured, indent=1) + "\n")
    return (*choose_precision("auto", measured["top1_agreement"], native), measured)


def list_files(folder: str | Path) -> list[Path]:
    """Every non-hidden file directly in ``folder``, sorted (undecodable ones included: they get a row)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


@dataclass
class FaceCrop:
    file: str
    status: str
    face: object | None = None
    crop: object | None = None  # aligned PIL image


def find_faces(folder: str | Path, size: int, detector: FaceDetector | None = None) -> list[FaceCrop]:
    """Decode, detect and align every file of ``folder``; failures become rows, never exceptions."""
    detector = detector or FaceDetector()
    out = []
    for path in list_files(folder):
        try:
            photo = read_photo(path)
        except DataError as e:
            out.append(FaceCrop(path.name, f"unreadable: {str(e).split(': ', 1)[-1]}"))
            continue
        faces = detector.detect(photo)
        if not faces:
            out.append(FaceCrop(path.name, "no face"))
            continue
        out.append(FaceCrop(path.name, "ok", faces[0], align_ffhq(photo, faces[0].landmarks, size)))
    return out


def _box_cells(item: FaceCrop) -> dict:
    if item.face is None:
        return {"face_found": False, "box_x": "", "box_y": "", "box_w": "", "box_h": "", "det_score": ""}
    x, y, w, h = item.face.box
    return {"face_found": True, "box_x": round(x, 1), "box_y": round(y, 1), "box_w": round(w, 1),
            "box_h": round(h, 1), "det_score": round(item.face.score, 4)}


@torch.inference_mode()
def predict_folder(model: torch.nn.Module, folder: str | Path, class_names: Sequence[str], transform,
                   precision: str = "fp32", detector: FaceDetector | None = None, crop_size: int = 256) -> list[dict]:
    """One row per file of ``folder``: detection, predicted class and class probabilities."""
    model.eval()
    rows = []
    for item in find_faces(folder, crop_size, detector):
        row = {"file": item.file, "status": item.status, **_box_cells(item), "predicted": ""}
        row.update({f"p_{c}": "" for c in class_names})
        if item.crop is not None:
            with _autocast(precision):
                logits = model(transform(item.crop)[None]).float()
            probs = logits.softmax(1)[0]
            row["predicted"] = class_names[int(probs.argmax())]
            row.update({f"p_{c}": round(float(p), 6) for c, p in zip(class_names, probs)})
        rows.append(row)
    return rows


def write_csv(rows: list[dict], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["file", "status"])
        writer.writeheader()
        writer.writerows(rows)
    return path


@torch.inference_mode()
def invert_folder(net: torch.nn.Module, folder: str | Path, out_dir: str | Path, img_size: int,
                  use_struct: bool = True, detector: FaceDetector | None = None) -> list[dict]:
    """Align each photo's face FFHQ-style, invert it with ASIT; save ``aligned/``, ``recon/``, ``grid.png``
    (aligned input above its reconstruction) and ``inversions.csv`` under ``out_dir``."""
    from torchvision.transforms.functional import to_tensor
    from torchvision.utils import save_image

    out_dir = Path(out_dir)
    net.eval()
    rows, pairs = [], []
    for item in find_faces(folder, img_size, detector):
        row = {"file": item.file, "status": item.status, **_box_cells(item), "recon": ""}
        if item.crop is not None:
            x = to_tensor(item.crop)[None] * 2 - 1  # [-1, 1], as ASIT was trained
            y = net(x, use_struct=use_struct).clamp(-1, 1)
            stem = Path(item.file).stem
            for sub, img in (("aligned", x), ("recon", y)):
                (out_dir / sub).mkdir(parents=True, exist_ok=True)
                save_image((img + 1) / 2, out_dir / sub / f"{stem}.png")
            row["recon"] = f"recon/{stem}.png"
            pairs.append((x[0], y[0]))
        rows.append(row)
    if pairs:
        grid = torch.cat([torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])])
        save_image((grid + 1) / 2, out_dir / "grid.png", nrow=len(pairs))
    write_csv(rows, out_dir / "inversions.csv")
    return rows
