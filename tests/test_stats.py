"""Seed intervals and paired method comparisons on hand-computed and synthetic cases::

    .venv/bin/python -m pytest tests/test_stats.py -q
"""
import math

import numpy as np
import pytest

from ifer.report.stats import NO_TEST, holm, paired_t_test, pairwise_table, per_seed_accuracy, seed_interval, verdict


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


def test_paired_t_hand_computed():
    # d = (0.02, 0.04, 0.06): mean 0.04, sd 0.02, se 0.02 / sqrt(3), t = 2 sqrt(3) = 3.4641, p = 0.0742 (df 2)
    r = paired_t_test([0.40, 0.42, 0.46], [0.38, 0.38, 0.40])
    assert r["diff"] == pytest.approx(0.04) and r["sd_diff"] == pytest.approx(0.02) and r["df"] == 2
    assert r["t"] == pytest.approx(2 * math.sqrt(3)) and r["p"] == pytest.approx(0.074180, rel=1e-4)
    half = 4.302653 * 0.02 / math.sqrt(3)
    assert r["ci_low"] == pytest.approx(0.04 - half, abs=1e-6) and r["ci_high"] == pytest.approx(0.04 + half, abs=1e-6)


def test_identical_or_equally_accurate_methods_are_not_distinguishable():
    rng = np.random.default_rng(1)
    a = rng.random((3, 200)) < 0.4
    rows = pairwise_table({"a": a, "b": a.copy()})
    assert rows[0]["p"] == 1.0 and rows[0]["verdict"] == "not distinguishable (p = 1.00)" and not rows[0]["significant"]
    # different images right, same number right per seed: discordant, yet no difference of accuracy at all
    b = np.zeros((3, 200), dtype=bool)
    b[:, :100] = True
    assert paired_t_test(per_seed_accuracy(b), per_seed_accuracy(~b))["p"] == 1.0


def test_one_seed_gives_no_test_and_no_detectable_difference():
    r = paired_t_test([0.40], [0.30])
    assert r["p"] is None and r["sd_diff"] is None and r["diff"] == pytest.approx(0.1)
    rows = pairwise_table({"a": np.ones((1, 10)), "b": np.zeros((1, 10)), "c": np.zeros((1, 10))})
    assert all(x["p_holm"] is None and x["mde_points"] is None and not x["significant"] for x in rows)
    assert rows[0]["verdict"] == NO_TEST and "1 seed" in NO_TEST


def test_seed_spread_decides_not_the_image_count():
    """A method that wins on one seed and loses on the others: many discordant images, no consistent effect."""
    x = np.zeros((3, 300), dtype=bool)
    y = np.zeros((3, 300), dtype=bool)
    x[0, :150], y[1:, :100] = True, True
    r = pairwise_table({"x": x, "y": y})[0]
    assert not r["significant"] and r["diff_ci_high"] - r["diff_ci_low"] > 20
    # the same mean difference on every seed (up to 1 image) is significant even with 3 seeds
    good, bad = np.zeros((3, 560), dtype=bool), np.zeros((3, 560), dtype=bool)
    good[:, :250], bad[:, :200] = True, True
    good[1, 250] = True
    rows = {(r["a"], r["b"]): r for r in pairwise_table({"good": good, "bad": bad})}
    assert rows[("good", "bad")]["verdict"].startswith("good > bad (p ") and rows[("good", "bad")]["p"] < 0.001


def test_detectable_difference_matches_noncentral_t_power():
    from scipy import stats as sps

    from ifer.report.stats import detectable_difference, two_sided_power

    d = detectable_difference(3.0, 3, 0.05)
    crit = sps.t.ppf(0.975, 2)
    assert two_sided_power(d / (3.0 / math.sqrt(3)), crit, 2) == pytest.approx(0.8, abs=1e-6)
    # larger than the normal-approximation formula (t_{0.975,2} + t_{0.8,2}) sd / sqrt(n) at 3 seeds, close at 30
    assert d > (crit + sps.t.ppf(0.8, 2)) * 3.0 / math.sqrt(3)
    approx30 = (sps.t.ppf(0.975, 29) + sps.t.ppf(0.8, 29)) * 3.0 / math.sqrt(30)
    assert detectable_difference(3.0, 30, 0.05) == pytest.approx(approx30, rel=0.03)
    assert detectable_difference(3.0, 1) is None and detectable_difference(0.0, 3) == 0.0


def test_holm_step_down():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []
    assert holm([0.01, None, 0.04]) == pytest.approx([0.02, None, 0.04])  # no test: not in the family


def test_verdict_strings():
    assert verdict("ifer", "ke2nt", 1.2, 0.003) == "ifer > ke2nt (p = 0.003)"
    assert verdict("ifer", "ke2nt", -3.0, 0.0001) == "ke2nt > ifer (p < 0.001)"
    assert verdict("ifer", "ke2nt", 0.4, 0.41) == "not distinguishable (p = 0.41)"
    assert verdict("ifer", "ke2nt", 0.4, None) == NO_TEST


def test_mismatched_pairing_is_an_error():
    with pytest.raises(ValueError, match="same seeds and images"):
        pairwise_table({"a": np.ones((3, 10)), "b": np.ones((2, 10))})


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
    a, b = np.zeros((3, 100), dtype=bool), np.zeros((3, 100), dtype=bool)
    a[:, :80], b[:, :30] = True, True
    a[0, 80], b[2, 30] = True, True  # per-seed differences 51, 50, 49 points: mean 50, sd 1
    rows = [{"dataset": "synthfer", **r} for r in pairwise_table({"a": a, "b": b})]
    write_significance(significance_table(rows), tmp_path, "sig", "Pairs")
    sig = (tmp_path / "sig.md").read_text()
    # t = 50 / (1 / sqrt(3)) = 86.6 at 2 dof: p = 1.3e-4; one pair, so Holm changes nothing
    assert "| clean | synthfer | a | b | +50.00 [+47.52, +52.48] | 1.00 | 86.60 (2) | 0.000133 |" in sig
    assert "a > b (p < 0.001)" in sig and "paired t test" in sig and "80% power" in sig
    from ifer.report.stats import detectable_difference
    assert f"| {detectable_difference(1.0, 3, 0.05):.1f} | 3 × 100 |" in sig
    csv = (tmp_path / "sig.csv").read_text().splitlines()
    assert csv[0].split(",")[:4] == ["protocol", "dataset", "a", "b"] and "mde_points" in csv[0] and "True" in csv[1]
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
    assert info["libraries"]["torch"] and info["torch_threads"] >= 1 and info["kernel_key"].count("|") == 9
    assert set(info["isa_flags"]) <= set(KERNEL_FLAGS)
    p = write_stage_provenance(tmp_path / "run", "eval_fer", {"profile": "tiny", "seeds": [0, 1]},
                               dataset_fingerprints={"synthfer": {"digest": "abc"}})
    rec = json.loads(p.read_text())
    assert rec["stage"] == "eval_fer" and rec["seeds"] == [0, 1] and len(rec["config_sha256"]) == 64
    assert rec["hardware"]["kernel_key"] == info["kernel_key"] and "bit-identical only" in rec["bit_identity"]
    assert list(collect_stage_records(tmp_path)) == [p.as_posix()]


def test_kernel_key_changes_with_a_numerics_package_version():
    """Another transformers release moved the ke2nt_minilm runs with everything else equal (2026-12-04): the key
    names the NUMERIC_PACKAGES versions, so `ifer compare` then compares statistically instead of bit for bit."""
    import copy

    from ifer.core.machine import NUMERIC_PACKAGES, kernel_key, machine_info

    info = machine_info()
    assert set(info["libraries"]["packages"]) == set(NUMERIC_PACKAGES)
    assert info["libraries"]["packages"]["timm"] and info["libraries"]["packages"]["transformers"]
    other = copy.deepcopy(info)
    other["libraries"]["packages"]["transformers"] = "0.0.1"
    assert kernel_key(other) != kernel_key(info) and kernel_key(copy.deepcopy(info)) == info["kernel_key"]
    assert info["kernel_key"].rsplit("|", 1)[1].startswith("packages ")


def test_readme_sentence_names_only_significant_pairs_with_their_detectable_difference(tmp_path):
    from ifer.report.readme import significant_conclusions
    from ifer.report.tables import significance_table, write_significance

    good, bad, same = (np.zeros((3, 560), dtype=bool) for _ in range(3))
    good[:, :250], bad[:, :200], same[:, :200] = True, True, True
    good[1, 250], same[0, 200], same[2, 201] = True, True, True
    rows = [{"dataset": "synthfer", **r} for r in pairwise_table({"good": good, "bad": bad, "same": same})]
    rows += [{"dataset": "tiny1", **r} for r in pairwise_table({"x": good[:1], "y": bad[:1]})]  # one seed
    write_significance(significance_table(rows), tmp_path, "fer_significance", "Pairs")
    text = significant_conclusions(tmp_path / "fer_significance.csv")
    by = {(r["a"], r["b"]): r for r in rows}
    win = by[("good", "bad")]
    assert win["significant"] and not by[("bad", "same")]["significant"]
    assert text.startswith("Significant differences between FER methods: good > bad (p ")
    assert f"detectable {win['mde_points']:.1f} points) on synthfer" in text and "same >" not in text
    assert "1 pair(s) have a single seed: no test is possible" in text and "paired t test" in text
    assert f"{by[('bad', 'same')]['mde_points']:.1f}" in text  # the undistinguished pair's detectable difference
