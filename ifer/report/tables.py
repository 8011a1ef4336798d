"""Result tables as Markdown and CSV: paper value | reproduced mean ± std [95% interval] (n seeds) | delta |
verdict; the FER table with one column per protocol (clean | released | released − clean), its ``init``
column and the "released weights" rows; per-class accuracy; the pairwise significance of the FER methods;
the identity probe.

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
from ifer.report.stats import DETECTABLE_METHOD, INTERVAL_METHOD, TEST_METHOD, seed_interval

# Our method keys -> the names used in reference.yaml.
REFERENCE_NAMES = {"asit": "ASIT", "ifer": "IFER", "ke2nt": "KE2NT-ResNet18", "disentangled": "DisentangledAdv"}
# Metrics reported in percent in the literature.
PERCENT_METRICS = {"accuracy", "mean_class_accuracy", "macro_f1"}
# Printed under every table with numbers from more than one machine in mind.
BIT_IDENTITY_NOTE = ("Bit-identical numbers are expected only on the same CPU ISA flags (avx2 / avx512 / "
                     "avx512_bf16 / amx), torch / oneDNN / CUDA / cuDNN build, GPU, thread count and numerics packages (timm, "
                     "transformers, ...: their versions' digest) (the "
                     "`kernel_key` in provenance.json); elsewhere runs agree within the interval: check with "
                     "`ifer compare`.")
SUMMARY_COLUMNS = ["method", "dataset", "metric", "mean", "std", "ci_low", "ci_high", "n_seeds", "seeds"]


def _num(x) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def summarise(rows: Iterable[dict]) -> pd.DataFrame:
    """Rows of (method, dataset, metric, seed, value) -> mean, std (ddof=1), 95% t-interval, n per group.

    std and the interval are None when a group has a single seed.

    Rows that name a ``protocol`` are grouped by it too (a ``protocol`` column first; unnamed rows are clean), so
    the seeds of two protocols never merge into one mean.
    """
    df = pd.DataFrame(list(rows))
    if df.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    keys = ["method", "dataset", "metric"]
    if "protocol" in df.columns:
        df["protocol"] = df["protocol"].fillna("clean")
        keys = ["protocol", *keys]
    out = []
    for group, g in df.groupby(keys, sort=False):
        s = seed_interval(g["value"].tolist())
        out.append({**dict(zip(keys, group)), "mean": s["mean"], "std": s["std"], "ci_low": s["ci_low"],
                    "ci_high": s["ci_high"], "n_seeds": s["n"], "seeds": g["seed"].tolist()})
    columns = ["protocol", *SUMMARY_COLUMNS] if keys[0] == "protocol" else SUMMARY_COLUMNS
    return pd.DataFrame(out, columns=columns).astype(object)


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


PROTOCOL_ORDER = ("clean", "released")
RELEASED_WEIGHTS_INIT = "official checkpoint"
PROTOCOL_NOTES = (
    "released − clean mixes two effects that this table does not separate: selecting the epoch on the test split "
    "(after training on all of train) and the released code's quirks (as_released modes, fp16 AMP, the "
    "ImageNet-length LR schedule, IFER starting from the RAF-DB ASIT fine-tune).",
    "Baselines (every method but IFER) run under both protocols too; for them released means training on all of "
    "train and selecting the epoch on test: the quirks, the fine-tune and fp16 AMP apply to IFER/ASIT only.",
    "A \"released weights\" row is an official checkpoint scored once on the test split by `ifer eval-checkpoint` "
    "(no selection by the suite); it sits in the released column because the authors produced it under their "
    "protocol.",
)


def row_protocol(row: dict) -> str:
    """A metric row's protocol; rows written before protocols existed were the clean protocol."""
    return row.get("protocol") or "clean"


def protocol_comparison(rows: Iterable[dict], tolerances: dict[str, float], init: dict[tuple[str, str], str] | None = None,
                        reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per method x dataset x metric with every protocol side by side and ``released − clean``.

    ``rows`` are (protocol, method, dataset, metric, seed, value) rows; ``init`` maps (protocol, method) to what
    the method started from. Columns per protocol ``p``: ``p_mean``, ``p_std``, ``p_ci95_low``, ``p_ci95_high``,
    ``p_n_seeds``, ``p_verdict`` (against the paper); then ``delta_released_minus_clean`` where both exist.
    """
    rows = list(rows)
    reference = load_reference() if reference is None else reference
    present = {row_protocol(r) for r in rows}
    protocols = [p for p in PROTOCOL_ORDER if p in present] + sorted(present - set(PROTOCOL_ORDER))
    init = init or {}
    merged: dict[tuple[str, str, str], dict] = {}
    for p in protocols:
        table = compare(summarise(r for r in rows if row_protocol(r) == p), tolerances, reference)
        for r in table.to_dict("records"):
            key = (r["method"], r["dataset"], r["metric"])
            out = merged.setdefault(key, {"method": r["method"], "init": {}, "dataset": r["dataset"],
                                          "metric": r["metric"], "paper": r["paper"], "citation": r["citation"]})
            out["init"][p] = init.get((p, r["method"]))
            out.update({f"{p}_mean": r["reproduced_mean"], f"{p}_std": r["reproduced_std"],
                        f"{p}_ci95_low": r["ci95_low"], f"{p}_ci95_high": r["ci95_high"],
                        f"{p}_n_seeds": r["n_seeds"], f"{p}_verdict": r["verdict"]})
    columns = ["method", "init", "dataset", "metric", "paper"]
    for p in protocols:
        columns += [f"{p}_{k}" for k in ("mean", "std", "ci95_low", "ci95_high", "n_seeds", "verdict")]
    if {"clean", "released"} <= set(protocols):
        columns.append("delta_released_minus_clean")
    columns.append("citation")
    out_rows = []
    for r in merged.values():
        labels = {v for v in r["init"].values() if v}
        r["init"] = ("; ".join(f"{p}: {v}" for p, v in r["init"].items() if v) if len(labels) > 1
                     else next(iter(labels), None))
        if "delta_released_minus_clean" in columns:
            both = r.get("clean_mean") is not None and r.get("released_mean") is not None
            r["delta_released_minus_clean"] = r["released_mean"] - r["clean_mean"] if both else None
        out_rows.append({c: r.get(c) for c in columns})
    return pd.DataFrame(out_rows, columns=columns).astype(object)


def protocols_of(table: pd.DataFrame) -> list[str]:
    return [c[: -len("_mean")] for c in table.columns if c.endswith("_mean")]


def protocol_markdown(table: pd.DataFrame, title: str, configured: Sequence[str] = PROTOCOL_ORDER) -> str:
    """Markdown of :func:`protocol_comparison`: one estimate column per protocol, the delta, the verdicts."""
    protocols = protocols_of(table)
    delta = "delta_released_minus_clean" in table.columns
    head = (["method", "init", "dataset", "metric", "paper"]
            + [f"{p}: mean ± std [{INTERVAL_METHOD}] (n seeds)" for p in protocols]
            + (["released − clean"] if delta else []) + ["verdict (vs paper)"])
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table.to_dict("records"):
        cells = [r["method"], r["init"] or "—", r["dataset"], r["metric"],
                 "—" if r["paper"] is None else f"{r['paper']:.4g}"]
        verdicts = []
        for p in protocols:
            if _num(r[f"{p}_mean"]) is None:
                cells.append("—")
                continue
            cells.append(fmt_estimate(r[f"{p}_mean"], _num(r[f"{p}_std"]), _num(r[f"{p}_ci95_low"]),
                                      _num(r[f"{p}_ci95_high"]), int(r[f"{p}_n_seeds"])))
            verdicts.append(f"{p}: {r[f'{p}_verdict']}" if len(protocols) > 1 else r[f"{p}_verdict"])
        if delta:
            d = _num(r["delta_released_minus_clean"])
            cells.append("—" if d is None else f"{d:+.4g}")
        cells.append("; ".join(verdicts))
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines.append("")
    if "released" not in configured:
        lines.append(f"<sub>This profile runs the clean protocol only (protocols: {list(configured)}); `paper` runs "
                     "clean and released side by side.</sub>")
    lines += [f"<sub>{note}</sub>" for note in PROTOCOL_NOTES] + [f"<sub>{BIT_IDENTITY_NOTE}</sub>"]
    return "\n".join(lines) + "\n"


def write_protocol_tables(table: pd.DataFrame, out_dir: str | Path, stem: str, title: str,
                          configured: Sequence[str] = PROTOCOL_ORDER) -> list[Path]:
    return _write(table, protocol_markdown(table, title, configured), out_dir, stem)


def released_weight_rows(released_dir: str | Path) -> dict[str, list[dict]]:
    """Rows of every ``ifer eval-checkpoint`` result under ``released_dir``, by kind (``ifer``: FER rows in the
    released column; ``asit``: inversion rows), labelled "<method> (released weights)"."""
    import json

    out: dict[str, list[dict]] = {"ifer": [], "asit": []}
    folder = Path(released_dir)
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        result = json.loads(path.read_text())
        out.setdefault(result["kind"], []).extend({**r, "protocol": "released"} for r in result["rows"])
    return out


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
    """Per (protocol, method, dataset): per-class accuracy (recall) in percent, mean ± std over seeds, one column
    per class."""
    groups: dict[tuple[str, str, str], list[list[float | None]]] = {}
    for run in runs:
        key = (run.get("run_protocol") or "clean", run["method"], run["dataset"])
        groups.setdefault(key, []).append(run["test"]["per_class_accuracy"])
    rows = []
    for (protocol, method, dataset), per_seed in groups.items():
        row = {"protocol": protocol, "method": method, "dataset": dataset, "n_seeds": len(per_seed)}
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
             "| protocol | method | dataset | n seeds | " + " | ".join(class_names) + " | confusion (mean over seeds) |",
             "|---|---|---|---|" + "---|" * len(class_names) + "---|"]
    for r in table.to_dict("records"):
        cells = []
        for name in class_names:
            m, s = _num(r[f"{name}_mean"]), _num(r[f"{name}_std"])
            cells.append("—" if m is None else f"{m:.1f}" if s is None else f"{m:.1f} ± {s:.1f}")
        plot = f"{plot_dir}/{r['protocol']}/{r['method']}_{r['dataset']}.png"
        lines.append(f"| {r['protocol']} | {r['method']} | {r['dataset']} | {r['n_seeds']} | " + " | ".join(cells)
                     + f" | [plot]({plot}) |")
    lines += ["", "Per-class accuracy (recall, %) on the test split, mean ± std over seeds; the confusion "
              "plots show the confusion matrix averaged over seeds."]
    return _write(table, "\n".join(lines) + "\n", out_dir, stem)


SIGNIFICANCE_COLUMNS = ["protocol", "dataset", "a", "b", "diff_points", "diff_ci_low", "diff_ci_high", "sd_diff_points",
                        "t", "df", "p", "p_holm", "mde_points", "significant", "n_seeds", "n_images", "verdict"]


def significance_table(rows: Sequence[dict]) -> pd.DataFrame:
    """Rows of :func:`ifer.report.stats.pairwise_table`; rows without a protocol (written before protocols
    existed) are the clean protocol."""
    return pd.DataFrame([{"protocol": "clean", **r} for r in rows], columns=SIGNIFICANCE_COLUMNS)


def _pts(x, fmt: str = "+.2f") -> str:
    return "—" if _num(x) is None else format(float(x), fmt)


def write_significance(table: pd.DataFrame, out_dir: str | Path, stem: str, title: str) -> list[Path]:
    lines = [f"### {title}", "",
             f"Test: {TEST_METHOD}; a verdict names a winner only when the Holm-adjusted p < 0.05. The unit is the "
             "training seed, so the test is about the methods, not about these particular trained models; with one "
             "seed no test is possible. Detectable: the "
             f"{DETECTABLE_METHOD}. A pair that is not distinguishable may still differ by less than that.", "",
             "| protocol | dataset | A | B | accuracy A − B (points) [95% t-interval over seeds] | sd of per-seed "
             "differences (points) | t (df) | p (Holm) | detectable difference (points) | seeds × images | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in table.to_dict("records"):
        t = "—" if _num(r["t"]) is None else f"{float(r['t']):.2f} ({int(r['df'])})"
        lines.append(f"| {r['protocol']} | {r['dataset']} | {r['a']} | {r['b']} | {r['diff_points']:+.2f} "
                     f"[{_pts(r['diff_ci_low'])}, {_pts(r['diff_ci_high'])}] | {_pts(r['sd_diff_points'], '.2f')} | "
                     f"{t} | {_pts(r['p_holm'], '.3g')} | {_pts(r['mde_points'], '.1f')} | {r['n_seeds']} × "
                     f"{r['n_images']} | {r['verdict']} |")
    return _write(table, "\n".join(lines) + "\n", out_dir, stem)


def write_probe(rows: Sequence[dict], out_dir: str | Path, stem: str, title: str) -> list[Path]:
    """Identity probe: per-seed rows in CSV, mean ± std [interval] per method in Markdown."""
    per_seed = pd.DataFrame(list(rows), columns=None if rows else ["protocol", "method", "dataset", "seed",
                                                                   "identity_probe_accuracy", "identity_chance"])
    if per_seed.empty:  # real FER datasets carry no identity labels; dvc.yaml still declares the files
        return _write(per_seed, f"### {title}\n\nNo dataset of this run has identity labels (only SynthFER has), "
                      "so no probe was run.\n", out_dir, stem)
    lines = [f"### {title}", "",
             f"| protocol | method | dataset | probe accuracy: mean ± std [{INTERVAL_METHOD}] (n seeds) | chance |",
             "|---|---|---|---|---|"]
    if "protocol" not in per_seed.columns:
        per_seed.insert(0, "protocol", "clean")
    for (protocol, method, dataset), g in per_seed.groupby(["protocol", "method", "dataset"], sort=False):
        s = seed_interval(g["identity_probe_accuracy"].tolist())
        lines.append(f"| {protocol} | {method} | {dataset} | {fmt_estimate(s['mean'], s['std'], s['ci_low'], s['ci_high'], s['n'])}"
                     f" | {g['identity_chance'].iloc[0]:.3f} |")
    lines += ["", "Lower = less identity information in the expression features (linear probe on held-out "
              "SynthFER identities, repeated for every training seed). The methods' expression features differ in "
              "width (in tiny from 32 to 384 dimensions), and the probe is not normalised "
              "for it: a wider feature gives the probe more capacity, so compare widths before reading a difference. "
              "`factor_probe.md` repeats it with every method's features reduced to one common width (PCA)."]
    return _write(per_seed, "\n".join(lines) + "\n", out_dir, stem)


# ---------------------------------------------------------------------------------------------- DVC numbers
# ``summary.json``: every headline number as a flat dict of scalar leaves (what `dvc metrics show|diff` and
# `dvc exp show` read; DVC skips lists, so fer_metrics.json alone shows almost nothing). Keys are
# ``<protocol>/<method>/<dataset>/<metric>``; the inversion metrics use ``inversion`` in the protocol slot.
# Values are in the units of fer_metrics.json / inversion_metrics.json (accuracies as fractions, not percent).
SUMMARY_FIELDS = ("mean", "std", "ci_low", "ci_high", "n")
INVERSION_TASK = "inversion"


def summary_metrics(rows: Iterable[dict]) -> dict[str, dict[str, float | int]]:
    """(protocol, method, dataset, metric, seed, value) rows -> ``{"<protocol>/<method>/<dataset>/<metric>":
    {"mean", "std", "ci_low", "ci_high", "n"}}`` (the Student-t interval of :func:`summarise`); std and the interval
    are left out for a single seed (none exists), so every leaf is a number."""
    rows = [{"protocol": row_protocol(r), **{k: v for k, v in r.items() if k != "protocol"}} for r in rows
            if isinstance(r.get("value"), (int, float)) and not isinstance(r.get("value"), bool)
            and math.isfinite(r["value"])]
    out: dict[str, dict[str, float | int]] = {}
    for r in summarise(rows).to_dict("records"):
        stats = {"mean": r["mean"], "std": r["std"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
                 "n": r["n_seeds"]}
        out[f"{r['protocol']}/{r['method']}/{r['dataset']}/{r['metric']}"] = {
            k: (int(v) if k == "n" else float(v)) for k, v in stats.items() if _num(v) is not None}
    return out


def headline_rows(fer_rows: Iterable[dict], inversion_rows: Iterable[dict], probe_rows: Iterable[dict] = ()) -> list[dict]:
    """The rows behind ``summary.json``: FER rows as they are, inversion rows under the ``inversion`` protocol
    slot, identity-probe rows as metric ``identity_probe_accuracy``."""
    rows = [dict(r) for r in fer_rows]
    rows += [{**r, "protocol": INVERSION_TASK} for r in inversion_rows]
    rows += [{"protocol": row_protocol(r), "method": r["method"], "dataset": r["dataset"],
              "metric": "identity_probe_accuracy", "seed": r["seed"], "value": r["identity_probe_accuracy"]}
             for r in probe_rows]
    return rows


def write_summary(summary: dict, path: str | Path) -> Path:
    import json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, json.dumps(summary, indent=1, sort_keys=False) + "\n")


# ---------------------------------------------------------------------------------------------- curves
# Per-run and over-seed curves as CSV for `dvc plots show` (dvc.yaml's top-level ``plots``): written by the report
# stage from runs/**/log.jsonl, which are never committed.
FER_CURVE_COLUMNS = ["epoch", "step", "train_loss", "selection_accuracy", "selection_mean_class_accuracy"]


def fer_curve(epoch_rows: Sequence[dict], selection: str) -> list[dict]:
    """One row per epoch (1-based) of a FER run's ``epoch`` events; ``selection_*`` is the model-selection split
    (``val`` under the clean protocol)."""
    return [{"epoch": r["epoch"] + 1, "step": r.get("step"), "train_loss": r.get("train_loss"),
             "selection_accuracy": r.get(f"{selection}_accuracy"),
             "selection_mean_class_accuracy": r.get(f"{selection}_mean_class_accuracy")} for r in epoch_rows]


def asit_curve(rows: Sequence[dict]) -> list[dict]:
    """One row per logged step of an ASIT run: ``train_loss``/``l2`` from ``train`` events, ``val_loss`` from
    ``val`` events (blank where the step has none)."""
    by_step: dict[int, dict] = {}
    for r in rows:
        if r["kind"] == "train":
            by_step.setdefault(r["step"], {"step": r["step"]}).update(train_loss=r.get("loss"), l2=r.get("l2"))
        elif r["kind"] == "val":
            by_step.setdefault(r["step"], {"step": r["step"]})["val_loss"] = r.get("loss")
    return [{"step": s, "train_loss": None, "l2": None, "val_loss": None, **by_step[s]} for s in sorted(by_step)]


def mean_curve(per_seed: dict, x: str, fields: Sequence[str]) -> list[dict]:
    """Mean and spread over seeds at each ``x``: ``<f>_mean``, ``<f>_std`` (ddof=1; blank for one seed),
    ``<f>_lo`` / ``<f>_hi`` = mean ∓ std (= mean for one seed), and ``n_seeds``."""
    xs = sorted({r[x] for rows in per_seed.values() for r in rows})
    out = []
    for xv in xs:
        row: dict = {x: xv}
        n = 0
        for f in fields:
            vals = [r[f] for rows in per_seed.values() for r in rows
                    if r[x] == xv and isinstance(r.get(f), (int, float)) and math.isfinite(r[f])]
            n = max(n, len(vals))
            if not vals:
                row.update({f"{f}_mean": None, f"{f}_std": None, f"{f}_lo": None, f"{f}_hi": None})
                continue
            s = seed_interval(vals)
            sd = s["std"]
            row.update({f"{f}_mean": s["mean"], f"{f}_std": sd, f"{f}_lo": s["mean"] - (sd or 0.0),
                        f"{f}_hi": s["mean"] + (sd or 0.0)})
        row["n_seeds"] = n
        out.append(row)
    return out


def write_curve(rows: Sequence[dict], path: str | Path, columns: Sequence[str] | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(list(rows))
    return atomic_write_text(path, (frame if columns is None else frame.reindex(columns=list(columns))).to_csv(index=False))


# ---------------------------------------------------------------------------------------------- terminal
def _cell(stats: dict | None, percent: bool) -> str:
    if not stats:
        return "—"
    scale = 100.0 if percent else 1.0
    mean = stats["mean"] * scale
    return f"{mean:.4g}" if "std" not in stats else f"{mean:.4g} ± {stats['std'] * scale:.2g}"


def headline_tables(summary: dict) -> list:
    """rich Tables of ``summary.json``: FER (one row per protocol x method x dataset, one column per metric, mean ±
    std over seeds, accuracies in %) and inversion (one row per method)."""
    from rich.table import Table

    groups: dict[tuple[str, str, str], dict[str, dict]] = {}
    for key, stats in summary.items():
        protocol, method, dataset, metric = key.split("/", 3)
        groups.setdefault((protocol, method, dataset), {})[metric] = stats
    tables = []
    for title, mine in (("FER (test split): mean ± std over seeds, % for accuracies",
                         {k: v for k, v in groups.items() if k[0] != INVERSION_TASK}),
                        ("Inversion (test split): mean ± std over ASIT seeds",
                         {k: v for k, v in groups.items() if k[0] == INVERSION_TASK})):
        if not mine:
            continue
        metrics = list(dict.fromkeys(m for per in mine.values() for m in per))
        inv = title.startswith("Inversion")
        table = Table(title=title, title_justify="left")
        for col in (["method", "dataset"] if inv else ["protocol", "method", "dataset"]):
            table.add_column(col)
        table.add_column("n", justify="right")
        for m in metrics:
            table.add_column(m, justify="right", overflow="fold")
        for (protocol, method, dataset), per in mine.items():
            n = max(int(s.get("n", 1)) for s in per.values())
            lead = [method, dataset] if inv else [protocol, method, dataset]
            table.add_row(*lead, str(n), *[_cell(per.get(m), m in PERCENT_METRICS or m == "identity_probe_accuracy")
                                           for m in metrics])
        tables.append(table)
    return tables


def print_headline(summary: dict, files: Sequence[tuple[str, str | Path]], file=None) -> None:
    """The end-of-run terminal table: the headline numbers, then where the files are (plain text off a terminal)."""
    from rich.console import Console

    console = Console(file=file, highlight=False, soft_wrap=False)
    if not console.is_terminal:
        console = Console(file=file, highlight=False, width=160, color_system=None)
    for table in headline_tables(summary):
        console.print(table)
    files_table = _files_table(files)
    console.print(files_table)


def _files_table(files: Sequence[tuple[str, str | Path]]):
    from rich.table import Table

    table = Table(title="Where the files are", title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("path", overflow="fold")
    for what, path in files:
        table.add_row(what, str(path))
    return table
