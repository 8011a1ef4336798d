"""The paper reference file: a citation per value, empty values say why, no duplicates."""
import pandas as pd

from ifer.report.reference import load_reference
from ifer.report.tables import compare, summarise


def test_reference_file_is_well_formed():
    df = load_reference()
    assert (df.citation.str.len() > 0).all()
    unknown = df[df.value.isna()]
    assert (unknown.why_empty.str.len() > 10).all()
    # IFER's own numbers are unknown offline and must stay empty rather than invented
    assert df[(df.method == "IFER")].value.isna().all()


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
