"""Published test subsets (occlusion, pose) given as image lists, matched to a dataset's test records (issue 21).

    python -c "from ifer.data.subsets import normalised_name as n; print(n('Image/aligned/test_0003_aligned.jpg'))"

Papers publish such subsets as text files of image names: RAN (Wang et al., TIP 2020) for RAF-DB, FERPlus and
AffectNet (occlusion, pose > 30 and > 45 degrees), e.g. ``test_0003.jpg`` for RAF-DB (whose aligned files are
``test_0003_aligned.jpg``), ``fer0032220.png`` for FERPlus, ``<folder>/<sha1>.jpg`` for AffectNet. The lists are
not redistributable here; the user passes their path in ``analysis.subsets``.

Matching: the first whitespace-separated field of each non-empty line that does not start with ``#`` (other
columns, e.g. a label, are ignored) is reduced to its file stem, lower-cased, without a trailing ``_aligned``
(:func:`normalised_name`), and matched to the test record of the same reduced stem. Where several test records
share it (two folders with the same file name), the line must end the record's path (``Angry/x.png``);
otherwise it is ambiguous and counts as unmatched. Lines that match nothing (a train image, another split, a
typo) are counted and the first few named; a list that matches no test image at all is an error in one line.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path, PurePosixPath


class SubsetError(ValueError):
    """A subset list that cannot be used (missing, empty, or matching no test image); the message says why."""


def normalised_name(name: str) -> str:
    stem = PurePosixPath(name.replace("\\", "/")).stem.lower()
    return stem[: -len("_aligned")] if stem.endswith("_aligned") else stem


def read_list(path: str | Path) -> list[str]:
    """The image names of a subset list (first field per line, comments and blank lines skipped, in order,
    duplicates once)."""
    p = Path(path)
    if not p.is_file():
        raise SubsetError(f"subset list {p}: no such file (analysis.subsets[].list)")
    names = []
    for line in p.read_text(errors="replace").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            names.append(line.split()[0])
    names = list(dict.fromkeys(names))
    if not names:
        raise SubsetError(f"subset list {p}: no image names in it")
    return names


def match_subset(path: str | Path, record_paths: Sequence[str | Path], dataset: str = "") -> tuple[list[int], dict]:
    """Indices of the test records named by the list at ``path`` (sorted) and what the matching found:
    ``{list, sha256, n_listed, n_matched, n_unmatched, unmatched_examples}``."""
    names = read_list(path)
    posix = [Path(r).as_posix() for r in record_paths]
    by_stem: dict[str, list[int]] = {}
    for i, r in enumerate(posix):
        by_stem.setdefault(normalised_name(r), []).append(i)
    matched: set[int] = set()
    unmatched = []
    for name in names:
        cands = by_stem.get(normalised_name(name), [])
        if len(cands) > 1:
            tail = name.replace("\\", "/").lstrip("./")
            cands = [i for i in cands if posix[i].endswith("/" + tail) or posix[i] == tail]
        if len(cands) == 1:
            matched.add(cands[0])
        else:
            unmatched.append(name)
    info = {"list": str(path), "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest(),
            "n_listed": len(names), "n_matched": len(matched), "n_unmatched": len(unmatched),
            "unmatched_examples": unmatched[:5]}
    if not matched:
        raise SubsetError(f"subset list {path}: none of its {len(names)} names (e.g. {names[0]!r}) is a test image "
                          f"of {dataset or 'the dataset'} (e.g. {posix[0] if posix else 'no test images'!r})")
    return sorted(matched), info
