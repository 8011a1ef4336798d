"""The README's weights table, generated from :data:`ifer.core.weights.KNOWN_WEIGHTS`, never typed.

One row per known pretrained asset: the file name as recorded, the config key(s) of the ``paper`` profile that
name it (found by resolving that profile, so the table follows the config), where to get it, the published
sha256 (or prefix) the suite checks, its licence as recorded and what it is for. The README holds the table
between ``<!-- WEIGHTS-START -->`` and ``<!-- WEIGHTS-END -->``; ``tests/test_readme_links.py`` checks that it
equals this output. Print it, or rewrite the README's copy::

    python -m ifer.report.weights_table            # print the table
    python -m ifer.report.weights_table --update README.md
"""
from __future__ import annotations

import argparse
from collections.abc import Iterator, Mapping
from pathlib import Path

from ifer.core.config import load_config
from ifer.core.weights import KNOWN_WEIGHTS

START, END = "<!-- WEIGHTS-START -->", "<!-- WEIGHTS-END -->"

# Assets that no config key names: they are passed on the command line (or, for the released ASIT, through a key
# whose default is null).
NOT_IN_CONFIG = {
    "asit_ffhq_official": "`asit_finetune.init` (default null), or `ifer eval-checkpoint FILE`",
    "ifer_rafdb_official": "`ifer eval-checkpoint FILE`",
}


def _leaves(node, prefix: str = "") -> Iterator[tuple[str, object]]:
    if isinstance(node, Mapping):
        for k, v in node.items():
            yield from _leaves(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from _leaves(v, f"{prefix}[{i}]")
    else:
        yield prefix, node


def config_keys(cfg: Mapping | None = None) -> dict[str, list[tuple[str, str]]]:
    """For each known asset, the (key, path) pairs of ``cfg`` (default: the resolved ``paper`` profile) whose value
    is a path ending in the asset's recorded file name."""
    cfg = load_config("paper") if cfg is None else cfg
    paths = [(k, v) for k, v in _leaves(cfg) if isinstance(v, str) and v]
    return {name: [(k, v) for k, v in paths if Path(v).name.endswith(w.filename)] for name, w in KNOWN_WEIGHTS.items()}


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ").strip() or "—"


def weights_table(cfg: Mapping | None = None) -> str:
    """The Markdown table (header, separator, one row per known asset), ending in a newline."""
    keys = config_keys(cfg)
    rows = ["| file | config key (`paper` profile path) | source | sha256 | licence | used for |",
            "|---|---|---|---|---|---|"]
    for name, w in KNOWN_WEIGHTS.items():
        where = "; ".join(f"`{k}` (`{v}`)" for k, v in keys[name]) or NOT_IN_CONFIG.get(name, "—")
        if w.sha256:
            digest = f"`{w.sha256}`"
        elif w.sha256_prefix:
            digest = f"prefix `{w.sha256_prefix}`"
        else:
            digest = "none published"  # fingerprint_inputs records each file's sha256 in runs/<profile>/inputs/
        rows.append("| " + " | ".join([f"`{w.filename}`", where, _cell(w.source), digest,
                                        _cell(w.licence or "see source"), _cell(w.used_by)]) + " |")
    return "\n".join(rows) + "\n"


def readme_table(readme: str | Path) -> str:
    """The table the README holds between the markers (raises ValueError without exactly one pair)."""
    text = Path(readme).read_text()
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise ValueError(f"{readme} needs exactly one {START} followed by one {END}")
    return text.split(START, 1)[1].split(END, 1)[0].lstrip("\n")


def update_readme(readme: str | Path) -> str:
    """Replace the README's table between the markers with :func:`weights_table`; returns the new text."""
    path = Path(readme)
    readme_table(path)  # checks the markers
    text = path.read_text()
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    new = f"{head}{START}\n{weights_table()}{END}{tail}"
    path.write_text(new)
    return new


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ifer.report.weights_table", description=__doc__.split("\n")[0])
    ap.add_argument("--update", metavar="README", help="rewrite the table between the markers of this file")
    args = ap.parse_args(argv)
    if args.update:
        update_readme(args.update)
    else:
        print(weights_table(), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
