"""Paper-level checks: the latest ``results/<profile>/`` metrics against the paper's reference values.

Not timings, so they do not use the ``benchmark`` fixture and ``--benchmark-only`` skips them; run them
with the marker::

    pytest benchmark/ -m paper

Each (method, dataset, metric) with a published value must lie within ``report.verdict_tolerance`` of
the profile's resolved config. A check skips, saying why, when the profile is ``tiny`` (SynthFER has no
published values), when the reference value is unknown, or when the results are absent.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ifer.report.reference import load_reference, lookup
from ifer.report.tables import PERCENT_METRICS, REFERENCE_NAMES, summarise

pytestmark = pytest.mark.paper

RESULTS = Path("results")
PROFILES = ("tiny", "paper")


def _tolerances(profile: str) -> dict[str, float]:
    """The run's own resolved config (``results/<profile>/config.yaml``) when present, else the packaged one."""
    import yaml

    from ifer.core.config import load_config

    saved = RESULTS / profile / "config.yaml"
    if saved.is_file():
        return dict(yaml.safe_load(saved.read_text())["report"]["verdict_tolerance"])
    return load_config(profile).report.verdict_tolerance.to_dict()


def _rows(profile: str, kind: str) -> list[dict]:
    """(method, dataset, metric, seed, value) rows of ``inversion_metrics.json`` or ``fer_metrics.json``."""
    path = RESULTS / profile / f"{kind}_metrics.json"
    if not path.is_file():
        pytest.skip(f"{path} is absent: run the pipeline for profile {profile!r} first")
    data = json.loads(path.read_text())
    if kind == "fer":
        return data["rows"]
    return [{"method": method, "dataset": data["dataset"], "metric": metric, "seed": 0, "value": value}
            for method, summary in data["methods"].items() for metric, value in summary.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)]


def _known(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


@pytest.mark.parametrize("kind", ["inversion", "fer"])
@pytest.mark.parametrize("profile", PROFILES)
def test_matches_paper(profile, kind):
    if profile == "tiny":
        pytest.skip("profile 'tiny' runs on SynthFER, which has no published values to compare with")
    rows = _rows(profile, kind)
    tolerances = _tolerances(profile)
    reference = load_reference()
    checked, unknown, failures = [], [], []
    for r in summarise(rows).to_dict("records"):
        ref = lookup(reference, REFERENCE_NAMES.get(r["method"], r["method"]), r["dataset"], r["metric"])
        if ref is None or not _known(ref["value"]):
            why = "no reference entry" if ref is None else ref.get("why_empty")
            unknown.append(f"{r['method']}/{r['dataset']}/{r['metric']} ({why})")
            continue
        scale = 100.0 if r["metric"] in PERCENT_METRICS else 1.0
        got, paper = r["mean"] * scale, float(ref["value"])
        tol = tolerances.get(r["metric"])
        if tol is None:
            unknown.append(f"{r['method']}/{r['dataset']}/{r['metric']} (no tolerance in report.verdict_tolerance)")
            continue
        checked.append(r["metric"])
        if abs(got - paper) > tol:
            failures.append(f"{r['method']} {r['dataset']} {r['metric']}: reproduced {got:.4g} vs paper {paper:.4g} "
                            f"(|delta| {abs(got - paper):.4g} > tolerance {tol:g}; {ref['citation']})")
    assert not failures, "\n".join(failures)
    if not checked:
        pytest.skip("reference value unknown for every reproduced metric: " + "; ".join(unknown))
