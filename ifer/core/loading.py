"""Safe checkpoint reading and strict state-dict loading with one-line, file-naming errors.

Checkpoints are read with ``torch.load(weights_only=True)`` (plus an allow-list for the argparse
``Namespace`` that timm's CheckpointSaver pickles into the official IFER file) or from safetensors.

    python -c "from ifer.core.loading import read_state_dict; print(len(read_state_dict('ckpt.pt')))"
"""
from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

import torch


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read or does not fit the model. The message is one line naming the file."""


_SAFE_GLOBALS = [argparse.Namespace]


def read_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint file (``.safetensors`` or a torch pickle) without executing arbitrary code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return dict(load_file(str(path)))
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - every failure becomes one line naming the file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(e).__name__}: {first})") from e
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a dict checkpoint, got {type(obj).__name__}")
    return dict(obj)


def extract_state_dict(ckpt: Mapping, prefix: str | None = None, keys=("state_dict", "model", "state_dict_ema")) -> dict:
    """Take the tensor dict out of a checkpoint (trying ``keys``), optionally keeping one ``prefix.`` and stripping it.

    Also strips a DDP ``module.`` prefix, which timm's saver leaves when unwrap fails.
    """
    sd = None
    if all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        sd = dict(ckpt)
    else:
        for k in keys:
            if k in ckpt and isinstance(ckpt[k], Mapping):
                sd = dict(ckpt[k])
                break
    if sd is None:
        raise KeyError(f"no state dict found under any of {keys}; top-level keys: {sorted(ckpt)[:10]}")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    if prefix:
        p = prefix.rstrip(".") + "."
        sd = {k[len(p):]: v for k, v in sd.items() if k.startswith(p)}
    return sd


def read_state_dict(path: str | Path, prefix: str | None = None) -> dict:
    ckpt = read_checkpoint(path)
    try:
        return extract_state_dict(ckpt, prefix)
    except KeyError as e:
        raise CheckpointError(f"{path}: {e.args[0]}") from None


def first_mismatch(model_sd: Mapping, loaded_sd: Mapping) -> str | None:
    """Describe the first key (in the model's order) that is missing, unexpected or of another shape."""
    for k, v in model_sd.items():
        if k not in loaded_sd:
            return f"missing key {k!r} (model expects shape {tuple(v.shape)})"
        if tuple(loaded_sd[k].shape) != tuple(v.shape):
            return f"shape mismatch at {k!r}: checkpoint {tuple(loaded_sd[k].shape)} vs model {tuple(v.shape)}"
    for k in loaded_sd:
        if k not in model_sd:
            return f"unexpected key {k!r} (not in the model)"
    return None


def load_state_dict_strict(module: torch.nn.Module, state_dict: Mapping, source: str | Path = "<state dict>",
                           key_map: Mapping[str, str] | None = None) -> None:
    """Load strictly; on any mismatch raise a one-line CheckpointError naming ``source`` and the first bad key.

    ``key_map`` renames checkpoint keys (old -> new) before loading, for documented layout differences.
    """
    if key_map:
        state_dict = {key_map.get(k, k): v for k, v in state_dict.items()}
    target = module.state_dict()
    problem = first_mismatch(target, state_dict)
    if problem is not None:
        n_missing = sum(k not in state_dict for k in target)
        n_unexp = sum(k not in target for k in state_dict)
        raise CheckpointError(f"{source}: does not fit {type(module).__name__}: {problem} "
                              f"[{n_missing} missing, {n_unexp} unexpected keys in total]")
    bad = [k for k, v in state_dict.items() if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{source}: non-finite values in {bad[0]!r} ({len(bad)} tensors in total)")
    module.load_state_dict(state_dict, strict=True)


def load_checkpoint_into(module: torch.nn.Module, path: str | Path, prefix: str | None = None) -> None:
    """Read ``path`` safely and load it strictly into ``module`` (the model may define ``load_official``)."""
    if hasattr(module, "load_checkpoint"):
        module.load_checkpoint(path)
        return
    load_state_dict_strict(module, read_state_dict(path, prefix), source=path)
