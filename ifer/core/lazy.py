"""Lazy package attributes (PEP 562), so importing a package does not import every submodule it re-exports.

    __getattr__ = lazy_attributes(__name__, {"fer_metrics": "ifer.metrics.fer"})
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping


def lazy_attributes(package: str, names: Mapping[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` that imports ``names[attr]`` on first access of ``attr``."""
    table = dict(names)

    def __getattr__(name: str):
        if name in table:
            return getattr(importlib.import_module(table[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    return __getattr__
