"""Small file helpers shared by every layer: hashing, the image-extension list, image decoding, atomic writes.

    python -c "from ifer.core.io import sha256_file; print(sha256_file('pyproject.toml'))"

Atomic writes go to a temporary file in the same folder, are fsynced and then renamed over the target, so a
crash, a full disk or a kill mid-write leaves the previous file intact (rename is atomic on POSIX).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

# One list for every reader of image folders (dataset adapters, inversion metrics, `ifer predict`).
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (datasets hold multi-GB files)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def is_image_file(path: str | Path) -> bool:
    p = Path(path)
    return p.suffix.lower() in IMAGE_EXTENSIONS


MIN_IMAGE_SIDE = 8  # smaller "images" are failed-download placeholders (1x1); the smallest real FER faces are 48 px


class UnreadableImageError(ValueError):
    """An image file that cannot be used; ``str()`` is the reason (zero-byte, truncated, not an image, ...)."""


def _reason(path: Path, exc: BaseException) -> str:
    from PIL import UnidentifiedImageError

    try:
        if path.stat().st_size == 0:
            return "zero-byte file"
    except OSError:
        return f"unreadable ({exc})"
    text = str(exc)
    if "truncated" in text.lower() or "premature end" in text.lower():
        return f"truncated ({text})"
    if isinstance(exc, UnidentifiedImageError):
        return "not an image"
    return f"corrupt ({type(exc).__name__}: {text})"


def read_rgb(path: str | Path, verify: bool = False, *, exif: bool = False, alpha_on_white: bool = False):
    """Decode ``path`` fully and return an 8-bit RGB ``PIL.Image``, or raise :class:`UnreadableImageError`.

    The one image decoder of the suite (datasets, inversion metrics, ``ifer predict``). Accepted and converted:
    grayscale, palette, RGBA (alpha dropped, or composited on white with ``alpha_on_white``: photos), CMYK (e.g.
    Photoshop JPEGs) and 16-bit PNGs (scaled by 1/257 to 8 bits; Pillow's own ``convert`` would saturate them to
    white). ``exif=True`` applies the EXIF orientation (phone photos; dataset images are stored upright).
    Rejected: zero-byte, truncated and non-image files, and images under ``MIN_IMAGE_SIDE`` px a side.
    ``verify=True`` first runs Pillow's ``verify()``, which also checks PNG chunk CRCs.
    """
    import numpy as np
    from PIL import Image, ImageOps

    path = Path(path)
    try:
        if verify:
            with Image.open(path) as im:
                im.verify()
        with Image.open(path) as im:
            im.load()  # decodes every pixel: truncated data fails here, not later in a transform
            if exif:
                im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
                arr = np.asarray(im, dtype=np.float64)
                rgb = Image.fromarray(np.clip(np.round(arr / 257.0), 0, 255).astype(np.uint8), "L").convert("RGB")
            elif alpha_on_white and (im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)):
                rgba = im.convert("RGBA")
                rgb = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
            else:
                rgb = im.convert("RGB")
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, ValueError, DecompressionBombError)
        raise UnreadableImageError(_reason(path, exc)) from exc
    if min(rgb.size) < MIN_IMAGE_SIDE:
        raise UnreadableImageError(f"{rgb.size[0]}x{rgb.size[1]} px, below the {MIN_IMAGE_SIDE} px minimum "
                                   f"(a placeholder, not a face)")
    return rgb


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(f)`` on a temporary file next to ``path``, fsync, then rename it over ``path``.

    On any error (OSError for a full disk or a read-only folder included) the temporary file is removed and
    the previous ``path`` is left untouched; the error propagates.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)  # name the output the user must fix, not the temporary file
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any, default: Callable[[Any], Any] | None = None) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=1, default=default) + "\n")


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` through ``atomic_write``: a killed save never leaves a truncated checkpoint under ``path``."""
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f))
