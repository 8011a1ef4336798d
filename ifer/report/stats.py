"""Statistics over seeds and test images: mean ± std with a 95% t-interval, and paired method comparisons.

* :func:`seed_interval`: mean, sample std (ddof=1) and the two-sided 95% Student-t interval over seeds,
  ``mean ± t_{0.975, n-1} · std / sqrt(n)``. With n = 1 there is no spread to estimate: std and the
  interval are ``None`` (tables print "n=1, no interval", never "± 0").
* :func:`paired_t_test`: two methods trained with the same seeds and scored on the same test images. The unit
  of replication is the training seed: ``d_s = accuracy_A(seed s) - accuracy_B(seed s)``, and
  ``t = mean(d) / (sd(d) / sqrt(n))`` with ``n - 1`` degrees of freedom, two-sided. The per-seed accuracies
  already carry the test-image sampling noise, and the pairing by seed and image removes what the two methods
  share, so the test is exact when the per-seed differences are normal -- at any seed count >= 2, whatever the
  seed spread. With n = 1 seed no test is possible (no spread of ``d`` to estimate): p is ``None`` and the
  verdict says so.
* Why not resample: a bootstrap over 3 seeds treats the 3 trained models as the population. In the null
  simulation below (:func:`simulate_pairs`) its type-I error at nominal 5% grew with the seed spread (0.3% at
  1.5 points of per-seed spread, 18% at 4.6), and McNemar -- which conditions on the trained models and tests
  whether these particular models differ, not the methods -- was 18-52%. Neither is used.
* :func:`detectable_difference`: the smallest true mean difference the paired test finds with 80% power,
  given the observed sd of the per-seed differences: the ``delta`` solving
  ``P(|T_{n-1}(ncp = delta · sqrt(n) / sd_d)| > t_{1 - level/2, n-1}) = 0.8`` (noncentral t; close to
  ``(t_{1-level/2, n-1} + t_{0.8, n-1}) · sd_d / sqrt(n)`` for many seeds, larger at 3). Tables use
  ``level = alpha / m``, the first (strictest) Holm step over the m pairs, so a difference that size is
  declared with >= 80% power even if it is the only real one. ``sd_d`` is itself estimated from n seeds, so
  the figure is a guide, not a guarantee.
* :func:`holm`: Holm's step-down correction of a family of p-values (all pairs of methods).
* :func:`simulate_pairs`: the null (or shifted) simulation that checks the calibration: per-image
  correctness of several methods x seeds x 560 images from a probit model with a shared per-image
  difficulty (the pairing) and an independent per-(method, seed) accuracy shift of sd ``spread`` points.
  ``tests/test_stats_calibration.py`` runs it at 3 seeds for spreads 0-5 points and fails when the type-I
  error exceeds 5% beyond Monte-Carlo error (bar 6.5%). Measured (4 methods, 6 pairs, 2,000 replications per
  spread, ``seed=0``), type-I error per pair / Holm family-wise error, at per-seed spreads of
  0, 1, 1.5, 2.1, 2.9, 3.3, 4.6, 5 points: 4.7/4.3, 4.7/5.1, 5.0/5.1, 4.9/4.4, 5.0/4.7, 5.3/4.1, 5.1/4.9,
  5.2/5.1% (Monte-Carlo sd ~0.3 / 0.5 points). At the reported detectable difference the simulated power is
  78-81% (spreads 0, 2.9, 5).
* :func:`write_predictions` / :func:`load_correctness`: the per-image predictions ``eval_fer`` keeps
  (``results/<profile>/predictions/<dataset>.json``: image ids, labels, predicted class per method and seed),
  and the 0/1 correctness arrays the paired tests read from them.
* :func:`pairwise_table`: every pair of methods on one dataset, Holm-adjusted, with a verdict string
  ``"A > B (p = 0.003)"`` or ``"not distinguishable (p = 0.41)"`` at ``alpha`` = 0.05, and the detectable
  difference of each pair.

    python -c "from ifer.report.stats import seed_interval; print(seed_interval([0.35, 0.36, 0.38]))"
    python -c "from ifer.report.stats import simulate_pairs; print(simulate_pairs(4.6))"
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
TEST_METHOD = ("seed-level paired t test (per-seed accuracy differences, same seeds and test images, "
               "n_seeds - 1 dof), Holm-corrected over all pairs")
DETECTABLE_METHOD = ("smallest true difference found with 80% power by the paired t test at the first Holm step "
                     "(two-sided alpha / pairs), at the observed sd of the per-seed differences (noncentral t)")
ALPHA = 0.05
POWER = 0.8
NO_TEST = "no test: 1 seed (a paired test needs >= 2 seeds)"


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


def per_seed_accuracy(correct) -> np.ndarray:
    """0/1 correctness (seeds, images) -> accuracy per seed."""
    return _correctness(correct).mean(axis=1)


def two_sided_power(ncp: float, crit: float, dof: float) -> float:
    """P(|T| > crit) for T noncentral t with ``dof`` and noncentrality ``ncp``."""
    lower = sps.nct.sf(crit, dof, -abs(ncp))  # scipy returns nan far in the tail: that mass is 0
    return float(sps.nct.sf(crit, dof, abs(ncp)) + (0.0 if math.isnan(lower) else lower))


def detectable_shift(se: float, dof: float, crit: float, power: float = POWER) -> float:
    """The true shift ``delta`` that a test rejecting when ``|estimate| / se_hat > crit`` (se_hat with ``dof``)
    finds with probability ``power``: ``delta = ncp · se`` with ``two_sided_power(ncp, crit, dof) = power``."""
    if se == 0:
        return 0.0
    lo, hi = 0.0, max(1.0, crit)
    while two_sided_power(hi, crit, dof) < power:
        lo, hi = hi, 2 * hi
    for _ in range(100):  # bisection: power is monotone in ncp
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if two_sided_power(mid, crit, dof) < power else (lo, mid)
    return hi * se


def detectable_difference(sd_diff: float, n: int, level: float = ALPHA, power: float = POWER) -> float | None:
    """Smallest true mean difference the paired t test (two-sided ``level``) finds with ``power``, given the sd of
    the per-seed differences; None for n < 2 (no test)."""
    if n < 2:
        return None
    return detectable_shift(sd_diff / math.sqrt(n), n - 1, float(sps.t.ppf(1 - level / 2, n - 1)), power)


def paired_t_test(acc_a: Sequence[float], acc_b: Sequence[float], level: float = 0.95) -> dict:
    """Two-sided paired t test of per-seed values (same seeds, in the same order): diff = mean(a - b).

    Returns diff, sd_diff, the ``level`` t-interval of the mean difference, t, df, p and n. n = 1: sd_diff, the
    interval, t and p are None (no test possible). Zero spread of the differences: p = 1 when they are all 0,
    else 0 (the limit of the t test).
    """
    a, b = np.asarray(acc_a, dtype=float), np.asarray(acc_b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired comparison needs the same seeds and images: {a.shape} vs {b.shape}")
    d = a - b
    n = len(d)
    if n == 0:
        raise ValueError("no seeds to compare")
    diff = float(d.mean())
    out = {"diff": diff, "n": n, "df": n - 1, "sd_diff": None, "ci_low": None, "ci_high": None, "t": None, "p": None}
    if n == 1:
        return out
    t, p = paired_t_statistic(d)
    sd = float(d.std(ddof=1))
    half = float(sps.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return {**out, "sd_diff": sd, "ci_low": diff - half, "ci_high": diff + half, "t": float(t), "p": float(p)}


def paired_t_statistic(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """t and two-sided p of the paired t test over the last axis of the per-seed differences ``d`` (>= 2 seeds),
    vectorised: the one computation :func:`paired_t_test` and :func:`simulate_pairs` share."""
    d = np.asarray(d, dtype=float)
    n = d.shape[-1]
    mean, se = d.mean(axis=-1), d.std(axis=-1, ddof=1) / math.sqrt(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se > 0, mean / se, np.where(mean == 0, 0.0, np.copysign(np.inf, mean)))
    return t, 2 * sps.t.sf(np.abs(t), n - 1)


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm step-down adjusted p-values (monotone, capped at 1), in the input order; ``None`` (no test) stays
    None and does not count in the family."""
    idx = [i for i, p in enumerate(pvalues) if p is not None]
    p = np.asarray([pvalues[i] for i in idx], dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adj: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, k in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[k]))
        adj[idx[k]] = running
    return adj


def fmt_p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"= {p:.3f}" if p < 0.1 else f"= {p:.2f}"


def verdict(a: str, b: str, diff: float, p: float | None, alpha: float = ALPHA) -> str:
    if p is None:
        return NO_TEST
    if p >= alpha:
        return f"not distinguishable (p {fmt_p(p)})"
    hi, lo = (a, b) if diff > 0 else (b, a)
    return f"{hi} > {lo} (p {fmt_p(p)})"


def _points(x: float | None) -> float | None:
    return None if x is None else 100 * x


def pairwise_table(correct: Mapping[str, np.ndarray], alpha: float = ALPHA, power: float = POWER,
                   seed: int | None = None) -> list[dict]:
    """Every pair of methods (``correct[method]`` = 0/1 array (seeds, images), same seeds and order for all).

    ``seed`` is accepted for callers written for the old bootstrap and ignored: the t test draws nothing.

    Rows: a, b, mean per-seed accuracy difference in points with its 95% t-interval, the sd of the per-seed
    differences, t, df, raw and Holm-adjusted p, ``mde_points`` (:func:`detectable_difference` at the first Holm
    step, ``alpha / pairs``), ``significant`` and the verdict from the Holm-adjusted p.
    """
    pairs = list(itertools.combinations(correct, 2))
    rows = []
    for a, b in pairs:
        ca, cb = _correctness(correct[a]), _correctness(correct[b])
        if ca.shape != cb.shape:
            raise ValueError(f"paired comparison needs the same seeds and images: {ca.shape} vs {cb.shape}")
        r = paired_t_test(per_seed_accuracy(ca), per_seed_accuracy(cb))
        rows.append({"a": a, "b": b, "diff_points": 100 * r["diff"], "diff_ci_low": _points(r["ci_low"]),
                     "diff_ci_high": _points(r["ci_high"]), "sd_diff_points": _points(r["sd_diff"]), "t": r["t"],
                     "df": r["df"], "p": r["p"], "n_seeds": r["n"], "n_images": ca.shape[1]})
    m = sum(r["p"] is not None for r in rows)
    for r, p_adj in zip(rows, holm([r["p"] for r in rows])):
        r["p_holm"] = p_adj
        r["mde_points"] = (None if p_adj is None else
                           detectable_difference(r["sd_diff_points"], r["n_seeds"], alpha / m, power))
        r["significant"] = p_adj is not None and p_adj < alpha
        r["verdict"] = verdict(r["a"], r["b"], r["diff_points"], p_adj, alpha)
    return rows


# ---------------------------------------------------------------------------------------------- calibration
def simulate_pairs(spread_points: float, shift_points: float = 0.0, n_seeds: int = 3, n_images: int = 560,
                   n_methods: int = 4, accuracy: float = 0.35, image_corr: float = 0.5, reps: int = 2000,
                   alpha: float = ALPHA, seed: int = 0) -> dict:
    """Rejection rates of the paired t test on simulated FER runs (see the module docstring).

    Per replication: a per-image latent difficulty ``u_i ~ N(0, 1)`` shared by every method and seed; method m,
    seed s has accuracy ``accuracy + spread · z_ms`` (``z_ms ~ N(0, 1)``, independent; method 0 is shifted by
    ``shift_points``), and image i is right when ``sqrt(c) u_i + sqrt(1 - c) e_msi < Phi^-1(accuracy_ms)``
    (``c = image_corr``), so its expected accuracy is exactly ``accuracy_ms``. Returns ``rate``: the rejection
    rate of the unadjusted test at ``alpha`` over all pairs and replications (the type-I error when nothing is
    shifted; the power of pairs with method 0 otherwise, in ``rate_shifted``), ``fwer``: how often Holm over
    all pairs declares any difference among methods that are all equal (only without a shift), and
    ``mean_var_diff``: the mean sample variance of the per-seed differences (an unbiased estimate of their
    variance), all seeded by ``seed``.
    """
    rng = np.random.default_rng(seed)
    pairs = list(itertools.combinations(range(n_methods), 2))
    reject = np.zeros(len(pairs))
    any_holm = 0
    var_sum = 0.0
    chunk = max(1, 2_000_000 // (n_methods * n_seeds * n_images))
    done = 0
    while done < reps:
        k = min(chunk, reps - done)
        done += k
        acc = accuracy + spread_points / 100 * rng.standard_normal((k, n_methods, n_seeds))
        acc[:, 0] += shift_points / 100
        thr = sps.norm.ppf(np.clip(acc, 1e-6, 1 - 1e-6))
        u = rng.standard_normal((k, 1, 1, n_images))
        e = rng.standard_normal((k, n_methods, n_seeds, n_images))
        correct = (math.sqrt(image_corr) * u + math.sqrt(1 - image_corr) * e) < thr[..., None]
        seed_acc = correct.mean(axis=3)  # (k, methods, seeds)
        pvals = np.empty((k, len(pairs)))
        for j, (a, b) in enumerate(pairs):
            d = seed_acc[:, a] - seed_acc[:, b]
            var_sum += float(d.var(axis=1, ddof=1).sum())
            _, pvals[:, j] = paired_t_statistic(d)
            reject[j] += int((pvals[:, j] < alpha).sum())
        if shift_points == 0:
            any_holm += sum(min(x for x in holm(list(row)) if x is not None) < alpha for row in pvals)
    rates = reject / reps
    shifted = [j for j, (a, _) in enumerate(pairs) if a == 0]
    return {"spread_points": spread_points, "shift_points": shift_points, "n_seeds": n_seeds, "reps": reps,
            "rate": float(rates.mean()), "rate_shifted": float(rates[shifted].mean()),
            "fwer": any_holm / reps if shift_points == 0 else None,
            "mean_var_diff": var_sum / (reps * len(pairs))}


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
