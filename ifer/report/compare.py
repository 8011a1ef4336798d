"""Do two runs agree? Per metric, within a stated statistical tolerance: ``ifer compare RESULTS_A RESULTS_B``.

    ifer compare results/tiny /tmp/fresh/results/tiny
    ifer compare git:HEAD:results/tiny results/tiny --z 3 --tolerance accuracy=0.01

Either side may be a results folder or ``git:REV:PATH`` (the committed copy of PATH at REV, extracted with
``git archive`` into a temporary folder), so CI can compare a fresh run with the committed files.

FER and probe metrics are keyed by protocol (kind ``fer/clean``, ``fer/released``, ``probe/clean``...); rows
written before protocols existed count as ``clean``.

The rule. For every (kind, method, dataset, metric) with per-seed values a_1..a_n in A (mean ā) and
b_1..b_m in B (mean b̄)::

    agree  <=>  |ā - b̄| <= max(floor, k · s · sqrt(1/n + 1/m))

* Why seed spread: on another CPU ISA or library build the kernels round differently, and a few epochs
  of training amplify those last-bit differences into a different model, statistically like another
  training seed. Two honest runs therefore differ like two independent sets of seeds, whose means have
  standard error ``s · sqrt(1/n + 1/m)`` with ``s`` the std over seeds.
* ``s``: with 3 seeds a method's own std (pooled over A and B: 4 degrees of freedom) is too uncertain to
  build a tight test on. So the seed variance is also pooled over all methods of the same (kind, dataset,
  metric) -- same data, same recipe scale -- and ``s = max(own pooled std, group pooled std)``: a method
  that really is noisier keeps its own, larger spread.
* ``k``: Student's t quantile at the two-sided level of ``z`` standard normal deviations (``z`` = 3 by
  default: 0.27%), with the group's degrees of freedom, because ``s`` is estimated (3 seeds x 4 methods on
  each side: 16 dof, k = 3.54). A benign rerun then crosses the line for about 0.3% of metrics, so a table
  of ~20 correlated metrics rarely raises a false alarm, while a shift of a few standard errors is flagged.
* ``floor``: the difference always accepted, ``max(abs floor of the metric, 1% of |ā|)`` (override with
  ``--tolerance METRIC=VALUE``): changes in the last digits (inversion MSE 0.09066 vs 0.09068) are not
  regressions, and with a single seed on both sides (no spread to estimate) the floor is all there is.
* A metric present on one side only is a disagreement: the two runs did not measure the same thing.

Exit status 0 when every metric agrees, 1 otherwise; one line per metric.
"""
from __future__ import annotations

import io
import json
import math
import subprocess
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ifer.report.tables import inversion_rows, row_protocol

DEFAULT_Z = 3.0
REL_FLOOR = 0.01
# Absolute floors, in the units stored in the metrics files (fractions for accuracies).
ABS_FLOORS = {"accuracy": 0.005, "mean_class_accuracy": 0.005, "macro_f1": 0.005, "identity_probe_accuracy": 0.01}


@dataclass
class MetricCheck:
    key: tuple[str, str, str, str]  # kind, method, dataset, metric
    a: list[float]
    b: list[float]
    tolerance: float | None = None
    se: float | None = None
    floor: float | None = None

    @property
    def diff(self) -> float | None:
        return None if not self.a or not self.b else float(np.mean(self.b) - np.mean(self.a))

    @property
    def agree(self) -> bool:
        return self.diff is not None and abs(self.diff) <= self.tolerance

    def line(self) -> str:
        kind, method, dataset, metric = self.key
        name = f"{kind} {method}/{dataset} {metric}"
        if not self.a or not self.b:
            return f"DISAGREE {name}: only in {'B' if not self.a else 'A'}"
        why = f"floor {self.floor:.3g}" if self.se is None or self.tolerance == self.floor else f"t x SE {self.se:.3g}"
        rel = "<=" if self.agree else ">"
        return (f"{'agree   ' if self.agree else 'DISAGREE'} {name}: A {_side(self.a)} B {_side(self.b)} "
                f"|diff| {abs(self.diff):.3g} {rel} tolerance {self.tolerance:.3g} ({why})")


def _side(v: list[float]) -> str:
    return f"{np.mean(v):.5g} (n={len(v)}{f', sd {np.std(v, ddof=1):.2g}' if len(v) > 1 else ''})"


def metric_values(results_dir: str | Path) -> dict[tuple[str, str, str, str], list[float]]:
    """Per (kind, method, dataset, metric): the per-seed values of one results folder."""
    res = Path(results_dir)
    fer_file, inv_file = res / "fer_metrics.json", res / "inversion_metrics.json"
    if not fer_file.is_file() and not inv_file.is_file():
        raise FileNotFoundError(f"{res} holds neither fer_metrics.json nor inversion_metrics.json")
    out: dict[tuple[str, str, str, str], list[float]] = {}

    def add(kind, r):
        if isinstance(r["value"], (int, float)) and not isinstance(r["value"], bool) and math.isfinite(r["value"]):
            out.setdefault((kind, r["method"], r["dataset"], r["metric"]), []).append(float(r["value"]))

    if fer_file.is_file():
        fer = json.loads(fer_file.read_text())
        for r in fer["rows"]:
            add(f"fer/{row_protocol(r)}", r)
        for run in fer["runs"]:
            if "identity_probe" in run:
                add(f"probe/{run.get('run_protocol') or 'clean'}", {"method": run["method"], "dataset": run["dataset"], "metric": "identity_probe_accuracy",
                              "value": run["identity_probe"]["identity_probe_accuracy"]})
    if inv_file.is_file():
        inv = json.loads(inv_file.read_text())
        for r in inversion_rows(inv, default_seed=0):
            add("inversion", r)
    return out


def _pooled(groups: list[list[float]]) -> tuple[float, int] | None:
    """Pooled std over several samples (weights n_i - 1) and its degrees of freedom; None without any."""
    dof = sum(len(v) - 1 for v in groups if len(v) > 1)
    if dof == 0:
        return None
    ss = sum(float(np.var(v, ddof=1)) * (len(v) - 1) for v in groups if len(v) > 1)
    return math.sqrt(ss / dof), dof


def check_metric(key, a: list[float], b: list[float], z: float = DEFAULT_Z,
                 floors: Mapping[str, float] | None = None, group: tuple[float, int] | None = None) -> MetricCheck:
    """One metric; ``group`` = (pooled std, dof) of the same metric over all methods (see the module docstring)."""
    from scipy import stats as sps

    c = MetricCheck(key, list(a), list(b))
    if not a or not b:
        return c
    floors = {**ABS_FLOORS, **(floors or {})}
    c.floor = max(floors.get(key[3], 0.0), REL_FLOOR * abs(float(np.mean(a))))
    own = _pooled([a, b])
    spread = max((x for x in (own, group) if x is not None), key=lambda x: x[0], default=None)
    if spread is None:
        c.tolerance = c.floor
        return c
    dof = max(d for _, d in (x for x in (own, group) if x is not None))
    k = float(sps.t.ppf(1 - sps.norm.sf(z), dof))
    c.se = spread[0] * math.sqrt(1 / len(a) + 1 / len(b))
    c.tolerance = max(c.floor, k * c.se)
    return c


def compare_results(a: str | Path, b: str | Path, z: float = DEFAULT_Z,
                    floors: Mapping[str, float] | None = None) -> list[MetricCheck]:
    va, vb = metric_values(a), metric_values(b)
    keys = list(va) + [k for k in vb if k not in va]
    groups: dict[tuple, list[list[float]]] = {}
    for k in keys:
        groups.setdefault((k[0], k[2], k[3]), []).extend([va.get(k, []), vb.get(k, [])])
    return [check_metric(k, va.get(k, []), vb.get(k, []), z, floors, _pooled(groups[(k[0], k[2], k[3])]))
            for k in keys]


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
    """The ``ifer compare`` verb: print one line per metric and a summary; 0 when all agree, else 1."""
    floors = parse_tolerances(tolerances)
    with tempfile.TemporaryDirectory(prefix="ifer-compare-") as tmp:
        checks = compare_results(resolve(a, tmp), resolve(b, tmp), z, floors)
    bad = [c for c in checks if not c.agree]
    for c in checks:
        out(c.line())
    out(f"{len(checks) - len(bad)} of {len(checks)} metrics agree (A = {a}, B = {b}; |diff| <= max(floor, "
        f"t-quantile at the {z:g}-sigma level x seed SE)); {'DISAGREEMENT' if bad else 'runs agree'}")
    return 1 if bad else 0
