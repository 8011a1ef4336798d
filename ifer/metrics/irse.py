"""IR / IR-SE ResNet face-recognition backbones with the TreB1eN InsightFace_Pytorch parameter names.

The published checkpoints are loaded unchanged, so the module tree mirrors them exactly:
``input_layer.{0,1,2}`` (conv, BN, PReLU), ``body.N.{shortcut_layer,res_layer}.*`` and
``output_layer.{0,3,4}`` (BN2d, Linear 512*7*7->512, BN1d). Two published variants matter here:

* ArcFace IR-SE50 (``model_ir_se50.pth``, pSp's ID loss): ``ir_se50()`` -- SE blocks, affine final BN.
* CurricularFace IR-101 (``CurricularFace_Backbone.pth``, the official ID metric): ``ir101()`` -- plain
  IR blocks, final BN1d without affine parameters (only running statistics in the file).

Both take 112x112 RGB in [-1, 1] and return L2-normalised 512-d embeddings.

The pSp encoder (``ifer.models.psp``) builds its body from the same ``BottleneckIR`` units (``use_se=True``), so
there is one IR-SE implementation in the suite.

    >>> import torch
    >>> from ifer.metrics.irse import ir_se50
    >>> net = ir_se50().eval()
    >>> net(torch.zeros(2, 3, 112, 112)).shape
    torch.Size([2, 512])
"""
from __future__ import annotations

import torch
from torch import nn

# (in_channels, depth, number of units) of the four stages; the first unit of each stage has stride 2.
_STAGES = {
    50: [(64, 64, 3), (64, 128, 4), (128, 256, 14), (256, 512, 3)],
    100: [(64, 64, 3), (64, 128, 13), (128, 256, 30), (256, 512, 3)],
    152: [(64, 64, 3), (64, 128, 8), (128, 256, 36), (256, 512, 3)],
}


class SEModule(nn.Module):
    """Squeeze-and-excitation with 1x1 convs (names ``fc1``/``fc2`` as in the checkpoints)."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))
        return x * w


class BottleneckIR(nn.Module):
    """Pre-activation residual unit; ``use_se`` adds the SE module at the end of the residual branch."""

    def __init__(self, in_channels: int, depth: int, stride: int, use_se: bool):
        super().__init__()
        if in_channels == depth:
            # A 1x1 max-pool is a strided identity; it has no parameters, matching the checkpoints.
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(in_channels, depth, 1, stride, bias=False),
                                                nn.BatchNorm2d(depth))
        layers = [nn.BatchNorm2d(in_channels),
                  nn.Conv2d(in_channels, depth, 3, 1, 1, bias=False), nn.PReLU(depth),
                  nn.Conv2d(depth, depth, 3, stride, 1, bias=False), nn.BatchNorm2d(depth)]
        if use_se:
            layers.append(SEModule(depth, 16))
        self.res_layer = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class IRBackbone(nn.Module):
    """TreB1eN ``Backbone(112, num_layers, mode)``: 112x112 input, 512-d L2-normalised output."""

    def __init__(self, num_layers: int = 50, use_se: bool = True, drop_ratio: float = 0.4, affine: bool = True):
        super().__init__()
        if num_layers not in _STAGES:
            raise ValueError(f"num_layers must be one of {sorted(_STAGES)}, got {num_layers}")
        self.input_layer = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        units = []
        for in_ch, depth, n in _STAGES[num_layers]:
            units.append(BottleneckIR(in_ch, depth, 2, use_se))
            units.extend(BottleneckIR(depth, depth, 1, use_se) for _ in range(n - 1))
        self.body = nn.Sequential(*units)
        self.output_layer = nn.Sequential(nn.BatchNorm2d(512), nn.Dropout(drop_ratio), nn.Flatten(),
                                          nn.Linear(512 * 7 * 7, 512), nn.BatchNorm1d(512, affine=affine))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (112, 112):
            raise ValueError(f"IR backbones take 112x112 inputs, got {tuple(x.shape[-2:])}")
        x = self.output_layer(self.body(self.input_layer(x)))
        return nn.functional.normalize(x, dim=1)


def ir_se50() -> IRBackbone:
    """ArcFace IR-SE50 as built by pSp's ID loss: ``Backbone(112, 50, drop_ratio=0.6, mode='ir_se')``."""
    return IRBackbone(50, use_se=True, drop_ratio=0.6, affine=True)


def ir101() -> IRBackbone:
    """CurricularFace IR-101 as built by ``IR_101(112)``: plain IR units, final BN1d with ``affine=False``."""
    return IRBackbone(100, use_se=False, drop_ratio=0.4, affine=False)
