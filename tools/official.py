"""Import the official code from a checkout the user gives; nothing of it is copied into this repository.

* ``official(path)``: Talented-Q/IFER-master (HEAD 2f21002): ``models.encoders.gc_vit``, ``models.stylegan2.model``,
  ``models.asit``, ``scripts.ifer``. Its modules import ``timm.models.layers`` / ``timm.models.registry``; timm 1.x
  still serves both (with a deprecation warning), the numbers in tests/ were measured with timm 0.5.4.
* ``rosinality(path, ifer_path)``: rosinality/stylegan2-pytorch ``model.py``. Its ``op`` package compiles CUDA
  kernels on import, so a stand-in ``op`` module is registered first: the official IFER code's own plain-torch
  ``upfirdn2d`` / ``fused_leaky_relu`` / ``FusedLeakyReLU`` (which IFER wrote to replace those kernels) and
  rosinality's pure-Python ``op/conv2d_gradfix.py`` (which falls back to ``F.conv2d`` on CPU).

    python -c "import sys; sys.path.insert(0, 'tools'); from official import official; print(official('../IFER-master'))"
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
import warnings
from pathlib import Path
from types import SimpleNamespace


def _on_path(path: str | Path) -> Path:
    root = Path(path).resolve()
    if not root.is_dir():
        raise SystemExit(f"not a directory: {root}")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return root


def official(path: str | Path) -> SimpleNamespace:
    """The official IFER modules, imported from the checkout at ``path``."""
    root = _on_path(path)
    if not (root / "models" / "encoders" / "gc_vit.py").is_file():
        raise SystemExit(f"{root} does not look like Talented-Q/IFER-master (models/encoders/gc_vit.py missing)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # timm's deprecation notices for the old import paths
        return SimpleNamespace(
            gc_vit=importlib.import_module("models.encoders.gc_vit"),
            stylegan2=importlib.import_module("models.stylegan2.model"),
            asit=importlib.import_module("models.asit"),
            ifer=_from_file("official_scripts_ifer", root / "scripts" / "ifer.py"),
        )


def _from_file(name: str, file: Path) -> types.ModuleType:
    # scripts/ has no __init__.py; importing it as "scripts.ifer" could pick up another package called scripts
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def rosinality(path: str | Path, ifer_path: str | Path) -> types.ModuleType:
    """rosinality's ``model.py`` from the checkout at ``path``, on CPU (see the module docstring for ``op``)."""
    root = Path(path).resolve()
    if not (root / "model.py").is_file() or not (root / "op" / "conv2d_gradfix.py").is_file():
        raise SystemExit(f"{root} does not look like rosinality/stylegan2-pytorch (model.py, op/ missing)")
    sg2 = official(ifer_path).stylegan2
    spec = importlib.util.spec_from_file_location("op.conv2d_gradfix", root / "op" / "conv2d_gradfix.py")
    gradfix = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gradfix)
    op = types.ModuleType("op")
    op.fused_leaky_relu, op.upfirdn2d = sg2.fused_leaky_relu, sg2.upfirdn2d

    class FusedLeakyReLU(sg2.FusedLeakyReLU):
        # rosinality's signature has a ``bias`` switch; its discriminator only ever asks for bias=True
        def __init__(self, channel, bias=True, negative_slope=0.2, scale=2 ** 0.5):
            if not bias:
                raise NotImplementedError("FusedLeakyReLU(bias=False) has no plain-torch stand-in here")
            super().__init__(channel, negative_slope, scale)

    op.FusedLeakyReLU = FusedLeakyReLU
    op.conv2d_gradfix = gradfix
    sys.modules["op"], sys.modules["op.conv2d_gradfix"] = op, gradfix
    spec = importlib.util.spec_from_file_location("rosinality_model", root / "model.py")
    model = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(model)
    return model
