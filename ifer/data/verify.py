"""Dataset fingerprints and the ``verify`` step (in the spirit of MLPerf's ``verify_dataset``).

A fingerprint is the file count plus a combined sha256 over sorted ``"<sha256>  <relpath>"`` lines of the
files a dataset's ``include`` globs match. Expected fingerprints live in ``fingerprints.json``; a
maintainer with the data records them (and optionally a per-file manifest, so a mismatch can name the
files). SynthFER is checked against the ``manifest.json`` its generator wrote::

    python -m ifer.data verify --root datasets
    python -m ifer.data fingerprint --root datasets --name rafdb --write
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ifer.data.common import DataError, sha256_file
from ifer.data.synthfer import combined_digest

FINGERPRINTS = Path(__file__).with_name("fingerprints.json")
MANIFEST_DIR = Path(__file__).with_name("manifests")
SHOW = 20  # files listed per problem kind in a report


def load_fingerprints(path: Path = FINGERPRINTS) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in json.loads(Path(path).read_text()).items() if not k.startswith("_")}


def matched_files(root: Path, include: list[str]) -> list[str]:
    """Sorted relative paths of regular files matched by the ``include`` globs."""
    found = {p.relative_to(root).as_posix() for pat in include for p in root.glob(pat) if p.is_file()}
    return sorted(found)


def hash_files(root: Path, files: list[str]) -> dict[str, str]:
    return {f: sha256_file(root / f) for f in files}


def read_manifest(path: Path) -> dict[str, str]:
    """``sha256sum``-format file -> {relpath: sha256}."""
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            sha, rel = line.split(maxsplit=1)
            out[rel.strip()] = sha
    return out


def diff_files(expected: dict[str, str], actual: dict[str, str]) -> dict[str, list[str]]:
    return {
        "missing": sorted(expected.keys() - actual.keys()),
        "extra": sorted(actual.keys() - expected.keys()),
        "changed": sorted(f for f in expected.keys() & actual.keys() if expected[f] != actual[f]),
    }


def _with_diff(entry: dict[str, Any], diff: dict[str, list[str]]) -> None:
    for kind, files in diff.items():
        if files:
            entry["problems"].append(f"{len(files)} {kind} file(s): {', '.join(files[:5])}{' ...' if len(files) > 5 else ''}")
            entry[kind] = files[:SHOW]


def verify_synthfer(ds_root: Path) -> dict[str, Any]:
    entry: dict[str, Any] = {"status": "ok", "problems": []}
    manifest_path = ds_root / "manifest.json"
    if not manifest_path.exists():
        return {"status": "mismatch", "problems": [f"{manifest_path} missing: regenerate with python -m ifer.data synthfer"]}
    manifest = json.loads(manifest_path.read_text())
    expected = manifest["files"]
    present = matched_files(ds_root, ["train/*.png", "val/*.png", "test/*.png"])
    actual = hash_files(ds_root, present)
    entry.update(count=len(actual), expected_count=len(expected))
    _with_diff(entry, diff_files(expected, actual))
    entry["digest"] = combined_digest(actual)
    if entry["digest"] != manifest["digest"]:
        entry["problems"].append("combined digest differs from manifest.json")
    if entry["problems"]:
        entry["status"] = "mismatch"
    return entry


def verify_real(name: str, ds_root: Path, fp: dict[str, Any], check_splits: bool = True) -> dict[str, Any]:
    entry: dict[str, Any] = {"status": "ok", "problems": [], "notes": []}
    files = matched_files(ds_root, fp["include"])
    entry["count"], entry["expected_count"] = len(files), fp.get("count")
    if fp.get("count") is not None and len(files) != fp["count"]:
        entry["problems"].append(f"{len(files)} files match {fp['include']}, expected {fp['count']}")
    if fp.get("digest"):
        actual = hash_files(ds_root, files)
        if combined_digest(actual) != fp["digest"]:
            entry["problems"].append("combined sha256 digest differs from fingerprints.json")
            if fp.get("manifest"):
                _with_diff(entry, diff_files(read_manifest(Path(__file__).parent / fp["manifest"]), actual))
            else:
                entry["notes"].append("no per-file manifest recorded, so the differing files cannot be named")
    else:
        entry["notes"].append(f"digest not recorded ({fp.get('reason', 'no reason given')}); "
                              f"record it with: python -m ifer.data fingerprint --root <datasets> --name {name} --write")
    if check_splits and fp.get("split_sizes"):
        _check_split_sizes(name, ds_root, fp["split_sizes"], entry)
    if entry["problems"]:
        entry["status"] = "mismatch"
    elif not fp.get("digest"):
        entry["status"] = "unverified"
    return entry


def _check_split_sizes(name: str, ds_root: Path, expected: dict[str, int], entry: dict[str, Any]) -> None:
    """Build the adapter (which also checks labels) and compare the official split sizes with the protocol."""
    from ifer.data import open_dataset  # deferred: adapters import this module's siblings

    try:
        ds = open_dataset(name, ds_root, split="test")
    except DataError as exc:
        entry["problems"].append(f"adapter error: {exc}")
        return
    sizes = ds.protocol.get("official_split_sizes") or {"test": len(ds)}
    for split, n in expected.items():
        if sizes.get(split) != n:
            entry["problems"].append(f"{split} split has {sizes.get(split)} samples, protocol says {n}")


def verify_datasets(root: str | os.PathLike, names: list[str] | None = None, fingerprints: Path = FINGERPRINTS,
                    check_splits: bool = True, synthfer_root: str | os.PathLike | None = None) -> dict[str, Any]:
    """Verify the datasets under ``root``. ``names=None`` checks every known dataset that is present;
    a dataset named explicitly but absent is a failure. SynthFER is read from ``synthfer_root``
    (default ``root/synthfer``). Returns a JSON-able report with ``ok``."""
    root = Path(root)
    fps = load_fingerprints(fingerprints)
    known = ["synthfer", *fps]
    unknown = [n for n in names or [] if n not in known]
    if unknown:
        raise ValueError(f"unknown dataset(s) {unknown}; known: {known}")
    report: dict[str, Any] = {"root": str(root), "datasets": {}}
    for name in names or known:
        ds_root = Path(synthfer_root) if (name == "synthfer" and synthfer_root) else root / name
        if not ds_root.exists():
            report["datasets"][name] = {"status": "absent" if names is None else "missing",
                                        "problems": [] if names is None else [f"{ds_root} not found"]}
            continue
        report["datasets"][name] = verify_synthfer(ds_root) if name == "synthfer" else \
            verify_real(name, ds_root, fps[name], check_splits)
    report["ok"] = all(d["status"] in ("ok", "unverified", "absent") for d in report["datasets"].values())
    return report


def fingerprint(root: str | os.PathLike, name: str, write: bool = False, fingerprints: Path = FINGERPRINTS) -> dict[str, Any]:
    """Compute ``name``'s fingerprint under ``root/name``; with ``write``, record it (and a per-file manifest)."""
    fps = json.loads(Path(fingerprints).read_text())
    if name not in fps or name.startswith("_"):
        raise ValueError(f"no fingerprint entry for {name!r}; known: {[k for k in fps if not k.startswith('_')]}")
    ds_root = Path(root) / name
    if not ds_root.exists():
        raise DataError(f"[{name}] {ds_root} not found")
    files = hash_files(ds_root, matched_files(ds_root, fps[name]["include"]))
    entry = dict(fps[name], count=len(files), digest=combined_digest(files))
    if write:
        MANIFEST_DIR.mkdir(exist_ok=True)
        manifest = MANIFEST_DIR / f"{name}.sha256"
        manifest.write_text("".join(f"{files[f]}  {f}\n" for f in sorted(files)))
        entry["manifest"] = manifest.relative_to(Path(__file__).parent).as_posix()
        entry["reason"] = "recorded with python -m ifer.data fingerprint"
        fps[name] = entry
        Path(fingerprints).write_text(json.dumps(fps, indent=2) + "\n")
    return entry


def format_report(report: dict[str, Any]) -> str:
    lines = [f"verify {report['root']}: {'OK' if report['ok'] else 'FAILED'}"]
    for name, d in report["datasets"].items():
        count = f" ({d['count']} files)" if "count" in d else ""
        lines.append(f"  {name:10s} {d['status']}{count}")
        lines += [f"      - {p}" for p in d.get("problems", [])]
        lines += [f"      . {n}" for n in d.get("notes", [])]
    return "\n".join(lines)


def write_report(report: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write a verify report as JSON (``results/data_check.json`` in the DVC ``verify`` stage)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")
    return path
