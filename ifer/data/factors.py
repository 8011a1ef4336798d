"""SynthFER's known factors per test image, binned for robustness-by-factor tables and factor probes (issue 21).

    python -c "from ifer.data.factors import FACTORS; print(FACTORS)"

Every SynthFER image records how it was drawn (``metadata.csv``: identity, expression intensity, yaw, roll,
lighting, background, occlusion, ...). A factor maps those rows to a few bins:

* ``pose``: ``|yaw|`` in tertiles of the scored images (low / mid / high).
* ``lighting``: directional light strength ``light_strength`` in tertiles (the shading contrast).
* ``occlusion``: ``none`` vs ``occluded`` (any of SynthFER's occluders: glasses, hand, mask ...).
* ``intensity``: expression intensity in tertiles over the *non-neutral* images (neutral has intensity 0 by
  construction and is left out of this factor, so bins compare expressions, not classes).
* ``background``: the background kind (flat / gradient / clutter ...), categorical.
* ``identity``: the person (probes only).

Tertile edges come from the images scored, so the bins hold about a third each; the edges are returned and
printed with every table. Robustness tables use pose, lighting, occlusion and intensity (the nuisance factors
FER papers report subsets for); probes may use all.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

FACTORS = ("identity", "pose", "lighting", "occlusion", "intensity", "background")
_TERTILES = ("low", "mid", "high")


def _tertiles(values: np.ndarray, valid: np.ndarray) -> tuple[list[int | None], list[float]]:
    edges = np.quantile(values[valid], [1 / 3, 2 / 3]).tolist()
    bins: list[int | None] = []
    for v, ok in zip(values, valid):
        bins.append(int(np.searchsorted(edges, v, side="right")) if ok else None)
    return bins, [float(e) for e in edges]


def factor_bins(metas: Sequence[Mapping], factor: str) -> dict:
    """``{"factor", "bins": [bin index or None per image], "names": [bin names], "edges", "definition"}``."""
    if factor not in FACTORS:
        raise ValueError(f"unknown factor {factor!r}; known: {FACTORS}")
    if not metas:
        raise ValueError("no images to bin")
    if factor == "identity":
        ids = [int(m["identity"]) for m in metas]
        names = sorted(set(ids))
        return {"factor": factor, "bins": [names.index(i) for i in ids], "names": [str(n) for n in names],
                "edges": None, "definition": "person id"}
    if factor in ("occlusion", "background"):
        key = "occlusion" if factor == "occlusion" else "background"
        raw = [str(m[key]) for m in metas]
        if factor == "occlusion":
            names = ["none", "occluded"]
            bins: list[int | None] = [0 if r == "none" else 1 for r in raw]
            return {"factor": factor, "bins": bins, "names": names, "edges": None,
                    "definition": "occluder present (any kind) vs none"}
        names = sorted(set(raw))
        return {"factor": factor, "bins": [names.index(r) for r in raw], "names": names, "edges": None,
                "definition": "background kind"}
    if factor == "pose":
        values = np.array([abs(float(m["yaw"])) for m in metas])
        valid = np.ones(len(values), dtype=bool)
        definition = "|yaw| tertiles"
    elif factor == "lighting":
        values = np.array([float(m["light_strength"]) for m in metas])
        valid = np.ones(len(values), dtype=bool)
        definition = "light_strength tertiles"
    else:  # intensity
        values = np.array([float(m["intensity"]) for m in metas])
        valid = np.array([str(m.get("expression", "")) != "neutral" and v > 0 for m, v in zip(metas, values)])
        definition = "expression intensity tertiles, neutral images excluded"
    if valid.sum() < 3:
        raise ValueError(f"factor {factor}: fewer than 3 images to bin")
    bins, edges = _tertiles(values, valid)
    return {"factor": factor, "bins": bins, "names": list(_TERTILES), "edges": edges, "definition": definition}
