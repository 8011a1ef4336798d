"""Comparison tables: paper value | reproduced (mean ± std over seeds) | delta | verdict, as Markdown and CSV.

    python -m ifer.cli report --params params.yaml
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from ifer.report.reference import load_reference, lookup

# Our method keys -> the names used in reference.yaml.
REFERENCE_NAMES = {"asit": "ASIT", "ifer": "IFER", "ke2nt": "KE2NT-ResNet18", "disentangled": "DisentangledAdv"}
# Metrics reported in percent in the literature.
PERCENT_METRICS = {"accuracy", "mean_class_accuracy", "macro_f1"}


def summarise(rows: Iterable[dict]) -> pd.DataFrame:
    """Rows of (method, dataset, metric, seed, value) -> mean, std (ddof=1 when n>1), n per (method, dataset, metric)."""
    df = pd.DataFrame(list(rows))
    if df.empty:
        return pd.DataFrame(columns=["method", "dataset", "metric", "mean", "std", "n_seeds", "seeds"])
    g = df.groupby(["method", "dataset", "metric"], sort=False)["value"]
    out = g.agg(mean="mean", std=lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, n_seeds="count").reset_index()
    out["seeds"] = df.groupby(["method", "dataset", "metric"], sort=False)["seed"].apply(list).values
    return out


def compare(summary: pd.DataFrame, tolerances: dict[str, float], reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """Join with the reference values and give each row a delta and a verdict."""
    reference = load_reference() if reference is None else reference
    rows = []
    for r in summary.to_dict("records"):
        scale = 100.0 if r["metric"] in PERCENT_METRICS else 1.0
        mean, std = r["mean"] * scale, r["std"] * scale
        ref = lookup(reference, REFERENCE_NAMES.get(r["method"], r["method"]), r["dataset"], r["metric"])
        paper = None if ref is None or ref["value"] is None or (isinstance(ref["value"], float) and math.isnan(ref["value"])) else float(ref["value"])
        if ref is None:
            verdict = f"no published value for {r['dataset']}"
        elif paper is None:
            verdict = f"reference unknown: {ref.get('why_empty')}"
        else:
            delta = mean - paper
            tol = tolerances.get(r["metric"], 0.0)
            verdict = "reproduced" if abs(delta) <= tol else ("below paper" if delta < 0 else "above paper")
            verdict += f" (tolerance ±{tol:g})"
        rows.append({
            "method": r["method"], "dataset": r["dataset"], "metric": r["metric"],
            "paper": paper, "reproduced_mean": mean, "reproduced_std": std, "n_seeds": r["n_seeds"],
            "delta": None if paper is None else mean - paper, "verdict": verdict,
            "citation": None if ref is None else ref["citation"],
        })
    return pd.DataFrame(rows)


def to_markdown(table: pd.DataFrame, title: str) -> str:
    lines = [f"### {title}", "", "| method | dataset | metric | paper | reproduced (mean ± std, n seeds) | delta | verdict |",
             "|---|---|---|---|---|---|---|"]
    for r in table.to_dict("records"):
        paper = "—" if r["paper"] is None else f"{r['paper']:.4g}"
        delta = "—" if r["delta"] is None else f"{r['delta']:+.4g}"
        repro = f"{r['reproduced_mean']:.4g} ± {r['reproduced_std']:.2g} (n={r['n_seeds']})"
        lines.append(f"| {r['method']} | {r['dataset']} | {r['metric']} | {paper} | {repro} | {delta} | {r['verdict']} |")
    return "\n".join(lines) + "\n"


def write_tables(table: pd.DataFrame, out_dir: str | Path, stem: str, title: str) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv, md = out_dir / f"{stem}.csv", out_dir / f"{stem}.md"
    table.to_csv(csv, index=False)
    md.write_text(to_markdown(table, title))
    return [csv, md]
