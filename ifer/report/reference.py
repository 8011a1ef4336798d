"""The paper reference values (``reference.yaml``): one place, a citation per value, empty where unknown.

    python -c "from ifer.report.reference import load_reference; print(load_reference().head())"
"""
from __future__ import annotations

from importlib import resources

import pandas as pd
import yaml

REQUIRED = ("method", "dataset", "metric", "value", "citation")


def load_reference() -> pd.DataFrame:
    data = yaml.safe_load(resources.files("ifer.report").joinpath("reference.yaml").read_text())
    rows = data["entries"]
    for i, r in enumerate(rows):
        missing = [k for k in REQUIRED if k not in r]
        if missing:
            raise ValueError(f"reference.yaml entry {i} lacks {missing}: {r}")
        if r["value"] is None and not r.get("why_empty"):
            raise ValueError(f"reference.yaml entry {i} has no value and no why_empty: {r}")
    df = pd.DataFrame(rows)
    dup = df.duplicated(["method", "dataset", "metric"])
    if dup.any():
        raise ValueError(f"duplicate reference entries: {df[dup][['method', 'dataset', 'metric']].values.tolist()}")
    return df


def lookup(df: pd.DataFrame, method: str, dataset: str, metric: str) -> dict | None:
    hit = df[(df.method == method) & (df.dataset == dataset) & (df.metric == metric)]
    return None if hit.empty else hit.iloc[0].to_dict()
