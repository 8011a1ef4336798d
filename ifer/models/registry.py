"""Model registry (timm-style).

Models register an entrypoint with ``@register_model`` (as in timm) and are built with
``ifer.create_model(name, **kwargs)``::

    python -c "import ifer; print(ifer.list_models()); m = ifer.create_model('asit_tiny')"
"""
from __future__ import annotations

import fnmatch
from collections.abc import Callable
from pathlib import Path

_MODEL_ENTRYPOINTS: dict[str, Callable] = {}
_MODEL_FAMILY: dict[str, str] = {}


def register_model(fn: Callable | None = None, *, family: str | None = None):
    """Register ``fn`` under its function name. Usable as ``@register_model`` or ``@register_model(family=...)``."""

    def _register(f: Callable) -> Callable:
        name = f.__name__
        if name in _MODEL_ENTRYPOINTS and _MODEL_ENTRYPOINTS[name] is not f:
            raise ValueError(f"model {name!r} is registered twice")
        _MODEL_ENTRYPOINTS[name] = f
        _MODEL_FAMILY[name] = family or f.__module__.rsplit(".", 1)[-1]
        return f

    return _register(fn) if fn is not None else _register


def _ensure_models_imported() -> None:
    # Importing the package runs every @register_model decorator exactly once.
    import ifer.models  # noqa: F401


def list_models(pattern: str = "*", family: str | None = None) -> list[str]:
    """Registered model names matching a shell-style ``pattern`` (and ``family``), sorted."""
    _ensure_models_imported()
    names = [n for n in _MODEL_ENTRYPOINTS if fnmatch.fnmatch(n, pattern)]
    if family is not None:
        names = [n for n in names if _MODEL_FAMILY[n] == family]
    return sorted(names)


def is_model(name: str) -> bool:
    _ensure_models_imported()
    return name in _MODEL_ENTRYPOINTS


def create_model(name: str, checkpoint_path: str | Path | None = None, **kwargs):
    """Build a registered model; optionally load a checkpoint strictly (see ``ifer.core.loading``)."""
    _ensure_models_imported()
    if name not in _MODEL_ENTRYPOINTS:
        close = fnmatch.filter(_MODEL_ENTRYPOINTS, f"*{name.split('_')[0]}*")
        raise KeyError(f"unknown model {name!r}; registered: {sorted(_MODEL_ENTRYPOINTS)}"
                       + (f" (did you mean one of {sorted(close)}?)" if close else ""))
    model = _MODEL_ENTRYPOINTS[name](**kwargs)
    if checkpoint_path is not None:
        from ifer.core.loading import load_checkpoint_into

        load_checkpoint_into(model, checkpoint_path)
    return model
