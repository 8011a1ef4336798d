"""Tables of the analyses beyond accuracy (issue 21), from ``results/<profile>/analysis_metrics.json``.

    python -m ifer.cli report --params params.yaml      # writes them beside the FER tables

* ``fer_cost``: parameters, MACs at the evaluated size, CPU latency (batch 1) and throughput as ratios to a
  ResNet-18 timed in the same run, beside the machine's fp32 FLOP bound.
* ``fer_calibration``: ECE and MCE (15 equal-width bins) per method and dataset, mean ± std [95% t] over seeds.
* ``fer_corruptions``: accuracy per corruption (mean over its severities), the mean over all corruptions and the
  relative robustness ``mean corrupted accuracy / clean accuracy`` on the same images.
* ``fer_robustness``: SynthFER accuracy per bin of each known factor, and per bin the pairs of methods whose
  difference is significant under the seed-level paired t test (Holm over the pairs of that bin).
* ``factor_probe``: linear-probe accuracy of each factor from the expression features at one common width, with
  the chance rate (majority bin) of the scored images.
* ``fer_transfer``: train on one dataset, test on another (the 7 basic expressions matched by name).

Every estimate is over training seeds (:data:`ifer.report.stats.INTERVAL_METHOD`); one seed prints "no interval".
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ifer.data.corruptions import SEVERITIES as _SEVERITIES
from ifer.report.stats import INTERVAL_METHOD, TEST_METHOD, seed_interval
from ifer.report.tables import _write, fmt_estimate

TABLES = ("fer_cost", "fer_calibration", "fer_corruptions", "fer_robustness", "factor_probe", "fer_transfer",
          "fer_subsets")


def _est(values: Sequence[float], scale: float = 100.0) -> tuple[str, dict]:
    s = seed_interval([scale * float(v) for v in values])
    return fmt_estimate(s["mean"], s["std"], s["ci_low"], s["ci_high"], s["n"]), s


def _groups(runs: Sequence[dict]) -> dict[tuple[str, str, str], list[dict]]:
    out: dict[tuple[str, str, str], list[dict]] = {}
    for r in runs:
        out.setdefault((r["protocol"], r["method"], r["dataset"]), []).append(r)
    return out


def corruption_summary(corruptions: dict) -> tuple[float | None, float | None]:
    """A run's mean corrupted accuracy (every corruption and severity) and its ratio to the clean accuracy on the
    same images (relative robustness); ``None`` where nothing was corrupted or the clean accuracy is 0."""
    accs = [v for per_severity in corruptions["accuracy"].values() for v in per_severity.values()]
    if not accs:
        return None, None
    mean = float(np.mean(accs))
    return mean, (mean / corruptions["clean_accuracy"] if corruptions["clean_accuracy"] else None)


def cost_table(cost: dict) -> tuple[pd.DataFrame, str]:
    rows, lines = [], []
    head = ["method", "model", "params (M)", "GMACs @ input", "latency b=1 (ms) [x ResNet-18]",
            "throughput (img/s) [x ResNet-18]"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    bound = None
    for method, c in cost.items():
        sp = c.get("speed") or {}
        bound = sp.get("fp32_peak_tflops", bound)
        rows.append({"method": method, "model": c["model"], "params": c["params"], "trainable": c["trainable"],
                     "img_size": c["img_size"], "gmacs": c["gmacs"], "latency_ms": sp.get("latency_ms"),
                     "latency_ratio": sp.get("latency_ratio"), "images_per_s": sp.get("images_per_s"),
                     "throughput_ratio": sp.get("throughput_ratio"), "threads": sp.get("threads")})
        lat = "not timed" if not sp else f"{sp['latency_ms']:.2f} [x{sp['latency_ratio']:.2f}]"
        thr = "not timed" if not sp else f"{sp['images_per_s']:.0f} [x{sp['throughput_ratio']:.2f}]"
        lines.append(f"| {method} | {c['model']} | {c['params'] / 1e6:.3g} | {c['gmacs']:.3g} @ {c['img_size']} px | "
                     f"{lat} | {thr} |")
    timed = next((c["speed"] for c in cost.values() if c.get("speed")), None)
    lines += ["", "MACs: torch's FlopCounterMode (FLOPs / 2, batch 1, eval; elementwise ops not counted, as in fvcore "
              "and published figures: ResNet-18 at 224 px = 1.82 G)."]
    if timed:
        lines.append(f"Timing: CPU, {timed['threads']} thread(s), medians, each call interleaved with "
                     f"{timed['reference']} at the same input size (the ratio survives a busy machine; absolute times "
                     f"do not). Throughput batch {timed['batch']}. fp32 FLOP bound of this machine: "
                     f"{bound:.3g} TFLOP/s." if bound else "")
    return pd.DataFrame(rows), "\n".join(lines)


def calibration_table(runs: Sequence[dict]) -> tuple[pd.DataFrame, str]:
    rows = []
    head = ["protocol", "method", "dataset", f"ECE (points): mean ± std [{INTERVAL_METHOD}] (n)", "MCE (points)",
            "accuracy (%)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (protocol, method, dataset), g in _groups(runs).items():
        ece, es = _est([r["calibration"]["ece"] for r in g])
        mce, _ = _est([r["calibration"]["mce"] for r in g])
        acc, _ = _est([r["accuracy"] for r in g])
        for r in g:
            rows.append({"protocol": protocol, "method": method, "dataset": dataset, "seed": r["seed"],
                         "ece": r["calibration"]["ece"], "mce": r["calibration"]["mce"], "accuracy": r["accuracy"],
                         "n_bins": r["calibration"]["n_bins"], "n_images": r["n_images"]})
        lines.append(f"| {protocol} | {method} | {dataset} | {ece} | {mce} | {acc} |")
    n_bins = runs[0]["calibration"]["n_bins"] if runs else "?"
    lines += ["", f"Top-1 ECE / MCE over {n_bins} equal-width confidence bins (torchmetrics, norm l1 / max), in points "
              "(x100). Reliability diagrams (seeds pooled): `plots/reliability/`."]
    return pd.DataFrame(rows), "\n".join(lines)


def _parameter_note(runs: Sequence[dict], parameters: dict, types: Sequence[str]) -> str:
    """The corruption parameters per severity, per input size with the methods evaluated at it. ``parameters``:
    ``{size: {type: {severity: label}}}``; files written before sizes were recorded hold ``{type: {...}}``."""
    if parameters and set(parameters) <= _SEVERITIES.keys():
        parameters = {"": parameters}
    parts = []
    for size, per_type in parameters.items():
        methods = sorted({r["method"] for r in runs if str(r["corruptions"].get("input_size", "")) == size})
        head = f"at {size} px ({', '.join(methods)})" if size else "(input size not recorded)"
        parts.append(head + ": " + "; ".join(f"{t}: " + ", ".join(f"{s}: {p}" for s, p in per_type.get(t, {}).items())
                                             for t in types))
    return " | ".join(parts)


def corruption_table(runs: Sequence[dict], parameters: dict) -> tuple[pd.DataFrame, str]:
    types = list(next(iter(runs))["corruptions"]["accuracy"]) if runs else []
    rows = []
    head = ["protocol", "method", "dataset", "clean"] + types + ["mean corrupted", "relative robustness"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (protocol, method, dataset), g in _groups(runs).items():
        cells = [protocol, method, dataset, _est([r["corruptions"]["clean_accuracy"] for r in g])[0]]
        per_seed_mean, per_seed_rel = [], []
        for r in g:
            c = r["corruptions"]
            mean, rel = corruption_summary(c)
            per_seed_mean.append(mean)
            per_seed_rel.append(rel)
            rows.append({"protocol": protocol, "method": method, "dataset": dataset, "seed": r["seed"],
                         "n_images": c["n_images"], "clean_accuracy": c["clean_accuracy"],
                         **{f"{t}@{s}": v for t in types for s, v in c["accuracy"][t].items()},
                         "mean_corrupted_accuracy": mean, "relative_robustness": rel})
        for t in types:
            cells.append(_est([float(np.mean(list(r["corruptions"]["accuracy"][t].values()))) for r in g])[0])
        cells.append(_est(per_seed_mean)[0] if None not in per_seed_mean else "—")
        cells.append(_est(per_seed_rel, 1.0)[0] if None not in per_seed_rel else "— (clean accuracy 0)")
        lines.append("| " + " | ".join(cells) + " |")
    sev = sorted({s for r in runs for t in types for s in r["corruptions"]["accuracy"][t]}, key=int)
    n = runs[0]["corruptions"]["n_images"] if runs else 0
    lines += ["", f"Accuracy in %, mean ± std [{INTERVAL_METHOD}] over seeds; each corruption averaged over severities "
              f"{', '.join(sev)} on the first {n} test images (the clean column scores the same images). Relative "
              "robustness = mean corrupted / clean accuracy (1 = unaffected). Each method is corrupted at its own "
              "input size; parameters per severity " + _parameter_note(runs, parameters, types)
              + ". Per severity: the CSV and `plots/corruptions/`."]
    return pd.DataFrame(rows), "\n".join(lines)


def _wins(pairwise: Sequence[dict]) -> str:
    """The significant pairs of one bin or subset (Holm), else "none" with the detectable difference range."""
    wins = [f"{t['verdict']}" for t in pairwise if t["significant"]]
    mde = [t["mde_points"] for t in pairwise if t.get("mde_points") is not None]
    return "; ".join(wins) if wins else "none" + (f" (detectable ≈ {min(mde):.0f}–{max(mde):.0f} points)" if mde else "")


def subset_table(subsets: Sequence[dict], runs: Sequence[dict]) -> tuple[pd.DataFrame, str]:
    """Accuracy on the published subsets the user listed (``analysis.subsets``) beside the full test split."""
    if not subsets:
        return pd.DataFrame(), ("No subset list was given (`analysis.subsets`: image lists of the published "
                                "occlusion / pose subsets of RAF-DB, FERPlus, AffectNet; docs/analyses.md).")
    full = {k: [r["accuracy"] for r in g] for k, g in _groups(runs).items()}
    methods = list(dict.fromkeys(m for x in subsets for m in x["methods"]))
    head = ["protocol", "dataset", "subset (images)"] + methods + ["significant differences (Holm)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows = []
    for x in subsets:
        cells = [x["protocol"], x["dataset"], f"{x['subset']} ({x['n_images']})"]
        for m in methods:
            if m not in x["methods"]:
                cells.append("—")
                continue
            whole = full.get((x["protocol"], m, x["dataset"]), [])
            cells.append(f"{_est(x['methods'][m]['per_seed'])[0]}; all {_est(whole)[1]['mean']:.1f}" if whole
                         else _est(x["methods"][m]["per_seed"])[0])
            rows.append({"protocol": x["protocol"], "dataset": x["dataset"], "subset": x["subset"], "method": m,
                         "n_images": x["n_images"], "list": x["list"], "sha256": x["sha256"],
                         **{f"seed_{k}": v for k, v in enumerate(x["methods"][m]["per_seed"])},
                         **{f"all_seed_{k}": v for k, v in enumerate(whole)}})
        cells.append(_wins(x["pairwise"]))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Accuracy in %, mean ± std [{INTERVAL_METHOD}] over seeds on the listed test images, the whole "
              f"test split's mean after 'all'; pairs of methods by the {TEST_METHOD} on the subset. Lists: "
              + "; ".join(f"{x['subset']} ({x['dataset']}): {x['list']} (sha256 {x['sha256'][:12]}…, "
                          f"{x['n_matched']} of {x['n_listed']} names matched"
                          + (f"; unmatched e.g. {', '.join(x['unmatched_examples'][:3])}" if x["n_unmatched"] else "")
                          + ")" for x in subsets if x["protocol"] == subsets[0]["protocol"]) + "."]
    return pd.DataFrame(rows), "\n".join(lines)


def robustness_table(robustness: Sequence[dict]) -> tuple[pd.DataFrame, str]:
    if not robustness:
        return pd.DataFrame(), ("No dataset of this run records its factors (only SynthFER does), so no accuracy by "
                                "factor was computed. Published occlusion / pose subsets of real datasets: `fer_subsets.md`.")
    rows = []
    methods = list(robustness[0]["methods"]) if robustness else []
    head = ["protocol", "dataset", "factor", "bin (n images)"] + methods + ["significant differences (Holm)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in robustness:
        cells = [r["protocol"], r["dataset"], r["factor"], f"{r['bin']} ({r['n_images']})"]
        for m in methods:
            cells.append(_est(r["methods"][m]["per_seed"])[0])
            rows.append({"protocol": r["protocol"], "dataset": r["dataset"], "factor": r["factor"], "bin": r["bin"],
                         "edges": r["edges"], "method": m, "n_images": r["n_images"],
                         **{f"seed_{k}": v for k, v in enumerate(r["methods"][m]["per_seed"])}})
        cells.append(_wins(r["pairwise"]))
        lines.append("| " + " | ".join(cells) + " |")
    defs = {r["factor"]: (r["definition"], r["edges"]) for r in robustness}
    lines += ["", f"Accuracy in %, mean ± std [{INTERVAL_METHOD}] over seeds, per bin of each SynthFER factor; "
              f"pairs of methods compared per bin by the {TEST_METHOD} (Holm over the pairs of the bin; the detectable "
              "difference at 80% power in brackets when none is significant). Bins: "
              + "; ".join(f"{f}: {d}" + (f" (edges {', '.join(f'{e:.3g}' for e in ed)})" if ed else "")
                          for f, (d, ed) in defs.items()) + ". Plots: `plots/robustness/`."]
    return pd.DataFrame(rows), "\n".join(lines)


def probe_table(probes: Sequence[dict]) -> tuple[pd.DataFrame, str]:
    df = pd.DataFrame(list(probes))
    if df.empty:
        return df, "No dataset of this run has SynthFER's factor labels, so no probe was run."
    factors = list(dict.fromkeys(df["factor"]))
    head = ["protocol", "dataset", "method", "feature width"] + [f"{f} (chance)" for f in factors]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (protocol, dataset, method), g in df.groupby(["protocol", "dataset", "method"], sort=False):
        cells = [protocol, dataset, method, str(int(g["feature_width"].iloc[0]))]
        for f in factors:
            gf = g[g["factor"] == f]
            cells.append(f"{_est(gf['accuracy'].tolist())[0]} ({100 * gf['chance'].mean():.0f})")
        lines.append("| " + " | ".join(cells) + " |")
    width = int(df["width"].min())
    lines += ["", f"Linear-probe accuracy in % (mean ± std [{INTERVAL_METHOD}] over seeds) of each factor from the "
              f"expression features, every method's features standardised and reduced by PCA to {width} dimensions "
              "(the narrowest method's width), so every probe has the same capacity. Nuisance factors: fit on half "
              "of the test identities, scored on the others; identity: half of each person's images. In brackets: "
              "chance = the majority bin's share of the scored images. Lower = the features carry less of that "
              "factor (what a disentangled expression code should show); expression-related factors "
              "(intensity) are expected to be high."]
    return df, "\n".join(lines)


def transfer_table(runs: Sequence[dict]) -> tuple[pd.DataFrame, str]:
    rows = []
    for r in runs:
        rows.append({"protocol": r["protocol"], "method": r["method"], "train": r["dataset"], "test": r["dataset"],
                     "seed": r["seed"], "accuracy": r["accuracy"], "n_images": r["n_images"]})
        for other, t in r.get("transfer", {}).items():
            rows.append({"protocol": r["protocol"], "method": r["method"], "train": r["dataset"], "test": other,
                         "seed": r["seed"], "accuracy": t["accuracy"], "n_images": t["n_images"]})
    df = pd.DataFrame(rows)
    tests = list(dict.fromkeys(df["test"])) if not df.empty else []
    head = ["protocol", "method", "trained on"] + [f"→ {t}" for t in tests]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (protocol, method, train), g in (df.groupby(["protocol", "method", "train"], sort=False) if not df.empty else []):
        cells = [protocol, method, train]
        for t in tests:
            gt = g[g["test"] == t]
            cells.append(_est(gt["accuracy"].tolist())[0] + (" (in-domain)" if t == train else "") if len(gt) else "—")
        lines.append("| " + " | ".join(cells) + " |")
    note = ("Accuracy in %, mean ± std over seeds: each run scored on the test split of every configured dataset, "
            "classes matched by name (the 7 basic expressions; a test class the training set lacks is left out).")
    trained = set(df["train"]) if not df.empty else set()
    test_only = [t for t in tests if t not in trained]
    if test_only:
        note += (f" Test-only columns (analysis.transfer_datasets): {', '.join(test_only)}"
                 + (" (synthfer_shift: the same SynthFER test people and random draws at another nuisance strength, "
                    "data.synthfer_shift)" if "synthfer_shift" in test_only else "") + ".")
    if len(trained) < 2:
        note += " `paper` fills the RAF-DB / SFEW / AffectNet-7 matrix from its trained runs."
    lines += ["", note]
    return df, "\n".join(lines)


def write_analysis_tables(payload: dict, out_dir: str | Path, profile: str) -> list[Path]:
    """Every table of this module into ``out_dir`` (Markdown + CSV); returns the files written."""
    written = []
    runs = payload["runs"]
    for stem, title, (table, body) in (
        ("fer_cost", "Model cost", cost_table(payload["cost"])),
        ("fer_calibration", "Calibration (test split)", calibration_table(runs)),
        ("fer_corruptions", "Accuracy under corruptions (test split)",
         corruption_table(runs, payload["protocols"]["corruption_parameters"])),
        ("fer_robustness", "SynthFER accuracy by factor (test split)", robustness_table(payload["robustness"])),
        ("factor_probe", "What the expression features encode (linear probes, SynthFER test identities)",
         probe_table(payload["probes"])),
        ("fer_transfer", "Cross-dataset transfer", transfer_table(runs)),
        ("fer_subsets", "Published test subsets (occlusion, pose)", subset_table(payload.get("subsets") or [], runs)),
    ):
        written += _write(table, f"### {title} (profile {profile})\n\n{body}\n", out_dir, stem)
    return written


def per_seed_values(payload: dict) -> list[dict]:
    """Every per-seed number of ``analysis_metrics.json``, once, for both readers (``summary.json`` through
    :func:`headline_rows`, ``ifer compare`` through ``ifer.report.compare.analysis_values``): rows
    ``{protocol, method, dataset, seed, metric, value}`` with ``metric`` one of ``ece``,
    ``mean_corrupted_accuracy``, ``relative_robustness``, ``transfer_<target>_accuracy``,
    ``subset_<name>_accuracy`` per run, ``probe_<factor>_accuracy`` per factor probe, and per method
    ``params`` / ``gmacs`` under dataset ``cost`` (protocol ``None``, seed 0). Missing numbers are left out.

    >>> per_seed_values({"runs": [], "probes": [], "cost": {"m": {"params": 3, "gmacs": 0.5}}})[0]["metric"]
    'params'
    """
    out: list[dict] = []

    def put(base: dict, metric: str, value) -> None:
        if value is not None:
            out.append({**base, "metric": metric, "value": value})

    for r in payload.get("runs", []):
        base = {"protocol": r["protocol"], "method": r["method"], "dataset": r["dataset"], "seed": r["seed"]}
        put(base, "ece", (r.get("calibration") or {}).get("ece"))
        if r.get("corruptions"):
            mean, rel = corruption_summary(r["corruptions"])
            put(base, "mean_corrupted_accuracy", mean)
            put(base, "relative_robustness", rel)
        for target, t in (r.get("transfer") or {}).items():
            put(base, f"transfer_{target}_accuracy", t.get("accuracy"))
        for name, x in (r.get("subsets") or {}).items():
            put(base, f"subset_{name}_accuracy", x.get("accuracy"))
    for p in payload.get("probes", []):
        put({"protocol": p["protocol"], "method": p["method"], "dataset": p["dataset"], "seed": p["seed"]},
            f"probe_{p['factor']}_accuracy", p.get("accuracy"))
    for method, c in (payload.get("cost") or {}).items():
        for metric in ("params", "gmacs"):
            put({"protocol": None, "method": method, "dataset": "cost", "seed": 0}, metric, c.get(metric))
    return out


def headline_rows(payload: dict) -> list[dict]:
    """Rows for ``summary.json`` (``<protocol>/<method>/<dataset>/<metric>``): :func:`per_seed_values`, with the
    cost rows repeated under every protocol and parameters in millions (``params_m``)."""
    protocols = sorted({r["protocol"] for r in payload["runs"]}) or ["clean"]
    out = []
    for row in per_seed_values(payload):
        if row["protocol"] is not None:
            out.append(row)
            continue
        metric, value = ("params_m", row["value"] / 1e6) if row["metric"] == "params" else (row["metric"], row["value"])
        out += [{**row, "protocol": p, "metric": metric, "value": value} for p in protocols]
    return out


def readme_summary(payload: dict) -> str:
    """A compact table for the README: per method, cost and the first dataset's ECE, relative robustness, transfer
    to the first other test set, and the identity / pose probes."""
    runs = payload["runs"]
    if not runs:
        return ""
    protocol, dataset = runs[0]["protocol"], runs[0]["dataset"]
    other = next(iter(runs[0].get("transfer") or {}), None)
    lines = [f"Beyond accuracy ({protocol}, {dataset}; mean over seeds; the tables linked below give intervals and "
             "tests):", "",
             "| method | params (M) | GMACs | latency x ResNet-18 | ECE (points) | relative robustness | "
             + (f"accuracy → {other} (%) | " if other else "") + "identity probe (%) | pose probe (%) |",
             "|---|---|---|---|---|---|" + ("---|" if other else "") + "---|---|"]
    chance: dict[str, list[float]] = {}
    for method, c in payload["cost"].items():
        g = [r for r in runs if (r["protocol"], r["dataset"], r["method"]) == (protocol, dataset, method)]
        if not g:
            continue
        ece = np.mean([r["calibration"]["ece"] for r in g]) * 100
        rel = [x for x in (corruption_summary(r["corruptions"])[1] for r in g) if x is not None]
        probe = {}
        for f in ("identity", "pose"):
            sel = [p for p in payload["probes"]
                   if (p["protocol"], p["dataset"], p["method"], p["factor"]) == (protocol, dataset, method, f)]
            probe[f] = [p["accuracy"] for p in sel]
            chance.setdefault(f, []).extend(p["chance"] for p in sel)
        lat = c.get("speed", {}).get("latency_ratio")
        cells = [method, f"{c['params'] / 1e6:.3g}", f"{c['gmacs']:.3g}", "—" if lat is None else f"{lat:.2f}",
                 f"{ece:.1f}", "—" if not rel else f"{np.mean(rel):.2f}"]
        if other:
            acc = [r["transfer"][other]["accuracy"] for r in g if other in r.get("transfer", {})]
            cells.append("—" if not acc else f"{100 * np.mean(acc):.1f}")
        cells += ["—" if not v else f"{100 * np.mean(v):.1f}" for v in probe.values()]
        lines.append("| " + " | ".join(cells) + " |")
    widths = {p["width"] for p in payload["probes"]}
    if widths:
        lines += ["", f"Probes at one width ({', '.join(map(str, sorted(widths)))}, PCA); chance (majority bin): "
                  + ", ".join(f"{f} {100 * np.mean(v):.0f} %" for f, v in chance.items() if v)
                  + ". Latency: CPU batch 1, ratio to a ResNet-18 timed alongside."]
    return "\n".join(lines)
