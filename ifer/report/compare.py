"""Do two runs agree? Per metric, by a rule that fits how the metric varies: ``ifer compare RESULTS_A RESULTS_B``.

    ifer compare results/tiny /tmp/fresh/results/tiny
    ifer compare git:HEAD:results/tiny results/tiny --z 3 --tolerance accuracy=0.01

Either side may be a results folder or ``git:REV:PATH`` (the committed copy of PATH at REV, extracted with
``git archive`` into a temporary folder), so CI can compare a fresh run with the committed files.

FER and probe metrics are keyed by protocol (kind ``fer/clean``, ``fer/released``, ``probe/clean``...); rows
written before protocols existed count as ``clean``. A metric, or a seed of a paired metric, present on one
side only is a disagreement: the two runs did not measure the same thing. Every line states the smallest shift
its check detects.

**Same kernel_key on both sides** (``hardware.kernel_key`` of ``provenance.json`` and of every stage record it
holds -- each training run's and each evaluation's -- stage by stage equal; see ``ifer.core.machine``): reruns are bit-identical, so every number must be identical --
every metric, seed by seed (rule ``exact``), and every number in ``fer_metrics.json``,
``inversion_metrics.json``, ``predictions/**/*.json`` and ``released/*.json`` (rule ``exact-file``; any
difference is listed). Detects any change. ``--tolerance`` does not apply.

**Different (or unrecorded) kernel_key**: another ISA or build rounds differently. Per metric:

* ``paired`` -- ASIT's inversion metrics (MSE, SSIM, PSNR, ...). Near-deterministic across ISAs: on an Intel
  Xeon (avx512_fp16, AMX) the tiny ASIT scored MSE 0.1025878 / 0.1649996 (seeds 0 / 1) against 0.1025822 /
  0.1649916 on an AMD EPYC (AVX-512, no AMX), relative moves of 5.5e-5 and 4.8e-5 (5th significant digit);
  SSIM moved 4e-6..6e-6 and PSNR 4e-6..1.8e-5 relative. So the check pairs the two runs seed by seed (same
  seeds, same test images) and requires ``|b_s - a_s| <= max(REL_PAIRED · |a_s|, override)`` on every seed,
  with ``REL_PAIRED = 1e-3``: ~20x the largest measured move. Detects a change of more than 0.1% on any seed (at the
  committed 2 ASIT seeds and MSE ~0.1: ~1e-4), e.g. MSE x1.5 or ASIT collapsing to the mean image. This rests
  on the tiny profile's measurement: a longer ASIT schedule that amplified rounding into a different model
  would need seed statistics instead (or ``--tolerance METRIC=VALUE``, an absolute per-seed tolerance).
* ``deterministic`` -- the mean-image baseline. It does not depend on training: the mean of the train images
  is elementwise float arithmetic (bit-identical on every ISA) saved as an 8-bit PNG, and only the metrics'
  float32 reductions (MSE's mean over 196,608 values, SSIM's convolution) round differently, ~1e-7..1e-6
  relative (measured between the two machines above: MSE and SSIM identical, PSNR 1.3e-10). Required: ``|b - a| <= REL_DETERMINISTIC · |a|`` with ``REL_DETERMINISTIC = 1e-5``; detects a
  change of 0.001% (e.g. MSE +1%).
* ``seeds`` -- FER accuracies (accuracy, mean class accuracy, macro F1) and the identity probe. A few epochs of
  training amplify last-bit differences into a different model, statistically like another training seed
  (tiny IFER: 38.9% / 26.1% on seeds 0 / 1 on the Xeon against 36.6% / 31.4% on the EPYC), so pairing by seed
  gains nothing and the two runs are compared as two independent sets of seeds, per-seed values a_1..a_n
  (mean ā) and b_1..b_m (mean b̄)::

      agree  <=>  |ā - b̄| <= max(floor, k · s · sqrt(1/n + 1/m))

  ``s``: with 3 seeds a method's own std (pooled over A and B: 4 degrees of freedom) is too uncertain to build a
  tight test on, so the seed variance is also pooled over all methods of the same (kind, dataset, metric) --
  same data, same recipe scale -- and ``s = max(own pooled std, group pooled std)``: a method that really is
  noisier keeps its own, larger spread. ``k``: Student's t quantile at the two-sided level of ``z`` standard
  normal deviations (``z`` = 3 by default: 0.27%, about 5% / 16 checks, so an honest rerun of the ~16 seed
  checks of a profile rarely raises a false alarm), with the group's degrees of freedom (3 seeds x 4 methods
  on each side: 16 dof, k = 3.54). ``floor``: ``max(abs floor of the metric, 1% of |ā|)`` (override with
  ``--tolerance METRIC=VALUE``); with a single seed on both sides (no spread) the floor is all there is, and
  an honest cross-kernel rerun will usually exceed it. Detects (80% power) a shift of
  ``detectable_shift(SE, dof, k)`` (noncentral t, ``ifer.report.stats``): about ``(k + 0.86) · SE``. At 3
  seeds a side and a seed sd of 2.9 points (pooled over the four methods, EPYC vs Xeon): SE 2.4 points,
  tolerance 8.4, detectable 10.6; IFER (pooled sd 5.2): tolerance 14.9, detectable 18.8. A 5-point FER drop is
  caught across kernels only when the seed sd is under ~1.4 points: with the seed spreads of the tiny
  profile the data do not allow it, which is why the same-kernel comparison is exact.

**The analyses** (``analysis_metrics.json``, ``ifer analyze-fer``): on the same kernel_key the whole file is
compared exactly (``exact-file``) except the wall-clock timings (``cost/<method>/speed``), which no rerun repeats.
Across kernels, per run: ECE, mean corrupted accuracy, relative robustness and transfer accuracy to each other
dataset, and each factor probe's accuracy, by the ``seeds`` rule above (kind ``analysis/<protocol>``; floors in
:data:`ABS_FLOORS`), with ``z`` Bonferroni-corrected over the analysis family (:func:`analysis_z`: ~40 checks in
tiny, so 3.27 sigma instead of 3) -- these numbers move with the trained models as the accuracies do, and
without the correction the family would add ~10% of false alarms to an honest cross-kernel rerun; it still
detects a collapse (a probe at chance, transfer broken, ECE doubled). Parameter and MAC counts (kind ``cost``)
must be identical on any kernel (rule ``counts``: arithmetic on shapes). Accuracy per factor bin is left to the same-kernel file check.

Exit status 0 when every check agrees, 1 otherwise; one line per check, then a summary.
"""
from __future__ import annotations

import io
import json
import math
import subprocess
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ifer.report.analysis import per_seed_values
from ifer.report.stats import detectable_shift
from ifer.report.tables import inversion_rows, row_protocol

DEFAULT_Z = 3.0
REL_FLOOR = 0.01
# Absolute floors of the seed rule, in the units stored in the metrics files (fractions for accuracies).
ABS_FLOORS = {"accuracy": 0.005, "mean_class_accuracy": 0.005, "macro_f1": 0.005, "identity_probe_accuracy": 0.01,
              # analysis_metrics.json (issue 21); by prefix for the per-target / per-factor names
              "ece": 0.01, "mean_corrupted_accuracy": 0.005, "relative_robustness": 0.01, "transfer": 0.005,
              "subset": 0.005, "probe": 0.01}
# The analysis family (ECE, corruptions, transfer, factor probes: ~40 seed checks in tiny, correlated with the
# accuracies) is Bonferroni-corrected to the family-wise false-alarm level of the ~16 accuracy checks at ``z``, so
# adding it does not triple the chance that an honest cross-kernel rerun fails CI.
ANALYSIS_REFERENCE_FAMILY = 16
REL_PAIRED = 1e-3          # ASIT inversion metrics across kernels, per seed (measured move: 5.5e-5)
REL_DETERMINISTIC = 1e-5   # the mean-image baseline across kernels (float32 reduction rounding: ~1e-6)
DETERMINISTIC_METHODS = frozenset({"mean_image_baseline"})
EXACT_FILES = ("fer_metrics.json", "inversion_metrics.json", "analysis_metrics.json", "predictions/**/*.json",
               "released/*.json")
# wall-clock timings (analysis_metrics.json: cost/<method>/speed/...) differ on every run: never compared
UNTIMED = "/speed/"

Values = dict[str, float]  # seed -> value


def rule_for(key: tuple[str, str, str, str], same_kernel: bool) -> str:
    """``exact`` on the same kernel_key; else ``deterministic`` (mean-image baseline), ``paired`` (other inversion
    metrics: ASIT) or ``seeds`` (FER and probe)."""
    if same_kernel:
        return "exact"
    if key[0] == "inversion":
        return "deterministic" if key[1] in DETERMINISTIC_METHODS else "paired"
    if key[0] == "cost":  # parameter and MAC counts: integer arithmetic on shapes, identical on every ISA
        return "counts"
    return "seeds"


def floor_for(metric: str, floors: Mapping[str, float]) -> float:
    """The absolute floor of ``metric``: its own entry, else that of its first word (``transfer_rafdb_accuracy`` ->
    ``transfer``, ``probe_pose_accuracy`` -> ``probe``); 0 for an unknown metric."""
    if metric in floors:
        return floors[metric]
    return floors.get(metric.split("_")[0], 0.0)


def _seed_order(s: str):
    return (0, int(s), s) if s.lstrip("-").isdigit() else (1, 0, s)


def _same(x: float, y: float) -> bool:
    return x == y or (math.isnan(x) and math.isnan(y))


@dataclass
class MetricCheck:
    key: tuple[str, str, str, str]  # kind, method, dataset, metric
    a: list[float]                  # per-seed values, in seed order (``seeds_a``)
    b: list[float]
    tolerance: float | None = None  # seeds: on |mean diff|; paired / deterministic: the smallest per-seed one
    se: float | None = None
    floor: float | None = None
    rule: str = "seeds"
    seeds_a: list[str] = field(default_factory=list)
    seeds_b: list[str] = field(default_factory=list)
    per_seed_tol: list[float] = field(default_factory=list)  # paired / deterministic / exact, per common seed
    detectable: float | None = None  # smallest shift this check detects (seeds: with 80% power)

    @property
    def diff(self) -> float | None:
        return None if not self.a or not self.b else float(np.mean(self.b) - np.mean(self.a))

    @property
    def paired_ok(self) -> bool:
        return self.rule == "seeds" or len(self.a) == len(self.b) and (
            self.rule in ("deterministic", "counts") or self.seeds_a == self.seeds_b)

    @property
    def worst(self) -> float | None:
        """Paired rules: the largest per-seed |b_s - a_s| (None where the seeds do not pair)."""
        if self.rule == "seeds" or not self.a or not self.b or not self.paired_ok:
            return None
        return max(abs(y - x) if not _same(x, y) else 0.0 for x, y in zip(self.a, self.b))

    @property
    def agree(self) -> bool:
        if not self.a or not self.b or not self.paired_ok:
            return False
        if self.rule == "seeds":
            return abs(self.diff) <= self.tolerance
        if self.rule in ("exact", "counts"):
            return all(_same(x, y) for x, y in zip(self.a, self.b))
        return all(_same(x, y) or abs(y - x) <= t for x, y, t in zip(self.a, self.b, self.per_seed_tol))

    def line(self) -> str:
        kind, method, dataset, metric = self.key
        name = f"{kind} {method}/{dataset} {metric}"
        head = f"{'agree   ' if self.agree else 'DISAGREE'} {name}"
        if not self.a or not self.b:
            return f"{head}: only in {'B' if not self.a else 'A'}"
        if not self.paired_ok:
            return f"{head} [{self.rule}]: seeds differ (A {self.seeds_a}, B {self.seeds_b}); a paired check needs the same seeds"
        if self.rule == "seeds":
            why = f"floor {self.floor:.3g}" if self.se is None or self.tolerance == self.floor else f"t x SE {self.se:.3g}"
            rel = "<=" if self.agree else ">"
            return (f"{head} [seeds]: A {_side(self.a)} B {_side(self.b)} |diff| {abs(self.diff):.3g} {rel} tolerance "
                    f"{self.tolerance:.3g} ({why}); detects shifts >= {self.detectable:.3g} "
                    f"({'80% power' if self.se is not None else 'no seed spread: floor only'})")
        if self.rule == "exact":
            changed = [f"s{s} A {x!r} B {y!r}" for s, x, y in zip(self.seeds_a, self.a, self.b) if not _same(x, y)]
            return (f"{head} [exact, same kernel_key]: " + (f"{len(changed)} seed(s) differ: {'; '.join(changed)}"
                    if changed else f"identical on {len(self.a)} seed(s)") + "; detects any change")
        if self.rule == "counts":
            return (f"{head} [counts, any kernel]: A {self.a[0]:.10g} B {self.b[0]:.10g}; "
                    f"{'identical' if self.agree else 'differ'}; detects any change")
        rel = REL_PAIRED if self.rule == "paired" else REL_DETERMINISTIC
        per_seed = ", ".join(f"s{s} {x:.7g}->{y:.7g}" for s, x, y in zip(self.seeds_a, self.a, self.b))
        return (f"{head} [{self.rule}, per seed]: {per_seed}; max |diff| {self.worst:.3g} "
                f"{'<=' if self.agree else '>'} tolerance {self.tolerance:.3g} ({rel:g} x |A|); detects shifts "
                f">= {self.detectable:.3g} on any seed")


@dataclass
class FileCheck:
    """Same kernel_key: every number of one results file must be identical."""
    key: tuple[str, str, str, str]  # ("file", relative path, "", "numbers")
    n_numbers: int
    differences: list[str]

    @property
    def agree(self) -> bool:
        return not self.differences

    def line(self) -> str:
        head = f"{'agree   ' if self.agree else 'DISAGREE'} file {self.key[1]} [exact-file, same kernel_key]"
        if self.agree:
            return f"{head}: all {self.n_numbers} numbers identical; detects any change"
        shown = "; ".join(self.differences[:5])
        more = f" (+{len(self.differences) - 5} more)" if len(self.differences) > 5 else ""
        return f"{head}: {len(self.differences)} of {self.n_numbers} numbers differ: {shown}{more}"


def _side(v: list[float]) -> str:
    return f"{np.mean(v):.5g} (n={len(v)}{f', sd {np.std(v, ddof=1):.2g}' if len(v) > 1 else ''})"


def _finite(v) -> bool:
    """A finite int or float (not a bool, None, a string or NaN): a number the checks can compare."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def metric_values(results_dir: str | Path) -> dict[tuple[str, str, str, str], Values]:
    """Per (kind, method, dataset, metric): ``{seed: value}`` of one results folder."""
    res = Path(results_dir)
    fer_file, inv_file = res / "fer_metrics.json", res / "inversion_metrics.json"
    ana_file = res / "analysis_metrics.json"
    if not fer_file.is_file() and not inv_file.is_file():
        raise FileNotFoundError(f"{res} holds neither fer_metrics.json nor inversion_metrics.json")
    out: dict[tuple[str, str, str, str], Values] = {}

    def add(kind, r):
        v = r["value"]
        if _finite(v):
            per_seed = out.setdefault((kind, r["method"], r["dataset"], r["metric"]), {})
            seed = str(r.get("seed", len(per_seed)))
            while seed in per_seed:  # a repeated seed keeps both values
                seed += "'"
            per_seed[seed] = float(v)

    if fer_file.is_file():
        fer = json.loads(fer_file.read_text())
        for r in fer["rows"]:
            add(f"fer/{row_protocol(r)}", r)
        for run in fer["runs"]:
            if "identity_probe" in run:
                add(f"probe/{run.get('run_protocol') or 'clean'}",
                    {"method": run["method"], "dataset": run["dataset"], "metric": "identity_probe_accuracy",
                     "seed": run.get("seed"), "value": run["identity_probe"]["identity_probe_accuracy"]})
    if inv_file.is_file():
        inv = json.loads(inv_file.read_text())
        for r in inversion_rows(inv, default_seed=0):
            add("inversion", r)
    if ana_file.is_file():
        out.update(analysis_values(json.loads(ana_file.read_text())))
    return out


def analysis_values(ana: dict) -> dict[tuple[str, str, str, str], Values]:
    """The per-seed numbers of ``analysis_metrics.json`` (``ifer analyze-fer``) that ``ifer compare`` checks, as
    :func:`ifer.report.analysis.per_seed_values` extracts them for ``summary.json`` too (one extractor, the same
    names): kind ``analysis/<protocol>``: ``ece``, ``mean_corrupted_accuracy``, ``relative_robustness``,
    ``transfer_<target>_accuracy``, ``subset_<name>_accuracy`` per run and ``probe_<factor>_accuracy`` per factor
    probe (seed rule across kernels); kind ``cost``: ``params``, ``gmacs`` per method (rule ``counts``). Accuracy
    per factor bin is covered by the exact file check on the same kernel only: its 3 bins x 4 factors would swamp
    the seed family."""
    out: dict[tuple[str, str, str, str], Values] = {}
    for row in per_seed_values(ana):
        if not _finite(row["value"]):
            continue
        key = (("cost", row["method"], "", row["metric"]) if row["protocol"] is None
               else (f"analysis/{row['protocol']}", row["method"], row["dataset"], row["metric"]))
        out.setdefault(key, {})[str(row["seed"])] = float(row["value"])
    return out


def kernel_keys(results_dir: str | Path) -> dict[str, str]:
    """``{"report": kernel_key of provenance.json, <stage>: kernel_key of each stage record}``; {} if none.

    The report's ``provenance.json`` holds every stage's record: the training runs' (``train_asit``,
    ``invert``, ``train_fer``, ``finetune_asit``: ``runs/<profile>/**/provenance.json``) and the evaluations'.
    Records of one stage with different keys (runs trained on two machines or thread counts, or one run
    resumed on another) join as ``"key1 / key2"``, so the two sides are equal only when every stage ran on
    the same kernel.
    """
    res = Path(results_dir)
    records: list[tuple[str, dict]] = []
    prov_file = res / "provenance.json"
    if prov_file.is_file():
        prov = json.loads(prov_file.read_text())
        records.append(("report", prov))
        records += [(str(r.get("stage")), r) for r in (prov.get("stages") or {}).values() if isinstance(r, dict)]
    for p in sorted(res.glob("provenance_*.json")):
        rec = json.loads(p.read_text())
        if isinstance(rec, dict) and "stage" in rec:
            records.append((str(rec["stage"]), rec))
    out: dict[str, str] = {}
    for name, rec in records:
        # a resumed training run lists every session's key (``kernel_keys_seen``, ifer.stages.record_session)
        keys = [k for k in rec.get("kernel_keys_seen") or [(rec.get("hardware") or {}).get("kernel_key")] if k]
        for key in keys:
            if name not in out:
                out[name] = key
            elif key not in out[name].split(" / "):
                out[name] = f"{out[name]} / {key}"
    return out


def analysis_z(z: float, n: int) -> float:
    """The two-sided level, in standard normal deviations, of each of ``n`` analysis checks: Bonferroni over the
    family so that it raises a false alarm no more often than :data:`ANALYSIS_REFERENCE_FAMILY` checks at ``z``
    (z = 3, 40 checks: 3.27 sigma)."""
    from scipy import stats as sps

    if n <= ANALYSIS_REFERENCE_FAMILY:
        return z
    return float(sps.norm.isf(sps.norm.sf(z) * ANALYSIS_REFERENCE_FAMILY / n))


def _pooled(groups: list[list[float]]) -> tuple[float, int] | None:
    """Pooled std over several samples (weights n_i - 1) and its degrees of freedom; None without any."""
    dof = sum(len(v) - 1 for v in groups if len(v) > 1)
    if dof == 0:
        return None
    ss = sum(float(np.var(v, ddof=1)) * (len(v) - 1) for v in groups if len(v) > 1)
    return math.sqrt(ss / dof), dof


def check_metric(key, a: list[float], b: list[float], z: float = DEFAULT_Z,
                 floors: Mapping[str, float] | None = None, group: tuple[float, int] | None = None) -> MetricCheck:
    """The ``seeds`` rule for one metric; ``group`` = (pooled std, dof) of the same metric over all methods."""
    from scipy import stats as sps

    c = MetricCheck(key, list(a), list(b))
    if not a or not b:
        return c
    floors = {**ABS_FLOORS, **(floors or {})}
    c.floor = max(floor_for(key[3], floors), REL_FLOOR * abs(float(np.mean(a))))
    own = _pooled([a, b])
    spread = max((x for x in (own, group) if x is not None), key=lambda x: x[0], default=None)
    if spread is None:
        c.tolerance = c.detectable = c.floor
        return c
    dof = max(d for _, d in (x for x in (own, group) if x is not None))
    k = float(sps.t.ppf(1 - sps.norm.sf(z), dof))
    c.se = spread[0] * math.sqrt(1 / len(a) + 1 / len(b))
    c.tolerance = max(c.floor, k * c.se)
    c.detectable = detectable_shift(c.se, dof, c.tolerance / c.se) if c.se > 0 else c.tolerance
    return c


def check_paired(key, a: Values, b: Values, rule: str, floors: Mapping[str, float] | None = None) -> MetricCheck:
    """``exact``, ``paired`` or ``deterministic`` for one metric: seed by seed (the deterministic baseline pairs
    by position: its seed label is only the first ASIT seed of its run)."""
    sa, sb = sorted(a, key=_seed_order), sorted(b, key=_seed_order)
    c = MetricCheck(key, [a[s] for s in sa], [b[s] for s in sb], rule=rule, seeds_a=sa, seeds_b=sb)
    if not a or not b:
        return c
    rel = {"exact": 0.0, "counts": 0.0, "paired": REL_PAIRED, "deterministic": REL_DETERMINISTIC}[rule]
    override = 0.0 if rule in ("exact", "counts") else (floors or {}).get(key[3], 0.0)
    c.per_seed_tol = [max(rel * abs(x), override) for x in c.a]
    c.tolerance = c.detectable = min(c.per_seed_tol)
    return c


def _numbers(obj, path: str = "") -> dict[str, float]:
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return {}
    if isinstance(obj, (int, float)):
        return {path: float(obj)}
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    out: dict[str, float] = {}
    for k, v in items:
        out.update(_numbers(v, f"{path}/{k}"))
    return out


def exact_file_checks(a: Path, b: Path) -> list[FileCheck]:
    """Every number of the results files (:data:`EXACT_FILES`) of ``a`` and ``b``, compared exactly."""
    names = sorted({p.relative_to(root).as_posix() for root in (a, b) for pattern in EXACT_FILES
                    for p in root.glob(pattern) if p.is_file()})
    checks = []
    for name in names:
        fa, fb = a / name, b / name
        if not fa.is_file() or not fb.is_file():
            checks.append(FileCheck(("file", name, "", "numbers"), 0, [f"only in {'A' if fa.is_file() else 'B'}"]))
            continue
        na, nb = ({p: v for p, v in _numbers(json.loads(f.read_text())).items() if UNTIMED not in p} for f in (fa, fb))
        diffs = [f"{p or '/'}: A {na[p]!r} B {nb[p]!r}" if p in na and p in nb else
                 f"{p}: only in {'A' if p in na else 'B'}"
                 for p in list(na) + [q for q in nb if q not in na]
                 if not (p in na and p in nb and _same(na[p], nb[p]))]
        checks.append(FileCheck(("file", name, "", "numbers"), len(set(na) | set(nb)), diffs))
    return checks


def compare_results(a: str | Path, b: str | Path, z: float = DEFAULT_Z, floors: Mapping[str, float] | None = None,
                    same_kernel: bool | None = None) -> list[MetricCheck | FileCheck]:
    """All checks of two results folders; ``same_kernel`` None: decided from their kernel keys."""
    if same_kernel is None:
        ka, kb = kernel_keys(a), kernel_keys(b)
        same_kernel = bool(ka) and ka == kb
    va, vb = metric_values(a), metric_values(b)
    keys = list(va) + [k for k in vb if k not in va]
    groups: dict[tuple, list[list[float]]] = {}
    for k in keys:
        if rule_for(k, same_kernel) == "seeds":
            groups.setdefault((k[0], k[2], k[3]), []).extend([list(va.get(k, {}).values()),
                                                              list(vb.get(k, {}).values())])
    n_analysis = sum(1 for k in keys if k[0].startswith("analysis/") and rule_for(k, same_kernel) == "seeds")
    z_analysis = analysis_z(z, n_analysis)
    checks: list[MetricCheck | FileCheck] = []
    for k in keys:
        rule = rule_for(k, same_kernel)
        if rule == "seeds":
            ea, eb = va.get(k, {}), vb.get(k, {})
            c = check_metric(k, [ea[s] for s in sorted(ea, key=_seed_order)],
                             [eb[s] for s in sorted(eb, key=_seed_order)],
                             z_analysis if k[0].startswith("analysis/") else z, floors,
                             _pooled(groups[(k[0], k[2], k[3])]))
            c.seeds_a, c.seeds_b = sorted(ea, key=_seed_order), sorted(eb, key=_seed_order)
        else:
            c = check_paired(k, va.get(k, {}), vb.get(k, {}), rule, floors)
        checks.append(c)
    if same_kernel:
        checks += exact_file_checks(Path(a), Path(b))
    return checks


def resolve(spec: str, workdir: str | Path) -> Path:
    """A folder, or ``git:REV:PATH`` extracted from the repository in the current directory into ``workdir``."""
    if not spec.startswith("git:"):
        return Path(spec)
    try:
        _, rev, path = spec.split(":", 2)
    except ValueError:
        raise FileNotFoundError(f"{spec}: expected git:REV:PATH, e.g. git:HEAD:results/tiny") from None
    proc = subprocess.run(["git", "archive", "--format=tar", rev, "--", path], capture_output=True)
    if proc.returncode != 0:
        msg = proc.stderr.decode(errors="replace").strip().splitlines()
        raise FileNotFoundError(f"{spec}: git archive failed: {msg[-1] if msg else 'unknown error'}")
    dest = Path(workdir) / rev.replace("/", "_")
    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
        # the "data" filter refuses absolute paths and links out of dest (Python >= 3.10.12 / 3.11.4)
        tar.extractall(dest, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    return dest / path


def parse_tolerances(items: list[str] | None) -> dict[str, float]:
    out = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        try:
            out[name] = float(value)
        except ValueError:
            raise ValueError(f"--tolerance {item!r}: expected METRIC=NUMBER, e.g. accuracy=0.01") from None
        if not sep or not name:
            raise ValueError(f"--tolerance {item!r}: expected METRIC=NUMBER, e.g. accuracy=0.01")
    return out


def run(a: str, b: str, z: float = DEFAULT_Z, tolerances: list[str] | None = None, out=print) -> int:
    """The ``ifer compare`` verb: print one line per check and a summary; 0 when all agree, else 1."""
    floors = parse_tolerances(tolerances)
    with tempfile.TemporaryDirectory(prefix="ifer-compare-") as tmp:
        ra, rb = resolve(a, tmp), resolve(b, tmp)
        ka, kb = kernel_keys(ra), kernel_keys(rb)
        same = bool(ka) and ka == kb
        checks = compare_results(ra, rb, z, floors, same_kernel=same)
    if same:
        out(f"kernel_key identical on both sides ({', '.join(sorted(ka))}): every number must be identical")
    else:
        why = "not recorded on " + " and ".join(n for n, k in (("A", ka), ("B", kb)) if not k) if not (ka and kb) \
            else "differs: " + "; ".join(f"{n}: A {ka.get(n)!r} B {kb.get(n)!r}" for n in sorted(set(ka) | set(kb))
                                         if ka.get(n) != kb.get(n))
        out(f"kernel_key {why}; rules: paired per seed (ASIT inversion, {REL_PAIRED:g} relative), deterministic "
            f"(mean-image baseline, {REL_DETERMINISTIC:g} relative), seed statistics (FER, probe; t at {z:g} sigma; "
            f"the analysis family Bonferroni-corrected, see ifer.report.compare.analysis_z)")
    bad = [c for c in checks if not c.agree]
    for c in checks:
        out(c.line())
    out(f"{len(checks) - len(bad)} of {len(checks)} checks agree (A = {a}, B = {b}; "
        f"{'exact: same kernel_key' if same else 'per-metric rules across kernels'}); "
        f"{'DISAGREEMENT' if bad else 'runs agree'}")
    return 1 if bad else 0
