"""Model families. ``import_all()`` imports every family module, which registers its entrypoints
(``ifer.models.registry`` calls it before a look-up); importing the package alone loads none of them, so
``import ifer`` and ``ifer --help`` stay cheap.
"""
from __future__ import annotations

#: every module holding @register_model / @register_config_builder entrypoints
FAMILY_MODULES = ("asit", "asit_codes", "baselines", "disentangled", "gcvit", "ifer", "inversion_disc", "ke2nt",
                  "psp", "stylegan2")


def import_all() -> None:
    import importlib

    for name in FAMILY_MODULES:
        importlib.import_module(f"{__name__}.{name}")
