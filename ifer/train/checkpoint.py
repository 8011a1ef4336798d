"""Training checkpoints: atomic, rank-0 only, resumable to the same result, loaded with ``weights_only=True``.

A run directory holds ``last.pt`` (written every ``save_interval`` and on SIGINT/SIGTERM), ``prev.pt`` (the
``last.pt`` before it: the fallback when ``last.pt`` is unreadable), ``best.pt`` (best validation value) and, when a
loss turns NaN, nothing new: the last good checkpoint is kept and the run stops. ``last.pt`` records the model name,
the quirks mode, the training config (and its hash) and the library versions; a resume with another model, mode or
config is refused with one line naming what differs, unless ``--no-resume`` or ``--resume-override`` is given.

    python -c "from ifer.train.checkpoint import load_training_state; print(load_training_state('runs/tiny/asit/last.pt')['step'])"
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import random
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ifer.core.io import atomic_write
from ifer.core.loading import CheckpointError

log = logging.getLogger("ifer")


class NonFiniteLossError(RuntimeError):
    """A loss became NaN/inf. The message names the step, the loss terms and the checkpoint kept."""


class NonFiniteGradientError(NonFiniteLossError):
    """Gradients stayed NaN/inf for too many consecutive steps. Names the step and the first offending parameter."""


class ResumeMismatchError(RuntimeError):
    """``last.pt`` was written by another model, mode or training config. One line naming the differing keys."""


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
    """Write atomically (temp file, fsync, rename) so a kill mid-write never corrupts ``path``."""
    return atomic_write(path, lambda f: _write_state(f, state))


def save_resumable(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``last.pt`` atomically, keeping the previous one as ``prev.pt`` (the fallback if ``last.pt`` goes bad).

    ``prev.pt`` is made by a hard link before the rename, so there is no moment without a readable ``last.pt``.
    """
    path = Path(path)
    prev = previous_path(path)
    if path.is_file():
        tmp = prev.with_name(f".{prev.name}.link")
        tmp.unlink(missing_ok=True)
        try:
            os.link(path, tmp)
            os.replace(tmp, prev)
        except OSError:  # no hard links on this filesystem: move it (resume then falls back to prev.pt)
            os.replace(path, prev)
    return save_training_state(path, state)


def drop_resume_state(last: str | Path) -> list[Path]:
    """Delete ``last.pt`` and ``prev.pt`` of a FINISHED run (call once its result is scored).

    They hold the optimizer state for resuming (3x the weights: 3.2 GB for ``ifer_base``, 4.8 GB for ``asit_base``
    with its discriminator), which nothing reads after the end: a finished run that DVC reruns is retrained from
    scratch (``ifer.stages.prepare_run_dir``) and evaluation reads ``best.pt``. Keep them with the training key
    ``keep_resume_state: true``."""
    gone = []
    for p in (Path(last), previous_path(last)):
        if p.is_file():
            p.unlink()
            gone.append(p)
    return gone


def remove_stale_temporaries(run_dir: str | Path) -> list[Path]:
    """Delete the temporary files of checkpoint writes that a kill interrupted (``.last.pt.*.tmp``, ...).

    Call on rank 0 before a run starts, when nothing is being written."""
    stale = [p for p in Path(run_dir).glob(".*.pt.*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def previous_path(last: str | Path) -> Path:
    last = Path(last)
    return last.with_name("prev" + last.suffix)


def _write_state(f, state: dict[str, Any]) -> None:
    if fault_requested("kill_in_save"):
        # Fault injection: die with half of the bytes written (what a kill or power cut mid-save leaves).
        buf = io.BytesIO()
        torch.save(state, buf)
        f.write(buf.getvalue()[: buf.tell() // 2])
        f.flush()
        os.fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)
    torch.save(state, f)


_FAULT_COUNTS: dict[str, int] = {}


def fault_requested(point: str, step: int | None = None) -> bool:
    """True when ``IFER_FAULT_INJECT`` asks to fail here (tests only), e.g. ``kill_in_save=3`` or ``kill_at_step=7``.

    ``kill_in_save=N`` fires on this process's N-th checkpoint write; ``kill_at_step=N`` when ``step == N``.
    """
    spec = os.environ.get("IFER_FAULT_INJECT")
    if not spec:
        return False
    rules = dict(item.split("=", 1) for item in spec.split(",") if "=" in item)
    if point not in rules:
        return False
    if step is not None:
        return step == int(rules[point])
    _FAULT_COUNTS[point] = _FAULT_COUNTS.get(point, 0) + 1
    return _FAULT_COUNTS[point] == int(rules[point])


def kill_if_requested(step: int) -> None:
    """Fault injection at a step boundary: SIGKILL this process (no handler, no cleanup), as a scheduler or OOM would."""
    if fault_requested("kill_at_step", step):
        os.kill(os.getpid(), signal.SIGKILL)


def load_training_state(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no training checkpoint to resume from")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - every failure becomes one line naming the file
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(f"{path}: cannot read training checkpoint ({type(e).__name__}: {first})") from e


# ---------------------------------------------------------------------------------------------- run records
def run_record(model: str, mode: str, sections: Mapping[str, Any]) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: model name, quirks mode and the training config (with its hash).

    ``sections`` maps config paths to the training-relevant values (e.g. ``{"asit.train": cfg.asit.train}``), so
    a refusal names full keys. Keys that cannot change the trained weights (``RESUME_NEUTRAL_KEYS``) are left out:
    changing e.g. the log interval never blocks a resume.
    """
    flat = {k: v for k, v in _flatten(sections).items() if k.split(".")[-1] not in RESUME_NEUTRAL_KEYS}
    # plain JSON types only: the record is read back with weights_only=True
    text = json.dumps(flat, sort_keys=True, default=str)
    flat, digest = json.loads(text), hashlib.sha256(text.encode()).hexdigest()
    return {"model": str(model), "mode": str(mode), "config": flat, "config_hash": digest, "versions": library_versions()}


RESUME_NEUTRAL_KEYS = frozenset({"log_interval", "save_interval"})


def mode_name(quirks) -> str:
    """The quirks mode a checkpoint records: the name given, or the flags of a custom ``Quirks``."""
    if isinstance(quirks, str):
        return quirks
    return ",".join(f"{k}={v}" for k, v in sorted(quirks.to_dict().items()))


def library_versions() -> dict[str, str]:
    import platform

    import timm

    from ifer import __version__ as ifer_version

    return {"python": platform.python_version(), "torch": str(torch.__version__), "timm": str(timm.__version__),
            "numpy": str(np.__version__), "ifer": str(ifer_version)}


def _flatten(d: Mapping, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = list(v) if isinstance(v, tuple) else v
    return out


def check_resumable(saved: Mapping | None, current: Mapping, path: str | Path) -> None:
    """Refuse (one line naming every differing key) to resume a checkpoint written by another model, mode or config."""
    hint = "pass --no-resume to start over, or --resume-override to continue with the new settings"
    if not saved:
        raise ResumeMismatchError(f"{path}: the checkpoint records no model, mode or config hash (written by an "
                                  f"older version), so resuming it cannot be checked; {hint}")
    if saved.get("config_hash") == current["config_hash"] and saved.get("model") == current["model"] \
            and saved.get("mode") == current["mode"]:
        return
    diffs = [f"{k} {saved.get(k)!r} -> {current[k]!r}" for k in ("model", "mode") if saved.get(k) != current[k]]
    old, new = saved.get("config", {}), current["config"]
    for k in sorted(set(old) | set(new)):
        if old.get(k, "<absent>") != new.get(k, "<absent>"):
            diffs.append(f"{k} {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}")
    raise ResumeMismatchError(f"{path}: written with a different setup ({'; '.join(diffs)}); {hint}")


def load_resume_state(last: str | Path, record: Mapping, override: bool = False) -> tuple[dict[str, Any] | None, Path | None]:
    """The state to resume from, or ``(None, None)`` for a fresh run.

    ``last.pt`` unreadable or missing while ``prev.pt`` exists: warn naming both files and use ``prev.pt``.
    Both unreadable: one-line CheckpointError. A different model/mode/config: ResumeMismatchError unless ``override``.
    """
    last = Path(last)
    prev = previous_path(last)
    if not last.is_file() and not prev.is_file():
        return None, None
    try:
        state, source = load_training_state(last), last
    except CheckpointError as e:
        if not prev.is_file():
            raise CheckpointError(f"{e}; no previous checkpoint {prev.name} to fall back to: delete {last} "
                                  f"or pass --no-resume to start over") from e
        try:
            state, source = load_training_state(prev), prev
        except CheckpointError as e2:
            raise CheckpointError(f"{last} and {prev} are both unreadable ({e2}); delete them or pass --no-resume") from e2
        what = "is missing" if not last.is_file() else "is unreadable"
        log.warning("%s %s; resuming from the previous checkpoint %s instead", last, what, prev)
    versions = (state.get("record") or {}).get("versions")
    if override:
        log.warning("%s: resuming with --resume-override; differences to the saved setup are not checked", source)
    else:
        check_resumable(state.get("record"), record, source)
    if versions and versions != record["versions"]:
        log.warning("%s was written with other library versions (%s, now %s)", source, versions, record["versions"])
    return state, source


def check_finite(losses: dict[str, torch.Tensor | float], step: int, kept: Path | None) -> None:
    bad = {k: float(v) for k, v in losses.items() if not np.isfinite(float(v))}
    if bad:
        where = f"the last good checkpoint {kept} is kept" if kept and Path(kept).exists() else "no checkpoint was written yet"
        raise NonFiniteLossError(f"non-finite loss at step {step}: {bad}; stopping, {where}. "
                                 f"Lower the learning rate or check the data, then resume.")


def load_trained_weights(module: torch.nn.Module, path: str | Path, key: str) -> dict[str, Any]:
    """Load ``checkpoint[key]`` (``best.pt``'s ``model`` or ``net``) strictly into ``module``; one-line CheckpointError
    naming the file on any problem. Returns the whole checkpoint (for its step/epoch)."""
    from ifer.core.loading import load_state_dict_strict, read_checkpoint

    ckpt = read_checkpoint(path)
    if key not in ckpt:
        raise CheckpointError(f"{path}: no {key!r} entry (keys: {sorted(ckpt)[:10]}); was it written by this trainer?")
    load_state_dict_strict(module, ckpt[key], path)
    return ckpt
