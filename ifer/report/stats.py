"""Statistics over seeds and test images: mean ± std with a 95% t-interval, and paired method comparisons.

* :func:`seed_interval`: mean, sample std (ddof=1) and the two-sided 95% Student-t interval over seeds,
  ``mean ± t_{0.975, n-1} · std / sqrt(n)``. With n = 1 there is no spread to estimate: std and the
  interval are ``None`` (tables print "n=1, no interval", never "± 0").
* :func:`paired_bootstrap`: two methods scored on the same test images with the same seeds. The per-image
  difference in correctness ``D[s, i] = A[s, i] - B[s, i]`` is resampled two-level (seeds with
  replacement, then images with replacement, the same draw for both methods so the pairing is kept), so
  the test covers both training-seed variance and test-set sampling. Two-sided p-value by the shifted
  (null-centred) bootstrap: ``p = (1 + #{|d* - d| >= |d|}) / (B + 1)``; identical predictions give p = 1,
  and the smallest reachable p is ``1 / (B + 1)``.
* :func:`stratified_mcnemar`: McNemar per seed combined over seeds (``z = Σ(b_s - c_s) / sqrt(Σ(b_s + c_s))``),
  reported beside the bootstrap as a check; it conditions on the trained models, so it ignores seed variance.
* :func:`holm`: Holm's step-down correction of a family of p-values (all pairs of methods).
* :func:`write_predictions` / :func:`load_correctness`: the per-image predictions ``eval_fer`` keeps
  (``results/<profile>/predictions/<dataset>.json``: image ids, labels, predicted class per method and seed),
  and the 0/1 correctness arrays the paired tests read from them.
* :func:`pairwise_table`: every pair of methods on one dataset, Holm-adjusted, with a verdict string
  ``"A > B (p = 0.003)"`` or ``"not distinguishable (p = 0.41)"`` at ``alpha`` = 0.05.

    python -c "from ifer.report.stats import seed_interval; print(seed_interval([0.35, 0.36, 0.38]))"
"""
from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy import stats as sps

from ifer.core.io import atomic_write_text

INTERVAL_METHOD = "95% Student-t interval over seeds"
TEST_METHOD = "paired bootstrap over seeds and test images (2,000 resamples), Holm-corrected over all pairs"
ALPHA = 0.05


def seed_interval(values: Sequence[float], level: float = 0.95) -> dict:
    """Mean, std (ddof=1) and the t-interval of ``values`` (one per seed); std/interval are None for n = 1."""
    v = np.asarray([float(x) for x in values], dtype=float)
    n = len(v)
    if n == 0:
        raise ValueError("no values to summarise")
    mean = float(v.mean())
    if n == 1:
        return {"mean": mean, "std": None, "n": 1, "ci_low": None, "ci_high": None}
    std = float(v.std(ddof=1))
    half = float(sps.t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "n": n, "ci_low": mean - half, "ci_high": mean + half}


def _correctness(x) -> np.ndarray:
    a = np.asarray(x, dtype=np.int8)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2:
        raise ValueError(f"correctness must be (seeds, images), got shape {a.shape}")
    return a


def paired_bootstrap(correct_a, correct_b, n_resamples: int = 2000, seed: int = 0) -> dict:
    """Two-sided paired bootstrap of accuracy(A) - accuracy(B); inputs are 0/1 arrays (seeds, images)."""
    a, b = _correctness(correct_a), _correctness(correct_b)
    if a.shape != b.shape:
        raise ValueError(f"paired comparison needs the same seeds and images: {a.shape} vs {b.shape}")
    d = (a - b).astype(np.int8)
    n_seeds, n_img = d.shape
    diff = float(d.mean())
    rng = np.random.default_rng(seed)
    boot = np.empty(n_resamples)
    # chunks keep memory at ~chunk * seeds * images bytes on paper-sized test sets
    chunk = max(1, 4_000_000 // max(1, n_seeds * n_img))
    for start in range(0, n_resamples, chunk):
        k = min(chunk, n_resamples - start)
        si = rng.integers(0, n_seeds, size=(k, n_seeds))
        ii = rng.integers(0, n_img, size=(k, n_img))
        boot[start:start + k] = d[si[:, :, None], ii[:, None, :]].mean(axis=(1, 2))
    extreme = int(np.sum(np.abs(boot - diff) >= abs(diff) - 1e-12))
    return {"diff": diff, "p": (1 + extreme) / (n_resamples + 1), "ci_low": float(np.quantile(boot, 0.025)),
            "ci_high": float(np.quantile(boot, 0.975)), "n_seeds": n_seeds, "n_images": n_img,
            "n_resamples": n_resamples}


def stratified_mcnemar(correct_a, correct_b) -> dict:
    """McNemar per seed, combined over seeds (normal approximation); p = 1 when no pair is discordant."""
    a, b = _correctness(correct_a), _correctness(correct_b)
    if a.shape != b.shape:
        raise ValueError(f"paired comparison needs the same seeds and images: {a.shape} vs {b.shape}")
    only_a = ((a == 1) & (b == 0)).sum(axis=1)
    only_b = ((a == 0) & (b == 1)).sum(axis=1)
    disc = int((only_a + only_b).sum())
    if disc == 0:
        return {"z": 0.0, "p": 1.0, "only_a": only_a.tolist(), "only_b": only_b.tolist()}
    z = float((only_a - only_b).sum() / math.sqrt(disc))
    return {"z": z, "p": float(2 * sps.norm.sf(abs(z))), "only_a": only_a.tolist(), "only_b": only_b.tolist()}


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values (monotone, capped at 1), in the input order."""
    p = np.asarray(pvalues, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adj = np.empty(m)
    running = 0.0
    for rank, idx in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[idx]))
        adj[idx] = running
    return adj.tolist()


def fmt_p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"= {p:.3f}" if p < 0.1 else f"= {p:.2f}"


def verdict(a: str, b: str, diff: float, p: float, alpha: float = ALPHA) -> str:
    if p >= alpha:
        return f"not distinguishable (p {fmt_p(p)})"
    hi, lo = (a, b) if diff > 0 else (b, a)
    return f"{hi} > {lo} (p {fmt_p(p)})"


def pairwise_table(correct: Mapping[str, np.ndarray], n_resamples: int = 2000, seed: int = 0,
                   alpha: float = ALPHA) -> list[dict]:
    """Every pair of methods (``correct[method]`` = 0/1 array (seeds, images), same order for all).

    Rows: a, b, accuracy difference in points, its bootstrap 95% interval, raw and Holm-adjusted p, the
    stratified McNemar p, and the verdict from the Holm-adjusted bootstrap p.
    """
    pairs = list(itertools.combinations(correct, 2))
    rows = []
    for a, b in pairs:
        bs = paired_bootstrap(correct[a], correct[b], n_resamples=n_resamples, seed=seed)
        mc = stratified_mcnemar(correct[a], correct[b])
        rows.append({"a": a, "b": b, "diff_points": 100 * bs["diff"], "diff_ci_low": 100 * bs["ci_low"],
                     "diff_ci_high": 100 * bs["ci_high"], "p_bootstrap": bs["p"], "p_mcnemar": mc["p"],
                     "n_seeds": bs["n_seeds"], "n_images": bs["n_images"]})
    for r, p_adj in zip(rows, holm([r["p_bootstrap"] for r in rows])):
        r["p_holm"] = p_adj
        r["verdict"] = verdict(r["a"], r["b"], r["diff_points"], p_adj, alpha)
    return rows


# ---------------------------------------------------------------------------------------------- predictions
def image_ids(dataset) -> list[str]:
    """A stable id per test item: the file name (the full path where names repeat), else the index."""
    records = getattr(dataset, "records", None)
    if records is None:
        return [str(i) for i in range(len(dataset))]
    names = [r.path.name for r in records]
    return names if len(set(names)) == len(names) else [str(r.path) for r in records]


def write_predictions(path: str | Path, per_dataset: dict) -> Path:
    """``{"image_ids", "labels", "runs": {method: {seed: [class, ...]}}}``, one list per line (small, diffable)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = len(per_dataset["image_ids"])
    for method, seeds in per_dataset["runs"].items():
        for seed, preds in seeds.items():
            if len(preds) != n:
                raise ValueError(f"{method} seed {seed}: {len(preds)} predictions for {n} images")
    c = {"separators": (",", ":")}
    lines = ["{", f' "image_ids": {json.dumps(per_dataset["image_ids"], **c)},',
             f' "labels": {json.dumps(per_dataset["labels"], **c)},', ' "runs": {']
    methods = list(per_dataset["runs"].items())
    for i, (method, seeds) in enumerate(methods):
        inner = ",\n".join(f'   {json.dumps(str(s))}: {json.dumps(v, **c)}' for s, v in seeds.items())
        lines.append(f"  {json.dumps(method)}: {{\n{inner}\n  }}{',' if i < len(methods) - 1 else ''}")
    lines += [" }", "}"]
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def load_correctness(path: str | Path) -> tuple[dict[str, np.ndarray], list[str]]:
    """``{method: 0/1 array (seeds, images)}`` over the seeds every method has (sorted), and those seeds."""
    data = json.loads(Path(path).read_text())
    labels = np.asarray(data["labels"])
    runs = data["runs"]
    common = sorted(set.intersection(*(set(s) for s in runs.values())), key=lambda x: (len(x), x)) if runs else []
    return {m: np.stack([np.asarray(runs[m][s]) == labels for s in common]).astype(np.int8) for m in runs}, common
