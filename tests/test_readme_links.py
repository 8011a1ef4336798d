"""The README and docs/ stay navigable and true to the code::

    .venv/bin/python -m pytest tests/test_readme_links.py -q

- every relative link and image in README.md and docs/*.md points at a file or folder that exists, and every
  ``#anchor`` (in-page or ``file.md#anchor``) at a heading GitHub would generate that anchor for;
- the README's weights table is the one generated from ``KNOWN_WEIGHTS`` (``python -m ifer.report.weights_table``);
- the README's first two shell commands are the main job and the test command, the one ``.ci/run`` runs.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from ifer.report.readme import END as RESULTS_END
from ifer.report.readme import START as RESULTS_START

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [ROOT / "README.md", *DOCS]

MAIN_JOB = 'python3 -m pip install -q "nox>=2025.2.9" && python3 -m nox -s reproduce'
TEST_COMMAND = 'python3 -m pip install -q "nox>=2025.2.9" && python3 -m nox -s tests regression'

_FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.S | re.M)
_CODE = re.compile(r"`[^`\n]*`")
_MD_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HTML_LINK = re.compile(r"""<(?:a|img)\b[^>]*?\b(?:href|src)\s*=\s*["']([^"']+)["']""", re.I)


def _strip_code(text: str) -> str:
    return _CODE.sub("", _FENCE.sub("", text))


def _outside_results_block(text: str) -> str:
    if RESULTS_START in text and RESULTS_END in text:
        head, rest = text.split(RESULTS_START, 1)
        return head + rest.split(RESULTS_END, 1)[1]
    return text


def _results_block(text: str) -> str:
    return text.split(RESULTS_START, 1)[1].split(RESULTS_END, 1)[0]


def links(text: str) -> list[str]:
    """Link and image targets of Markdown text, code spans and fenced blocks left out."""
    text = _strip_code(text)
    return _MD_LINK.findall(text) + _HTML_LINK.findall(text)


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: its rendered text, lower-cased, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text stays, its target goes
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor of a Markdown file's headings, with GitHub's -1, -2 suffixes for repeated headings."""
    seen: dict[str, int] = {}
    out = set()
    for line in _FENCE.sub("", path.read_text()).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = github_anchor(m.group(1))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)


def broken(page: Path, targets: list[str]) -> list[str]:
    bad = []
    for target in targets:
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = page if not file_part else (page.parent / file_part).resolve()
        if not dest.exists():
            bad.append(f"{target}: {_rel(dest)} does not exist")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target}: no heading with anchor #{anchor} in {_rel(dest)}")
    return bad


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_every_relative_link_resolves(page):
    """Outside the README's generated results block (tested below), every relative link, image and anchor resolves."""
    targets = links(_outside_results_block(page.read_text()))
    assert not broken(page, targets), f"{page.relative_to(ROOT)}: broken links:\n" + "\n".join(broken(page, targets))


def test_links_in_the_generated_results_block_resolve():
    readme = ROOT / "README.md"
    targets = links(_results_block(readme.read_text()))
    assert not broken(readme, targets), "broken links in the results block:\n" + "\n".join(broken(readme, targets))


def test_the_link_checker_sees_broken_links_and_anchors(tmp_path):
    """The checker itself: a missing file, a missing anchor and a link inside code are told apart."""
    (tmp_path / "other.md").write_text("# Two protocols: clean and released\n\n## Faithfulness: `as_released` vs x\n")
    page = tmp_path / "page.md"
    page.write_text("## Same\n## Same\n[a](other.md#two-protocols-clean-and-released) [b](other.md#nope) "
                    "![c](missing.png) [d](#same-1) [e](#same-2) `[f](in-code.md)` [g](https://example.org/x) "
                    "[h](other.md#faithfulness-as_released-vs-x)\n```\n[i](in-fence.md)\n```\n")
    bad = broken(page, links(page.read_text()))
    assert [b.split(":")[0] for b in bad] == ["other.md#nope", "missing.png", "#same-2"]


def test_readme_weights_table_is_generated_from_known_weights():
    from ifer.report.weights_table import readme_table, weights_table

    assert readme_table(ROOT / "README.md") == weights_table(), (
        "README weights table is stale: run `python -m ifer.report.weights_table --update README.md`")


def test_readme_first_commands_are_the_main_job_and_the_test_command():
    blocks = re.findall(r"^```(?:bash|sh|shell|console)?\n(.*?)^```", (ROOT / "README.md").read_text(), re.S | re.M)
    commands = [line.split(" #")[0].strip() for block in blocks for line in block.splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    assert commands[:2] == [MAIN_JOB, TEST_COMMAND]
    assert TEST_COMMAND in (ROOT / ".ci" / "run").read_text()
