"""Model registry (timm-style).

Models register an entrypoint with ``@register_model`` (as in timm) and are built with
``ifer.create_model(name, **kwargs)``. A pipeline stage builds the model a config section names with
``build_from_config(section, **context)``: the section's ``model`` and ``kwargs`` go to ``create_model``, and a
family that reads more of its section (quirk mode, weight files, ``latent_avg``) registers its own builder with
``@register_config_builder(family)``, so the stages never test model or method names::

    python -c "import ifer; print(ifer.list_models()); m = ifer.create_model('asit_tiny')"
"""
from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from pathlib import Path

_MODEL_ENTRYPOINTS: dict[str, Callable] = {}
_MODEL_FAMILY: dict[str, str] = {}
_CONFIG_BUILDERS: dict[str, Callable] = {}


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


def register_config_builder(family: str):
    """Register ``fn(name, section, **context) -> model`` as the way family ``family`` builds from a config section."""

    def _register(fn: Callable) -> Callable:
        if family in _CONFIG_BUILDERS and _CONFIG_BUILDERS[family] is not fn:
            raise ValueError(f"family {family!r} has two config builders")
        _CONFIG_BUILDERS[family] = fn
        return fn

    return _register


def _ensure_models_imported() -> None:
    # Importing the family modules runs every @register_model decorator exactly once.
    import ifer.models

    ifer.models.import_all()


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


def build_from_config(section: Mapping, **context):
    """Build the model config ``section`` names (``model``, optional ``kwargs``).

    ``context`` is what the calling stage knows beyond the section (``num_classes``, ``mode``, ``seed``, an
    ``init_checkpoint``). A family with a registered config builder gets the section and the whole context;
    any other model gets ``kwargs`` plus ``num_classes`` when given, and the rest of the context is not its
    business (e.g. the quirk mode, which only the released code's families have).
    """
    _ensure_models_imported()
    name = section["model"]
    if name not in _MODEL_ENTRYPOINTS:
        return create_model(name)  # raises the KeyError naming the registered models
    builder = _CONFIG_BUILDERS.get(_MODEL_FAMILY[name])
    if builder is not None:
        return builder(name, section, **context)
    kwargs = dict(section.get("kwargs") or {})
    if context.get("num_classes") is not None:
        kwargs["num_classes"] = context["num_classes"]
    return create_model(name, **kwargs)


#: kwargs that only say where a model's *starting* weights come from (an ImageNet file, a known-weights key):
#: a trained checkpoint replaces those weights, so rebuilding it must not need the file.
INIT_ONLY_KWARGS = ("pretrained_path", "known_weights")


def build_from_record(record: Mapping):
    """Rebuild the untrained network a self-describing checkpoint's ``meta`` names (``section``: its
    ``model`` and ``kwargs``; ``num_classes``; ``mode``), without the start-weight files of
    ``INIT_ONLY_KWARGS``: the caller loads the trained weights next.

        python -c "import torch, ifer.models.registry as r; m = torch.load('best.pt', weights_only=True)['meta']; \
    print(type(r.build_from_record(m)).__name__)"
    """
    return build_untrained(record["section"], num_classes=int(record["num_classes"]),
                           mode=record.get("mode") or "as_described")


#: the initialiser names ``skipped_init`` turns into no-ops in ``torch.nn.init`` and timm's ``weight_init`` (each
#: fills a tensor in place and returns it)
_INIT_FUNCTIONS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
                   "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_",
                   "sparse_")


@contextmanager
def skipped_init():
    """Inside: the in-place initialisers of ``torch.nn.init`` and of timm's ``weight_init`` do nothing, so a
    module's parameters keep whatever ``torch.empty`` gave them. Only for a network whose every parameter and
    buffer a strict load replaces next (``build_untrained``): random-initialising ``ifer_base``'s 269M parameters
    took 3-5 s per build at 1 CPU thread (0.13 s without), for eval_fer and analyze_fer to overwrite them.
    Not thread-safe (it patches the two modules)."""
    import torch.nn.init as init
    from timm.layers import weight_init as timm_init  # the GC ViT / ASIT trunc-normal init (ifer.models.gcvit)

    saved = [(mod, name, getattr(mod, name)) for mod in (init, timm_init) for name in _INIT_FUNCTIONS
             if hasattr(mod, name)]
    try:
        for mod, name, _ in saved:
            setattr(mod, name, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for mod, name, fn in saved:
            setattr(mod, name, fn)


def build_untrained(section: Mapping, **context):
    """``build_from_config`` without start weights: no ``INIT_ONLY_KWARGS`` file and no ``init_checkpoint`` (IFER's
    ASIT encoder file), and no random initialisation (``skipped_init``), for a caller that loads trained weights
    next, strictly (``eval_fer``, ``analyze_fer``, ``ifer predict``, ``ifer eval-checkpoint``): the values before
    that load are undefined. Loading a 269M-parameter ASIT encoder that best.pt overwrites cost ~3 s per IFER run
    at 1 CPU thread; initialising it another 3-5 s. ``tests/test_registry_loading.py`` checks, per FER method of
    tiny and paper, that the loaded network equals one built the ordinary way and loaded alike, bit for bit.

        python -c "import ifer.models.registry as r; print(type(r.build_untrained({'model': 'ifer_tiny'}, num_classes=7)))"
    """
    section = dict(section)
    kwargs = {k: v for k, v in dict(section.get("kwargs") or {}).items() if k not in INIT_ONLY_KWARGS}
    context = {k: v for k, v in context.items() if k != "init_checkpoint"}
    with skipped_init():
        return build_from_config({**section, "kwargs": kwargs}, **context)
