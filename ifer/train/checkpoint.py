"""Training checkpoints: atomic, rank-0 only, resumable to the same result, loaded with ``weights_only=True``.

A run directory holds ``last.pt`` (written every ``save_interval``), ``best.pt`` (best validation value)
and, when a loss turns NaN, nothing new: the last good checkpoint is kept and the run stops.

    python -c "from ifer.train.checkpoint import load_training_state; print(load_training_state('runs/tiny/asit/last.pt')['step'])"
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ifer.core.loading import CheckpointError


class NonFiniteLossError(RuntimeError):
    """A loss became NaN/inf. The message names the step, the loss terms and the checkpoint kept."""


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": _np_state_to_tensors(), "python": _py_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(_np_state_from_tensors(state["numpy"]))
    random.setstate(_py_state_from_tensor(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# weights_only=True only unpickles tensors and primitive containers, so RNG states are stored as tensors.
def _np_state_to_tensors() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
            "cached": float(cached), "name": str(name)}


def _np_state_from_tensors(d: dict) -> tuple:
    return (d["name"], d["keys"].numpy().astype(np.uint32), d["pos"], d["has_gauss"], d["cached"])


def _py_state() -> torch.Tensor:
    version, internal, gauss = random.getstate()
    return torch.tensor(list(internal) + [version, -1 if gauss is None else 1], dtype=torch.int64)


def _py_state_from_tensor(t: torch.Tensor) -> tuple:
    vals = t.tolist()
    return (vals[-2], tuple(vals[:-2]), None)


def save_training_state(path: str | Path, state: dict[str, Any]) -> Path:
    """Write atomically (tmp file + rename) so a kill mid-write never corrupts ``last.pt``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_training_state(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no training checkpoint to resume from")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{path}: cannot read training checkpoint ({type(e).__name__}: {e})") from e


def check_finite(losses: dict[str, torch.Tensor | float], step: int, kept: Path | None) -> None:
    bad = {k: float(v) for k, v in losses.items() if not np.isfinite(float(v))}
    if bad:
        where = f"the last good checkpoint {kept} is kept" if kept and Path(kept).exists() else "no checkpoint was written yet"
        raise NonFiniteLossError(f"non-finite loss at step {step}: {bad}; stopping, {where}. "
                                 f"Lower the learning rate or check the data, then resume.")
