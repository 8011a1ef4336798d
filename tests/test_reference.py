"""The paper reference file and the paper-level check: names the pipeline writes, a check that can fail."""
import pandas as pd
import pytest

from ifer.core.config import load_config
from ifer.report.reference import check, check_summary, load_reference, pipeline_names, unmatched_names
from ifer.report.tables import PERCENT_METRICS, REFERENCE_NAMES, compare, summarise

FIXTURE = """
entries:
  - {method: ASIT, dataset: celebahq, metric: mse_256_pm1, value: 0.034, citation: "fixture"}
  - {method: ASIT, dataset: celebahq, metric: ssim_torchmetrics_gauss11_rgb01_dr1, value: 0.61, citation: "fixture"}
  - {method: IFER, dataset: rafdb, metric: accuracy, value: 88.0, citation: "fixture"}
  - {method: IFER, dataset: affectnet7, metric: accuracy, value: null, citation: "fixture", why_empty: "not published"}
"""
TOL = {"mse_256_pm1": 0.005, "ssim_torchmetrics_gauss11_rgb01_dr1": 0.02, "accuracy": 1.0}


def test_reference_file_is_well_formed():
    df = load_reference()
    assert (df.citation.str.len() > 0).all()
    unknown = df[df.value.isna()]
    assert (unknown.why_empty.str.len() > 10).all()
    # IFER's own numbers are unknown offline and must stay empty rather than invented
    assert df[(df.method == "IFER")].value.isna().all()


def test_reference_and_tolerance_names_are_the_pipeline_names():
    """A reference row or tolerance keyed `mse`/`affectnet` could never meet a reproduced row: no such names."""
    tolerances = load_config("paper").report.verdict_tolerance.to_dict()
    assert unmatched_names(load_reference(), tolerances) == []
    names = pipeline_names()
    assert {"mse_256_pm1", "ssim_torchmetrics_gauss11_rgb01_dr1", "accuracy"} <= names["metric"]
    assert "affectnet7" in names["dataset"] and "affectnet" not in names["dataset"]
    bad = pd.DataFrame([{"method": "ASIT", "dataset": "affectnet", "metric": "mse"}])
    assert unmatched_names(bad, ["ssim"]) == ["reference metric 'mse'", "reference dataset 'affectnet'",
                                              "report.verdict_tolerance key 'ssim'"]
    # every published value can be checked: it has a tolerance under its own metric name
    known = load_reference().dropna(subset=["value"])
    assert set(known.metric) <= set(tolerances)


@pytest.mark.parametrize(("metric", "right", "wrong"), [
    ("mse_256_pm1", 0.038, 0.040),                          # tolerance 0.005 on 0.034
    ("ssim_torchmetrics_gauss11_rgb01_dr1", 0.595, 0.585),  # tolerance 0.02 on 0.61
])
def test_check_fails_on_a_wrong_value_and_passes_a_right_one(metric, right, wrong):
    ref = load_reference(FIXTURE)
    ok = check(ref, "ASIT", "celebahq", metric, right, TOL)
    bad = check(ref, "ASIT", "celebahq", metric, wrong, TOL)
    assert ok.status == "pass" and ok.tolerance == TOL[metric] and ok.paper is not None
    assert bad.status == "fail" and "> tolerance" in bad.line()


def test_check_summary_uses_pipeline_names_and_scale():
    """Pipeline keys (``ifer``, fractions) are mapped to the reference's names and percent."""
    summary = summarise([{"method": "ifer", "dataset": "rafdb", "metric": "accuracy", "seed": s, "value": v}
                         for s, v in [(0, 0.875), (1, 0.879)]]
                        + [{"method": "ifer", "dataset": "sfew", "metric": "accuracy", "seed": 0, "value": 0.5},
                           {"method": "ifer", "dataset": "affectnet7", "metric": "accuracy", "seed": 0, "value": 0.6},
                           {"method": "asit", "dataset": "celebahq", "metric": "mse_256_pm1", "seed": 0, "value": 0.1}])
    by = {(c.dataset, c.metric): c for c in check_summary(summary, TOL, load_reference(FIXTURE),
                                                           names=REFERENCE_NAMES, percent=PERCENT_METRICS)}
    assert by[("rafdb", "accuracy")].status == "pass" and by[("rafdb", "accuracy")].reproduced == pytest.approx(87.7)
    assert by[("celebahq", "mse_256_pm1")].status == "fail"
    assert by[("sfew", "accuracy")].status == "unknown" and "no reference entry" in by[("sfew", "accuracy")].reason
    assert by[("affectnet7", "accuracy")].reason == "reference unknown: not published"
    # a metric without a tolerance is unknown, never a silent pass
    no_tol = check(load_reference(FIXTURE), "IFER", "rafdb", "accuracy", 88.0, {})
    assert no_tol.status == "unknown" and "no tolerance" in no_tol.reason


def test_compare_verdicts():
    summary = summarise([
        {"method": "POSTER++", "dataset": "rafdb", "metric": "accuracy", "seed": s, "value": v}
        for s, v in [(0, 0.920), (1, 0.924)]
    ] + [{"method": "ifer", "dataset": "synthfer", "metric": "accuracy", "seed": 0, "value": 0.8},
         {"method": "ifer", "dataset": "rafdb", "metric": "accuracy", "seed": 0, "value": 0.9}])
    table = compare(summary, {"accuracy": 1.0}).set_index(["method", "dataset"])
    row = table.loc[("POSTER++", "rafdb")]
    assert row.paper == 92.21 and abs(row.reproduced_mean - 92.2) < 1e-9 and row.verdict.startswith("reproduced")
    assert table.loc[("ifer", "synthfer")].verdict.startswith("no published value")
    assert table.loc[("ifer", "rafdb")].verdict.startswith("reference unknown")
    assert isinstance(table, pd.DataFrame)
