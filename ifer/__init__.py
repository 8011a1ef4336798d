"""IFER / ASIT reproducibility suite: ``create_model`` / ``list_models`` are the entry points.

    python -c "import ifer; print(ifer.list_models(), ifer.__version__)"

``import ifer`` stays light (no torch): ``ifer --help`` builds its parser on it. The registry imports the model
families only when a model is listed or built.
"""
from ifer.models.registry import create_model, list_models

__all__ = ["create_model", "list_models", "__version__"]


def __getattr__(name: str):
    # PEP 562: ``__version__`` is the installed package's (pyproject.toml), looked up on first use only
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            value = version("ifer")
        except PackageNotFoundError:  # a source tree that was never installed
            value = "0+unknown"
        globals()["__version__"] = value
        return value
    raise AttributeError(f"module 'ifer' has no attribute {name!r}")
