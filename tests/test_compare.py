"""``ifer compare``: flags a perturbed result, passes a benign change, reads committed results via git::

    .venv/bin/python -m pytest tests/test_compare.py -q
"""
import json
import shutil
import subprocess

import pytest

from ifer.cli import main
from ifer.report.compare import check_metric, compare_results

ACC = {"ifer": [0.36, 0.38, 0.35], "ke2nt": [0.34, 0.36, 0.33]}  # sd 0.0153 and 0.0153 over 3 seeds


def _write(res, acc=ACC, mse=(0.0907, 0.0905)):
    res.mkdir(parents=True, exist_ok=True)
    rows, runs = [], []
    for method, values in acc.items():
        for seed, v in enumerate(values):
            rows.append({"method": method, "dataset": "synthfer", "metric": "accuracy", "seed": seed, "value": v})
            runs.append({"method": method, "dataset": "synthfer", "seed": seed,
                         "identity_probe": {"identity_probe_accuracy": 0.5 + v / 10, "identity_chance": 0.05}})
    (res / "fer_metrics.json").write_text(json.dumps({"rows": rows, "runs": runs}))
    inv = {"dataset": "synthfer", "n_images": 560,
           "runs": [{"seed": s, "methods": {"asit": {"mse_256_pm1": m, "lpips": "unavailable: offline"}}}
                    for s, m in enumerate(mse)]}
    (res / "inversion_metrics.json").write_text(json.dumps(inv))
    return res


def _by_metric(checks):
    return {(c.key[1], c.key[3]): c for c in checks}


def test_perturbed_accuracy_beyond_tolerance_is_flagged(tmp_path, capsys):
    a = _write(tmp_path / "a")
    # ke2nt 8 points lower on every seed. Seed sd 0.0153 pooled over both methods and runs (8 dof),
    # SE 0.0125, t_{0.99865, 8} = 4.2766 (the 3-sigma level): tolerance 0.053 < 0.08
    b = _write(tmp_path / "b", {"ifer": ACC["ifer"], "ke2nt": [v - 0.08 for v in ACC["ke2nt"]]})
    checks = _by_metric(compare_results(a, b))
    bad = checks[("ke2nt", "accuracy")]
    assert not bad.agree and bad.tolerance == pytest.approx(4.276633 * 0.0152753 * (2 / 3) ** 0.5, rel=1e-4)
    assert checks[("ifer", "accuracy")].agree and checks[("asit", "mse_256_pm1")].agree
    assert main(["compare", str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "DISAGREE fer/clean ke2nt/synthfer accuracy" in out and "agree    fer/clean ifer/synthfer accuracy" in out
    assert out.strip().splitlines()[-1].endswith("DISAGREEMENT")


def test_benign_change_within_seed_spread_passes(tmp_path, capsys):
    a = _write(tmp_path / "a")
    # another machine: every seed moves by 1-2 points, ke2nt's mean by 1.3 points. ke2nt's own seed sd (0.0163)
    # is above the group's (0.0141), so it is used: tolerance 4.2766 x 0.0163 x sqrt(2/3) = 5.7 points
    b = _write(tmp_path / "b", {"ifer": [0.37, 0.36, 0.37], "ke2nt": [0.32, 0.35, 0.32]}, mse=(0.09068, 0.09051))
    ke2nt = _by_metric(compare_results(a, b))[("ke2nt", "accuracy")]
    assert ke2nt.diff == pytest.approx(-0.01333, abs=1e-4) and ke2nt.tolerance == pytest.approx(0.0570, abs=5e-4)
    assert all(c.agree for c in compare_results(a, b))
    assert main(["compare", str(a), str(b)]) == 0
    assert capsys.readouterr().out.strip().endswith("runs agree")


def test_single_seed_uses_the_floor_and_missing_metrics_disagree(tmp_path):
    c = check_metric(("fer", "m", "d", "accuracy"), [0.366], [0.364])
    assert c.se is None and c.tolerance == 0.005 and c.agree          # last-digit change: floor
    assert not check_metric(("fer", "m", "d", "accuracy"), [0.366], [0.354]).agree
    one = check_metric(("fer", "m", "d", "accuracy"), [0.366], [0.35, 0.37, 0.36])  # spread from the 3-seed side
    assert one.se == pytest.approx(0.01 * (1 + 1 / 3) ** 0.5)
    a = _write(tmp_path / "a")
    b = _write(tmp_path / "b", {"ifer": ACC["ifer"]})
    missing = _by_metric(compare_results(a, b))[("ke2nt", "accuracy")]
    assert not missing.agree and "only in A" in missing.line()


def test_tolerance_override_and_bad_arguments(tmp_path, capsys):
    a = _write(tmp_path / "a", {"ifer": [0.36]}, mse=(0.09,))
    b = _write(tmp_path / "b", {"ifer": [0.38]}, mse=(0.09,))
    assert main(["compare", str(a), str(b)]) == 1
    assert main(["compare", str(a), str(b), "--tolerance", "accuracy=0.03", "--tolerance",
                 "identity_probe_accuracy=0.01"]) == 0
    with pytest.raises(SystemExit):
        main(["compare", str(a), str(b), "--tolerance", "accuracy"])
    assert main(["compare", str(a), str(tmp_path / "nothing")]) == 2
    assert "ifer compare: error: FileNotFoundError:" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_revision_is_compared_with_the_working_copy(tmp_path, monkeypatch, capsys):
    repo = tmp_path / "repo"
    res = _write(repo / "results" / "tiny")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "results"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "results"], check=True)
    monkeypatch.chdir(repo)
    assert main(["compare", "git:HEAD:results/tiny", "results/tiny"]) == 0
    _write(res, {"ifer": [v + 0.1 for v in ACC["ifer"]], "ke2nt": ACC["ke2nt"]})  # a regression after the commit
    assert main(["compare", "git:HEAD:results/tiny", "results/tiny"]) == 1
    assert "DISAGREE fer/clean ifer/synthfer accuracy" in capsys.readouterr().out
    assert main(["compare", "git:no-such-rev:results/tiny", "results/tiny"]) == 2


def test_metrics_are_keyed_by_protocol(tmp_path, capsys):
    """A clean and a released row of the same method never merge; rows without a protocol are clean (files
    written before protocols existed compare with new clean rows)."""
    a = _write(tmp_path / "a")  # no protocol field: the clean protocol
    b = _write(tmp_path / "b")
    fer = json.loads((b / "fer_metrics.json").read_text())
    clean = [{**r, "protocol": "clean"} for r in fer["rows"]]
    released = [{**r, "protocol": "released", "value": r["value"] + 0.2} for r in fer["rows"] if r["method"] == "ifer"]
    (b / "fer_metrics.json").write_text(json.dumps({"rows": clean + released, "runs": fer["runs"]}))
    checks = {(c.key[0], c.key[1], c.key[3]): c for c in compare_results(a, b)}
    assert checks[("fer/clean", "ifer", "accuracy")].agree and checks[("fer/clean", "ke2nt", "accuracy")].agree
    only_b = checks[("fer/released", "ifer", "accuracy")]
    assert not only_b.agree and only_b.b == pytest.approx([0.56, 0.58, 0.55]) and "only in B" in only_b.line()
    assert main(["compare", str(b), str(b)]) == 0
    assert "agree    fer/released ifer/synthfer accuracy" in capsys.readouterr().out


def test_kernel_rules_pair_inversion_seeds_and_the_baseline(tmp_path):
    """Across kernels (none recorded here): ASIT inversion metrics pair seed by seed within 0.1%, the deterministic
    mean-image baseline within 1e-5; the same kernel_key demands identical numbers."""
    from ifer.report.compare import check_paired, rule_for

    key = ("inversion", "asit", "synthfer", "mse_256_pm1")
    assert rule_for(key, same_kernel=False) == "paired" and rule_for(key, same_kernel=True) == "exact"
    assert rule_for(("inversion", "mean_image_baseline", "synthfer", "mse_256_pm1"), False) == "deterministic"
    assert rule_for(("fer/clean", "ifer", "synthfer", "accuracy"), False) == "seeds"
    ok = check_paired(key, {"0": 0.1025822, "1": 0.1649916}, {"0": 0.1025878, "1": 0.1649996}, "paired")
    assert ok.agree and ok.detectable == pytest.approx(1e-3 * 0.1025822) and "detects shifts >=" in ok.line()
    # one seed off by 0.2% is enough; the seeds' mean barely moves
    assert not check_paired(key, {"0": 0.1, "1": 0.2}, {"0": 0.1002, "1": 0.2}, "paired").agree
    unpaired = check_paired(key, {"0": 0.1, "1": 0.2}, {"0": 0.1, "2": 0.2}, "paired")
    assert not unpaired.agree and "seeds differ" in unpaired.line()
    base = ("inversion", "mean_image_baseline", "synthfer", "mse_256_pm1")
    assert check_paired(base, {"0": 0.2236579}, {"1": 0.2236579 * (1 + 1e-7)}, "deterministic").agree  # by position
    assert not check_paired(base, {"0": 0.2236579}, {"0": 0.2236579 * 1.0001}, "deterministic").agree
    import math

    assert check_paired(key, {"0": 0.1}, {"0": 0.1}, "exact").agree
    one_ulp = check_paired(key, {"0": 0.1}, {"0": math.nextafter(0.1, 1.0)}, "exact")  # one last bit
    assert not one_ulp.agree and "1 seed(s) differ" in one_ulp.line()
    assert not check_paired(key, {"0": 0.1}, {"0": 0.1000000001}, "exact").agree
