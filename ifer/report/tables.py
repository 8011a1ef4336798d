"""Result tables as Markdown and CSV: paper value | reproduced mean ± std [95% interval] (n seeds) | delta |
verdict; per-class accuracy; the pairwise significance of the FER methods; the identity probe.

The interval is the Student-t interval over seeds (:data:`ifer.report.stats.INTERVAL_METHOD`); a single seed
has none and says so ("n=1, no interval") instead of printing "± 0".

    python -m ifer.cli report --params params.yaml
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from ifer.core.io import atomic_write_text
from ifer.report.reference import load_reference, lookup
from ifer.report.stats import INTERVAL_METHOD, TEST_METHOD, seed_interval

# Our method keys -> the names used in reference.yaml.
REFERENCE_NAMES = {"asit": "ASIT", "ifer": "IFER", "ke2nt": "KE2NT-ResNet18", "disentangled": "DisentangledAdv"}
# Metrics reported in percent in the literature.
PERCENT_METRICS = {"accuracy", "mean_class_accuracy", "macro_f1"}
# Printed under every table with numbers from more than one machine in mind.
BIT_IDENTITY_NOTE = ("Bit-identical numbers are expected only on the same CPU ISA flags (avx2 / avx512 / "
                     "avx512_bf16 / amx), torch / oneDNN / CUDA / cuDNN build, GPU and thread count (the "
                     "`kernel_key` in provenance.json); elsewhere runs agree within the interval: check with "
                     "`ifer compare`.")
SUMMARY_COLUMNS = ["method", "dataset", "metric", "mean", "std", "ci_low", "ci_high", "n_seeds", "seeds"]


def _num(x) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def summarise(rows: Iterable[dict]) -> pd.DataFrame:
    """Rows of (method, dataset, metric, seed, value) -> mean, std (ddof=1), 95% t-interval, n per group.

    std and the interval are None when a group has a single seed.
    """
    df = pd.DataFrame(list(rows))
    if df.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    out = []
    for (method, dataset, metric), g in df.groupby(["method", "dataset", "metric"], sort=False):
        s = seed_interval(g["value"].tolist())
        out.append({"method": method, "dataset": dataset, "metric": metric, "mean": s["mean"], "std": s["std"],
                    "ci_low": s["ci_low"], "ci_high": s["ci_high"], "n_seeds": s["n"], "seeds": g["seed"].tolist()})
    return pd.DataFrame(out, columns=SUMMARY_COLUMNS).astype(object)


def inversion_rows(inv: dict, default_seed: int) -> list[dict]:
    """(method, dataset, metric, seed, value) rows from inversion_metrics.json, one ASIT seed or several.

    Accepts ``rows`` (already one per seed), ``runs`` (``[{"seed": s, "methods": {...}}]``) or a single
    ``methods`` summary (recorded under ``default_seed``).
    """
    if "rows" in inv:
        return list(inv["rows"])
    runs = inv["runs"] if "runs" in inv else [{"seed": default_seed, "methods": inv["methods"]}]
    return [{"method": method, "dataset": inv["dataset"], "metric": metric, "seed": run["seed"], "value": value}
            for run in runs for method, summary in run["methods"].items() for metric, value in summary.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)]


def compare(summary: pd.DataFrame, tolerances: dict[str, float], reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """Join with the reference values and give each row a delta and a verdict."""
    reference = load_reference() if reference is None else reference
    rows = []
    for r in summary.to_dict("records"):
        scale = 100.0 if r["metric"] in PERCENT_METRICS else 1.0
        mean = r["mean"] * scale
        std, lo, hi = (None if _num(r.get(k)) is None else _num(r.get(k)) * scale for k in ("std", "ci_low", "ci_high"))
        ref = lookup(reference, REFERENCE_NAMES.get(r["method"], r["method"]), r["dataset"], r["metric"])
        paper = None if ref is None else _num(ref["value"])
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
            "paper": paper, "reproduced_mean": mean, "reproduced_std": std, "ci95_low": lo, "ci95_high": hi,
            "n_seeds": r["n_seeds"], "delta": None if paper is None else mean - paper, "verdict": verdict,
            "citation": None if ref is None else ref["citation"],
        })
    return pd.DataFrame(rows).astype(object)


def fmt_estimate(mean: float, std: float | None, lo: float | None, hi: float | None, n: int) -> str:
    """``36.61 ± 1.2 [33.63, 39.59] (n=3)`` (interval to the mean's decimals), or ``36.61 (n=1, no interval)``."""
    if std is None or n < 2:
        return f"{mean:.4g} (n={n}, no interval)"
    decimals = max(0, 3 - math.floor(math.log10(abs(mean)))) if mean else 4
    return f"{mean:.4g} ± {std:.2g} [{lo:.{decimals}f}, {hi:.{decimals}f}] (n={n})"


def to_markdown(table: pd.DataFrame, title: str) -> str:
    lines = [f"### {title}", "",
             f"| method | dataset | metric | paper | reproduced: mean ± std [{INTERVAL_METHOD}] (n seeds) | delta | verdict |",
             "|---|---|---|---|---|---|---|"]
    for r in table.to_dict("records"):
        paper = "—" if r["paper"] is None else f"{r['paper']:.4g}"
        delta = "—" if r["delta"] is None else f"{r['delta']:+.4g}"
        repro = fmt_estimate(r["reproduced_mean"], _num(r["reproduced_std"]), _num(r["ci95_low"]),
                             _num(r["ci95_high"]), int(r["n_seeds"]))
        lines.append(f"| {r['method']} | {r['dataset']} | {r['metric']} | {paper} | {repro} | {delta} | {r['verdict']} |")
    lines += ["", f"<sub>{BIT_IDENTITY_NOTE}</sub>"]
    return "\n".join(lines) + "\n"


def write_tables(table: pd.DataFrame, out_dir: str | Path, stem: str, title: str) -> list[Path]:
    return _write(table, to_markdown(table, title), out_dir, stem)


def _write(table: pd.DataFrame, markdown: str, out_dir: str | Path, stem: str) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv, md = out_dir / f"{stem}.csv", out_dir / f"{stem}.md"
    # atomic: an unwritable folder or a full disk leaves the previous tables intact
    atomic_write_text(csv, table.to_csv(index=False))
    atomic_write_text(md, markdown)
    return [csv, md]


def per_class_table(runs: Sequence[dict], class_names: Sequence[str]) -> pd.DataFrame:
    """Per (method, dataset): per-class accuracy (recall) in percent, mean ± std over seeds, one column per class."""
    groups: dict[tuple[str, str], list[list[float | None]]] = {}
    for run in runs:
        groups.setdefault((run["method"], run["dataset"]), []).append(run["test"]["per_class_accuracy"])
    rows = []
    for (method, dataset), per_seed in groups.items():
        row = {"method": method, "dataset": dataset, "n_seeds": len(per_seed)}
        for c, name in enumerate(class_names):
            vals = [100 * s[c] for s in per_seed if c < len(s) and s[c] is not None]
            st = seed_interval(vals) if vals else None
            row[f"{name}_mean"] = None if st is None else st["mean"]
            row[f"{name}_std"] = None if st is None else st["std"]
        rows.append(row)
    return pd.DataFrame(rows).astype(object)


def write_per_class(table: pd.DataFrame, class_names: Sequence[str], out_dir: str | Path, stem: str, title: str,
                    plot_dir: str = "plots/confusion") -> list[Path]:
    lines = [f"### {title}", "",
             "| method | dataset | n seeds | " + " | ".join(class_names) + " | confusion (mean over seeds) |",
             "|---|---|---|" + "---|" * len(class_names) + "---|"]
    for r in table.to_dict("records"):
        cells = []
        for name in class_names:
            m, s = _num(r[f"{name}_mean"]), _num(r[f"{name}_std"])
            cells.append("—" if m is None else f"{m:.1f}" if s is None else f"{m:.1f} ± {s:.1f}")
        plot = f"{plot_dir}/{r['method']}_{r['dataset']}.png"
        lines.append(f"| {r['method']} | {r['dataset']} | {r['n_seeds']} | " + " | ".join(cells) + f" | [plot]({plot}) |")
    lines += ["", "Per-class accuracy (recall, %) on the test split, mean ± std over seeds; the confusion "
              "plots show the confusion matrix averaged over seeds."]
    return _write(table, "\n".join(lines) + "\n", out_dir, stem)


def significance_table(rows: Sequence[dict]) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=["dataset", "a", "b", "diff_points", "diff_ci_low", "diff_ci_high",
                                             "p_bootstrap", "p_holm", "p_mcnemar", "n_seeds", "n_images", "verdict"])


def write_significance(table: pd.DataFrame, out_dir: str | Path, stem: str, title: str) -> list[Path]:
    lines = [f"### {title}", "", f"Test: {TEST_METHOD}; a verdict names a winner only when the Holm-adjusted "
             "p < 0.05. McNemar (per seed, combined) is shown as a check.", "",
             "| dataset | A | B | accuracy A − B (points) [95% bootstrap] | p (Holm) | p (McNemar) | seeds × images | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for r in table.to_dict("records"):
        lines.append(f"| {r['dataset']} | {r['a']} | {r['b']} | {r['diff_points']:+.2f} [{r['diff_ci_low']:+.2f}, "
                     f"{r['diff_ci_high']:+.2f}] | {r['p_holm']:.3g} | {r['p_mcnemar']:.3g} | {r['n_seeds']} × "
                     f"{r['n_images']} | {r['verdict']} |")
    return _write(table, "\n".join(lines) + "\n", out_dir, stem)


def write_probe(rows: Sequence[dict], out_dir: str | Path, stem: str, title: str) -> list[Path]:
    """Identity probe: per-seed rows in CSV, mean ± std [interval] per method in Markdown."""
    per_seed = pd.DataFrame(list(rows), columns=None if rows else ["method", "dataset", "seed",
                                                                   "identity_probe_accuracy", "identity_chance"])
    if per_seed.empty:  # real FER datasets carry no identity labels; dvc.yaml still declares the files
        return _write(per_seed, f"### {title}\n\nNo dataset of this run has identity labels (only SynthFER has), "
                      "so no probe was run.\n", out_dir, stem)
    lines = [f"### {title}", "",
             f"| method | dataset | probe accuracy: mean ± std [{INTERVAL_METHOD}] (n seeds) | chance |", "|---|---|---|---|"]
    for (method, dataset), g in per_seed.groupby(["method", "dataset"], sort=False):
        s = seed_interval(g["identity_probe_accuracy"].tolist())
        lines.append(f"| {method} | {dataset} | {fmt_estimate(s['mean'], s['std'], s['ci_low'], s['ci_high'], s['n'])}"
                     f" | {g['identity_chance'].iloc[0]:.3f} |")
    lines += ["", "Lower = less identity information in the expression features (linear probe on held-out "
              "SynthFER identities, repeated for every training seed)."]
    return _write(per_seed, "\n".join(lines) + "\n", out_dir, stem)
