"""Seed intervals and paired method comparisons on hand-computed and synthetic cases::

    .venv/bin/python -m pytest tests/test_stats.py -q
"""
import math

import numpy as np
import pytest

from ifer.report.stats import holm, paired_bootstrap, pairwise_table, seed_interval, stratified_mcnemar, verdict


def test_t_interval_matches_hand_computed_values():
    r = seed_interval([1.0, 2.0, 3.0])
    # t_{0.975, 2} = 4.302653 (printed tables); half-width = 4.302653 * 1 / sqrt(3)
    half = 4.302653 / math.sqrt(3)
    assert r["mean"] == 2.0 and r["std"] == 1.0 and r["n"] == 3
    assert r["ci_low"] == pytest.approx(2.0 - half, abs=1e-5) and r["ci_high"] == pytest.approx(2.0 + half, abs=1e-5)
    r2 = seed_interval([0.30, 0.34])  # t_{0.975, 1} = 12.7062
    assert r2["ci_high"] - r2["mean"] == pytest.approx(12.7062 * np.std([0.30, 0.34], ddof=1) / math.sqrt(2), rel=1e-4)


def test_single_seed_gives_no_interval_not_zero_spread():
    r = seed_interval([0.37])
    assert r == {"mean": 0.37, "std": None, "n": 1, "ci_low": None, "ci_high": None}


def test_identical_predictions_are_not_distinguishable_with_p_one():
    rng = np.random.default_rng(1)
    a = rng.random((3, 200)) < 0.4
    assert paired_bootstrap(a, a)["p"] == 1.0
    assert stratified_mcnemar(a, a)["p"] == 1.0
    # different images right, same number right per seed: discordant, yet no difference at all
    b = np.zeros((3, 200), dtype=bool)
    b[:, :100] = True
    c = ~b
    assert paired_bootstrap(b, c)["diff"] == 0.0 and paired_bootstrap(b, c)["p"] == 1.0
    assert stratified_mcnemar(b, c)["p"] == 1.0


def test_clearly_better_method_gets_small_p_and_correct_direction():
    rng = np.random.default_rng(0)
    good = rng.random((3, 560)) < 0.60
    bad = rng.random((3, 560)) < 0.35
    bs = paired_bootstrap(good, bad, n_resamples=2000, seed=0)
    assert bs["diff"] > 0.2 and bs["p"] == pytest.approx(1 / 2001) and bs["ci_low"] > 0.15
    assert stratified_mcnemar(good, bad)["p"] < 1e-10
    rows = pairwise_table({"good": good, "bad": bad, "same": good.copy()})
    by = {(r["a"], r["b"]): r for r in rows}
    assert by[("good", "bad")]["verdict"].startswith("good > bad (p ")
    assert by[("bad", "same")]["verdict"].startswith("same > bad")
    assert by[("good", "same")]["verdict"] == "not distinguishable (p = 1.00)"
    assert by[("good", "bad")]["p_holm"] == pytest.approx(3 / 2001)  # Holm over 3 pairs, smallest p x 3


def test_bootstrap_is_seeded_and_uses_seed_variance():
    rng = np.random.default_rng(3)
    a, b = rng.random((3, 300)) < 0.5, rng.random((3, 300)) < 0.45
    assert paired_bootstrap(a, b, seed=7) == paired_bootstrap(a, b, seed=7)
    # a method that wins on one seed and loses on the others by the same amount: seed spread widens the interval
    x = np.zeros((3, 300), dtype=bool)
    y = np.zeros((3, 300), dtype=bool)
    x[0, :150], y[1:, :100] = True, True
    wide = paired_bootstrap(x, y)
    assert wide["ci_high"] - wide["ci_low"] > 0.2


def test_mcnemar_hand_computed():
    a = np.array([[1] * 10 + [0] * 5])
    b = np.array([[0] * 10 + [0] * 5])
    r = stratified_mcnemar(a, b)  # b = 10, c = 0: z = 10 / sqrt(10)
    assert r["z"] == pytest.approx(math.sqrt(10)) and r["p"] == pytest.approx(0.0015654, rel=1e-4)


def test_holm_step_down():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_verdict_strings():
    assert verdict("ifer", "ke2nt", 1.2, 0.003) == "ifer > ke2nt (p = 0.003)"
    assert verdict("ifer", "ke2nt", -3.0, 0.0001) == "ke2nt > ifer (p < 0.001)"
    assert verdict("ifer", "ke2nt", 0.4, 0.41) == "not distinguishable (p = 0.41)"


def test_mismatched_pairing_is_an_error():
    with pytest.raises(ValueError, match="same seeds and images"):
        paired_bootstrap(np.ones((3, 10)), np.ones((2, 10)))


# ---------------------------------------------------------------------------------------------- tables
def _rows(values_by_method, metric="accuracy"):
    return [{"method": m, "dataset": "synthfer", "metric": metric, "seed": s, "value": v}
            for m, vals in values_by_method.items() for s, v in enumerate(vals)]


def test_tables_state_interval_method_and_never_print_zero_spread_for_one_seed():
    from ifer.report.tables import compare, summarise, to_markdown

    table = compare(summarise(_rows({"ifer": [0.35, 0.36, 0.38], "ke2nt": [0.355]})), {})
    md = to_markdown(table, "FER")
    assert "95% Student-t interval over seeds" in md and "ISA" in md
    ifer_line = next(line for line in md.splitlines() if line.startswith("| ifer "))
    # mean 36.33, std 1.53, t_{0.975,2} = 4.3027: half-width 3.79 points
    assert "36.33 ± 1.5 [32.54, 40.13] (n=3)" in ifer_line
    assert "35.5 (n=1, no interval)" in md and "± 0 " not in md and "± 0(" not in md


def test_per_class_significance_and_probe_tables(tmp_path):
    from ifer.report.tables import per_class_table, significance_table, write_per_class, write_probe, write_significance

    runs = [{"method": "ifer", "dataset": "synthfer", "test": {"per_class_accuracy": pc}}
            for pc in ([0.5, 0.2, None], [0.7, 0.4, None])]
    names = ["neutral", "happy", "sad"]
    write_per_class(per_class_table(runs, names), names, tmp_path, "pc", "Per class")
    md = (tmp_path / "pc.md").read_text()
    # runs without a protocol name (written before protocols existed) are the clean protocol
    assert ("| clean | ifer | synthfer | 2 | 60.0 ± 14.1 | 30.0 ± 14.1 | — | "
            "[plot](plots/confusion/clean/ifer_synthfer.png) |") in md
    rng = np.random.default_rng(0)
    rows = [{"dataset": "synthfer", **r} for r in pairwise_table({"a": rng.random((3, 100)) < 0.8,
                                                                   "b": rng.random((3, 100)) < 0.3})]
    write_significance(significance_table(rows), tmp_path, "sig", "Pairs")
    assert "| clean | synthfer | a | b | +" in (tmp_path / "sig.md").read_text() and "a > b (p < 0.001)" in (tmp_path / "sig.md").read_text()
    write_probe([{"method": "ifer", "dataset": "synthfer", "seed": s, "identity_probe_accuracy": v, "identity_chance": 0.05}
                 for s, v in enumerate([0.70, 0.74])], tmp_path, "probe", "Probe")
    assert "| clean | ifer | synthfer | 0.72 ± 0.028" in (tmp_path / "probe.md").read_text()
    assert (tmp_path / "probe.csv").read_text().count("\n") == 3  # header + one row per seed


def test_predictions_round_trip_to_paired_correctness(tmp_path):
    from ifer.report.stats import load_correctness, write_predictions

    path = write_predictions(tmp_path / "p.json", {"image_ids": ["a.png", "b.png", "c.png"], "labels": [0, 1, 2],
                                                   "runs": {"m1": {"0": [0, 1, 1], "1": [0, 0, 2]},
                                                            "m2": {"0": [2, 1, 2], "1": [0, 1, 2], "2": [0, 1, 2]}}})
    correct, seeds = load_correctness(path)
    assert seeds == ["0", "1"]  # only the seeds both methods have: the comparison stays paired
    assert correct["m1"].tolist() == [[1, 1, 0], [1, 0, 1]] and correct["m2"].tolist() == [[0, 1, 1], [1, 1, 1]]
    with pytest.raises(ValueError, match="2 predictions for 3 images"):
        write_predictions(tmp_path / "q.json", {"image_ids": ["a", "b", "c"], "labels": [0, 1, 2],
                                                "runs": {"m": {"0": [0, 1]}}})


# ---------------------------------------------------------------------------------------------- provenance
def test_stage_provenance_records_what_decides_the_numbers(tmp_path):
    import json

    from ifer.core.machine import KERNEL_FLAGS, machine_info
    from ifer.report.provenance import collect_stage_records, write_stage_provenance

    info = machine_info()
    assert info["libraries"]["torch"] and info["torch_threads"] >= 1 and info["kernel_key"].count("|") == 8
    assert set(info["isa_flags"]) <= set(KERNEL_FLAGS)
    p = write_stage_provenance(tmp_path / "run", "eval_fer", {"profile": "tiny", "seeds": [0, 1]},
                               dataset_fingerprints={"synthfer": {"digest": "abc"}})
    rec = json.loads(p.read_text())
    assert rec["stage"] == "eval_fer" and rec["seeds"] == [0, 1] and len(rec["config_sha256"]) == 64
    assert rec["hardware"]["kernel_key"] == info["kernel_key"] and "bit-identical only" in rec["bit_identity"]
    assert list(collect_stage_records(tmp_path)) == [p.as_posix()]
