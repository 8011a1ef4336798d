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
        "config": {"profile": "tiny"},
        "hardware": {"cpu": "TestCPU", "torch_threads": 2, "isa_flags": {"avx2": True, "avx512f": False, "sse4_2": True}},
        "datasets": {"synthfer": {"digest": "feedbeefcafe0000", "status": "ok"}}}))
    (res / "inversion_comparison.md").write_text("### Inversion\n\n| method | mse |\n|---|---|\n| asit | 0.1 |\n")
    (res / "fer_comparison.md").write_text("### FER\n\n| method | accuracy |\n|---|---|\n| ifer | 0.33 |\n")
    (res / "identity_probe.md").write_text("### Probe\n\n| method | probe |\n|---|---|\n| ifer | 0.25 ± 0.01 |\n")
    (res / "fer_significance.csv").write_text(
        "dataset,a,b,verdict\nsynthfer,ifer,ke2nt,ifer > ke2nt (p = 0.003)\nsynthfer,ifer,disentangled,not distinguishable (p = 0.41)\n")
    (res / "fer_significance.md").write_text("### Pairs\n\n| A | B | verdict |\n|---|---|---|\n| ifer | ke2nt | ifer > ke2nt |\n")
    return res


def test_block_replaced_between_markers_only(tmp_path):
    res = _results(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\n{START}\nold numbers\n{END}\n\n## After\n")
    text = update_readme(readme, res)
    assert text.startswith("# Title\n\n") and text.endswith(f"{END}\n\n## After\n")
    assert "old numbers" not in text and "| ifer | 0.33 |" in text and "| asit | 0.1 |" in text
    assert "`0123456789ab`" in text and "TestCPU (2 threads, avx2)" in text and "synthfer: `feedbeefcafe`" in text
    assert "| ifer | ke2nt | ifer > ke2nt |" in text
    # one table per kind: the identity probe is linked, not copied (the README stays short)
    assert "| ifer | 0.25 ± 0.01 |" not in text and f"[identity probe]({res.as_posix()}/identity_probe.md)" in text
    # only the significant difference is stated as a conclusion
    assert ("Significant differences between FER methods: ifer > ke2nt (p = 0.003) on synthfer. "
            "The other 1 pair(s) are not distinguishable") in text
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


def test_readme_block_matches_results_on_disk(monkeypatch):
    """The README's block is the one generated from results/tiny as it is on disk now, not a stale copy.

    Committed tree: the committed results. After `nox -s reproduce`: that run's results, because the main job
    regenerates the block (`ifer readme`) right after `dvc repro` -- so the README's two commands pass in
    either order."""
    from pathlib import Path

    from ifer.report.readme import results_block

    root = Path(__file__).resolve().parents[1]
    if not (root / "results" / "tiny" / "provenance.json").is_file():
        pytest.skip("results/tiny not produced yet: run `nox -s reproduce`")
    block = (root / "README.md").read_text().split(START, 1)[1].split(END, 1)[0]
    monkeypatch.chdir(root)  # the block names the results folder relative to the repository root
    assert block == "\n" + results_block("results/tiny"), "README results block is stale: run `ifer readme`"


def test_reproduce_session_regenerates_the_readme_block_after_dvc_repro():
    """The order the test above relies on: `dvc repro`, then `ifer readme` on the same profile's results."""
    import ast
    from pathlib import Path

    src = (Path(__file__).resolve().parents[1] / "noxfile.py").read_text()
    fn = next(n for n in ast.parse(src).body if isinstance(n, ast.FunctionDef) and n.name == "reproduce")
    body = ast.get_source_segment(src, fn)
    assert '"repro"' in body and '"readme"' in body and body.index('"repro"') < body.index('"readme"')
