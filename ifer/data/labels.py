"""One canonical label order for the whole suite, and each dataset's explicit mapping onto it.

Every adapter converts its native labels through a :class:`LabelMap` defined here, so a class index
means the same expression everywhere (models, metrics, confusion matrices)::

    python -c "from ifer.data.labels import RAFDB, EXPRESSIONS_7; print(EXPRESSIONS_7, RAFDB.to_index(1))"
"""
from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

# The order follows AffectNet's 0..7, which most FER code bases already use.
EXPRESSIONS_7: tuple[str, ...] = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger")
EXPRESSIONS_8: tuple[str, ...] = EXPRESSIONS_7 + ("contempt",)


def class_names(num_classes: int) -> tuple[str, ...]:
    """Canonical class names for a 7- or 8-class protocol."""
    if num_classes == 7:
        return EXPRESSIONS_7
    if num_classes == 8:
        return EXPRESSIONS_8
    raise ValueError(f"num_classes must be 7 or 8, got {num_classes}")


@dataclass(frozen=True)
class LabelMap:
    """A dataset's native labels -> canonical expression names.

    ``excluded`` lists native labels that are known but not an expression class (AffectNet's
    none/uncertain/non-face, FERPlus' unknown/NF); adapters drop them explicitly and count them.
    Anything in neither dict is an *unknown* label and is an error.
    """

    dataset: str
    native_to_name: dict[Hashable, str]
    excluded: dict[Hashable, str] = field(default_factory=dict)

    def name(self, native: Hashable) -> str:
        return self.native_to_name[native]

    def is_known(self, native: Hashable) -> bool:
        return native in self.native_to_name or native in self.excluded

    def to_index(self, native: Hashable, num_classes: int = 7) -> int | None:
        """Canonical index of ``native``; ``None`` when the class is outside the ``num_classes`` protocol.

        Raises ``KeyError`` for labels that are neither mapped nor explicitly excluded.
        """
        if native in self.excluded:
            return None
        name = self.native_to_name[native]
        names = class_names(num_classes)
        return names.index(name) if name in names else None

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly description, recorded in every adapter's ``protocol``."""
        return {
            "dataset": self.dataset,
            "native_to_name": {str(k): v for k, v in self.native_to_name.items()},
            "excluded": {str(k): v for k, v in self.excluded.items()},
        }


# RAF-DB basic, EmoLabel/list_patition_label.txt: 1..7.
RAFDB = LabelMap(
    "rafdb",
    {1: "surprise", 2: "fear", 3: "disgust", 4: "happy", 5: "sad", 6: "anger", 7: "neutral"},
)

# AffectNet training.csv / validation.csv `expression` column.
AFFECTNET = LabelMap(
    "affectnet",
    {0: "neutral", 1: "happy", 2: "sad", 3: "surprise", 4: "fear", 5: "disgust", 6: "anger", 7: "contempt"},
    excluded={8: "none", 9: "uncertain", 10: "non-face"},
)

# FERPlus fer2013new.csv vote columns, in file order.
FERPLUS = LabelMap(
    "ferplus",
    {
        "neutral": "neutral",
        "happiness": "happy",
        "surprise": "surprise",
        "sadness": "sad",
        "anger": "anger",
        "disgust": "disgust",
        "fear": "fear",
        "contempt": "contempt",
    },
    excluded={"unknown": "unknown", "NF": "not a face"},
)
FERPLUS_VOTE_COLUMNS: tuple[str, ...] = (
    "neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF",
)

# SFEW 2.0 class folder names.
SFEW = LabelMap(
    "sfew",
    {
        "Angry": "anger",
        "Disgust": "disgust",
        "Fear": "fear",
        "Happy": "happy",
        "Neutral": "neutral",
        "Sad": "sad",
        "Surprise": "surprise",
    },
)

# SynthFER writes canonical indices directly.
SYNTHFER = LabelMap("synthfer", {i: n for i, n in enumerate(EXPRESSIONS_7)})

# Config dataset names (``data.fer.datasets``) -> (adapter name, adapter kwargs): the class protocol of each.
FER_DATASETS: dict[str, tuple[str, dict[str, Any]]] = {
    "synthfer": ("synthfer", {}),
    # data.synthfer_shift: the same SynthFER people and draws at another nuisance strength, written under
    # <data.synthfer.out>/shift by `ifer data`; a test set for cross-dataset transfer (analysis.transfer_datasets)
    "synthfer_shift": ("synthfer", {}),
    "rafdb": ("rafdb", {}),
    "sfew": ("sfew", {}),
    "affectnet7": ("affectnet", {"num_classes": 7}),
    "affectnet8": ("affectnet", {"num_classes": 8}),
    "ferplus": ("ferplus", {}),
}
