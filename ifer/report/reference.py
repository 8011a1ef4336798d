"""The paper reference values (``reference.yaml``) and the one paper-level check that compares results with them.

Reference entries use the protocol-pinned metric and dataset names the pipeline writes (``mse_256_pm1``,
``ssim_torchmetrics_gauss11_rgb01_dr1``, ``affectnet7``, ...), so a reproduced row finds its paper value;
``report.verdict_tolerance`` is keyed by the same names. ``check`` gives each row ``pass``, ``fail`` or
``unknown`` (with the reason: no entry, value not published, or no tolerance)::

    python -c "from ifer.report.reference import load_reference; print(load_reference().head())"
    python -c "from ifer.report.reference import check, load_reference; \
print(check(load_reference(), 'DAN', 'rafdb', 'accuracy', 89.1, {'accuracy': 1.0}))"
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources

import pandas as pd
import yaml

REQUIRED = ("method", "dataset", "metric", "value", "citation")


def load_reference(text: str | None = None) -> pd.DataFrame:
    """The packaged ``reference.yaml`` (or ``text`` in its format, for fixtures), validated."""
    if text is None:
        text = resources.files("ifer.report").joinpath("reference.yaml").read_text()
    rows = yaml.safe_load(text)["entries"]
    for i, r in enumerate(rows):
        missing = [k for k in REQUIRED if k not in r]
        if missing:
            raise ValueError(f"reference.yaml entry {i} lacks {missing}: {r}")
        if r["value"] is None and not r.get("why_empty"):
            raise ValueError(f"reference.yaml entry {i} has no value and no why_empty: {r}")
    df = pd.DataFrame(rows)
    if "why_empty" not in df:
        df["why_empty"] = None
    dup = df.duplicated(["method", "dataset", "metric"])
    if dup.any():
        raise ValueError(f"duplicate reference entries: {df[dup][['method', 'dataset', 'metric']].values.tolist()}")
    return df


def lookup(df: pd.DataFrame, method: str, dataset: str, metric: str) -> dict | None:
    hit = df[(df.method == method) & (df.dataset == dataset) & (df.metric == metric)]
    return None if hit.empty else hit.iloc[0].to_dict()


def _known(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


@dataclass(frozen=True)
class Check:
    """One paper-level comparison. ``status``: ``pass`` | ``fail`` | ``unknown`` (then ``reason`` says why)."""

    method: str
    dataset: str
    metric: str
    status: str
    reproduced: float
    paper: float | None = None
    tolerance: float | None = None
    reason: str = ""
    citation: str | None = None

    @property
    def delta(self) -> float | None:
        return None if self.paper is None else self.reproduced - self.paper

    def line(self) -> str:
        what = f"{self.method} {self.dataset} {self.metric}: reproduced {self.reproduced:.4g}"
        if self.status == "unknown":
            return f"{what}, paper unknown ({self.reason})"
        return (f"{what} vs paper {self.paper:.4g} (|delta| {abs(self.delta):.4g} "
                f"{'<=' if self.status == 'pass' else '>'} tolerance {self.tolerance:g}; {self.citation})")


def check(reference: pd.DataFrame, method: str, dataset: str, metric: str, reproduced: float,
          tolerances: Mapping[str, float]) -> Check:
    """Compare ``reproduced`` (on the reference's scale, e.g. percent for accuracy) with the paper value.

    ``method`` is the reference's name (``REFERENCE_NAMES`` maps the pipeline's keys). A metric without a
    tolerance is ``unknown``, never a silent pass.
    """
    base = {"method": method, "dataset": dataset, "metric": metric, "reproduced": float(reproduced)}
    ref = lookup(reference, method, dataset, metric)
    if ref is None:
        return Check(**base, status="unknown", reason=f"no reference entry (no published value for {dataset})")
    if not _known(ref["value"]):
        return Check(**base, status="unknown", reason=f"reference unknown: {ref.get('why_empty')}",
                     citation=ref["citation"])
    paper = float(ref["value"])
    tol = tolerances.get(metric)
    if tol is None:
        return Check(**base, status="unknown", paper=paper, citation=ref["citation"],
                     reason=f"no tolerance for {metric!r} in report.verdict_tolerance")
    status = "pass" if abs(float(reproduced) - paper) <= float(tol) else "fail"
    return Check(**base, status=status, paper=paper, tolerance=float(tol), citation=ref["citation"])


def check_summary(summary: pd.DataFrame, tolerances: Mapping[str, float], reference: pd.DataFrame | None = None, *,
                  names: Mapping[str, str], percent: Iterable[str]) -> list[Check]:
    """``check`` for every row of ``tables.summarise`` output: pipeline method keys are renamed by ``names``
    and the metrics in ``percent`` scaled from fractions to percent (pass ``tables.REFERENCE_NAMES`` and
    ``tables.PERCENT_METRICS``; tables imports this module, so it cannot import them back)."""
    reference = load_reference() if reference is None else reference
    percent = set(percent)
    return [check(reference, names.get(r["method"], r["method"]), r["dataset"], r["metric"],
                  r["mean"] * (100.0 if r["metric"] in percent else 1.0), tolerances)
            for r in summary.to_dict("records")]


def pipeline_names() -> dict[str, set[str]]:
    """Every metric and dataset name the pipeline can write: the only names a reference entry may use."""
    from ifer.core.config import load_config
    from ifer.data.build import FER_DATASETS
    from ifer.metrics.embedders import list_embedders
    from ifer.metrics.inversion import _FIXED_NAMES

    metrics = set(_FIXED_NAMES.values()) | {f"id_sim_{e}" for e in list_embedders()}
    metrics |= set(load_config("tiny").eval.fer_metrics)
    datasets = set(FER_DATASETS) | {"celebahq", "ffhq"}
    return {"metric": metrics, "dataset": datasets}


def unmatched_names(reference: pd.DataFrame, tolerance_keys: Iterable[str] = ()) -> list[str]:
    """Reference metrics/datasets and tolerance keys that the pipeline never writes (so could never be checked)."""
    names = pipeline_names()
    bad = [f"reference metric {m!r}" for m in sorted(set(reference.metric) - names["metric"])]
    bad += [f"reference dataset {d!r}" for d in sorted(set(reference.dataset) - names["dataset"])]
    bad += [f"report.verdict_tolerance key {k!r}" for k in sorted(set(tolerance_keys) - names["metric"])]
    return bad
