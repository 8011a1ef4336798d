"""``ifer readme`` copies generated tables and provenance between the README markers, and only there::

    .venv/bin/python -m pytest tests/test_readme_block.py -q
"""
import json

import pytest

from ifer.report.readme import END, START, ReadmeMarkerError, update_readme


def _results(tmp_path):
    res = tmp_path / "results" / "tiny"
    res.mkdir(parents=True)
    (res / "provenance.json").write_text(json.dumps({
        "git": {"sha": "0123456789abcdef", "dirty": False}, "seeds": [0], "created_utc": "2026-11-23T00:00:00+00:00",
        "config": {"profile": "tiny"}, "hardware": {"cpu": "TestCPU", "cpu_count": 2},
        "datasets": {"synthfer": {"digest": "feedbeefcafe0000", "status": "ok"}}}))
    (res / "inversion_comparison.md").write_text("### Inversion\n\n| method | mse |\n|---|---|\n| asit | 0.1 |\n")
    (res / "fer_comparison.md").write_text("### FER\n\n| method | accuracy |\n|---|---|\n| ifer | 0.33 |\n")
    (res / "identity_probe.csv").write_text("method,dataset,seed,identity_probe_accuracy,identity_chance\nifer,synthfer,0,0.25,0.05\n")
    return res


def test_block_replaced_between_markers_only(tmp_path):
    res = _results(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\n{START}\nold numbers\n{END}\n\n## After\n")
    text = update_readme(readme, res)
    assert text.startswith("# Title\n\n") and text.endswith(f"{END}\n\n## After\n")
    assert "old numbers" not in text and "| ifer | 0.33 |" in text and "| asit | 0.1 |" in text
    assert "`0123456789ab`" in text and "TestCPU (2 threads)" in text and "synthfer: `feedbeefcafe`" in text
    assert "| ifer | synthfer | 0 | 0.250 | 0.050 |" in text
    assert update_readme(readme, res) == text  # idempotent


def test_missing_markers_or_results_are_clear_errors(tmp_path):
    res = _results(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    with pytest.raises(ReadmeMarkerError, match="RESULTS-START"):
        update_readme(readme, res)
    readme.write_text(f"{START}\n{END}\n")
    (res / "fer_comparison.md").unlink()
    with pytest.raises(FileNotFoundError, match="fer_comparison.md is missing"):
        update_readme(readme, res)
    assert readme.read_text() == f"{START}\n{END}\n"  # nothing lost on error


def test_committed_readme_block_matches_committed_results(monkeypatch):
    """The README's numbers are the committed results/tiny, not a stale copy (regenerate: `ifer readme`)."""
    from pathlib import Path

    from ifer.report.readme import results_block

    root = Path(__file__).resolve().parents[1]
    if not (root / "results" / "tiny" / "provenance.json").is_file():
        pytest.skip("results/tiny not produced yet: run `nox -s reproduce`")
    block = (root / "README.md").read_text().split(START, 1)[1].split(END, 1)[0]
    monkeypatch.chdir(root)  # the block names the results folder relative to the repository root
    assert block == "\n" + results_block("results/tiny"), "README results block is stale: run `ifer readme`"
