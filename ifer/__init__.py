"""IFER / ASIT reproducibility suite: ``create_model`` / ``list_models`` are the entry points.

    python -c "import ifer; print(ifer.list_models())"
"""
from ifer.models.registry import create_model, list_models

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "__version__"]
