"""Dataset fingerprints and the ``verify`` step (in the spirit of MLPerf's ``verify_dataset``).

Each present dataset is opened through its adapter, which checks the label files and counts the images
it would read (over every split); the count is compared with ``fingerprints.json``. A fingerprint's
digest is a combined sha256 over sorted ``"<sha256>  <relpath>"`` lines of the files its ``include``
globs match; while a maintainer has not recorded it (or the copy has another layout, e.g. FFHQ at
256 px) the dataset is ``unverified``, not failed. ``--deep`` decodes every image in parallel and names
the zero-byte, truncated, corrupt and unusable ones. SynthFER is checked against its ``manifest.json``::

    ifer verify --params params.yaml --deep            # the datasets the profile needs, decoded
    python -m ifer.data verify --root datasets --names rafdb --deep
    python -m ifer.data fingerprint --root datasets --name rafdb --write

Statuses: ``ok``; ``unverified`` (count fine, digest not recorded or not applicable); ``absent`` (not
present, not required); failures: ``missing`` (required but absent), ``mismatch`` (count, split sizes or
digest differ), ``corrupt`` (``--deep`` found bad images), ``error`` (the adapter rejects the layout or a
label file).
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ifer.core.io import atomic_write_json, sha256_file
from ifer.data.common import DataError, format_entries, scan_images
from ifer.data.labels import FER_DATASETS
from ifer.data.synthfer import combined_digest

FINGERPRINTS = Path(__file__).with_name("fingerprints.json")
MANIFEST_DIR = Path(__file__).with_name("manifests")
SHOW = 20  # files listed per problem kind in a report
FAILED = ("missing", "mismatch", "corrupt", "error")


class UnknownDatasetError(DataError):
    """A dataset name that neither verify nor the config knows (usually a typo)."""


def load_fingerprints(path: str | os.PathLike = FINGERPRINTS) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in json.loads(Path(path).read_text()).items() if not k.startswith("_")}


def known_names(fingerprints: str | os.PathLike = FINGERPRINTS) -> list[str]:
    return ["synthfer", *load_fingerprints(fingerprints)]


def resolve_names(names: Iterable[str], known: list[str]) -> list[str]:
    """Adapter names for ``names``; config names (``affectnet7``) map to their adapter (``affectnet``)."""
    out, unknown = [], []
    for n in names:
        adapter = FER_DATASETS.get(n, (n, {}))[0]
        if adapter not in known:
            unknown.append(n)
        elif adapter not in out:
            out.append(adapter)
    if unknown:
        raise UnknownDatasetError(f"unknown dataset name(s) {', '.join(map(repr, unknown))}; "
                                  f"known: {', '.join(known)} (and affectnet7, affectnet8)")
    return out


def required_by(cfg) -> list[str]:
    """Datasets the config's stages read: the FER datasets, the inversion train/test sets, the test-only transfer
    datasets of ``analyze_fer`` (``analysis.transfer_datasets``, e.g. FERPlus; SynthFER variants are generated)
    and, when the released protocol runs (``finetune_seeds``), the ASIT fine-tune's dataset."""
    names = [*cfg.data.fer.datasets, cfg.data.inversion.train, cfg.data.inversion.test]
    analysis = cfg.get("analysis")
    names += [d for d in ((analysis.get("transfer_datasets") if analysis is not None else None) or [])
              if FER_DATASETS.get(d, (d, {}))[0] != "synthfer"]
    if cfg.get("finetune_seeds"):
        names.append(cfg.asit_finetune.dataset)
    return resolve_names(names, known_names(cfg.data.fingerprints or FINGERPRINTS))


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
            entry["problems"].append(f"{kind} files: {format_entries(files)}")
            entry[kind] = files[:SHOW]


def _deep(entry: dict[str, Any], root: Path, paths: list[Path], workers: int | None, progress: bool, name: str) -> None:
    """Decode every image as the adapters serve it; bad ones are named (relative to the dataset root) with the
    reason and a count, and files stored rotated or mirrored under an EXIF orientation tag (served upright,
    see docs/data.md) are named in a note, not a failure: the published aligned crops carry none, so such a
    file was re-encoded or rotated by a tool, and the user can check it."""
    def rel(p: Path) -> str:
        return p.relative_to(root).as_posix() if p.is_relative_to(root) else str(p)

    scan = scan_images(paths, workers=workers, progress=f"{name}: decode" if progress else False)
    bad = scan.bad
    entry["decoded"] = len(paths)
    entry["n_bad_images"] = len(bad)
    if bad:
        named = {rel(p): why for p, why in bad.items()}
        entry["bad_images"] = dict(list(sorted(named.items()))[:SHOW])
        entry["problems"].append(f"bad images: {format_entries([f'{f} ({why})' for f, why in sorted(named.items())])}")
        entry["status"] = "corrupt"
    entry["n_exif_oriented"] = len(scan.oriented)
    if scan.oriented:
        oriented = dict(sorted((rel(p), o) for p, o in scan.oriented.items()))
        entry["exif_oriented"] = dict(list(oriented.items())[:SHOW])
        entry["notes"].append(f"{len(oriented)} images carry an EXIF orientation, applied when read (served upright; "
                              f"the published aligned crops carry none, so these were re-encoded or rotated): "
                              f"{format_entries([f'{f} (orientation {o})' for f, o in oriented.items()])}")


def verify_synthfer(ds_root: Path, deep: bool = False, workers: int | None = None, progress: bool = False) -> dict[str, Any]:
    entry: dict[str, Any] = {"status": "ok", "problems": [], "notes": []}
    manifest_path = ds_root / "manifest.json"
    if not manifest_path.exists():
        return {"status": "mismatch", "problems": [f"{manifest_path} missing: regenerate with ifer data"], "notes": []}
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
    if deep:
        _deep(entry, ds_root, [ds_root / f for f in present], workers, progress, "synthfer")
    return entry


def adapter_images(name: str, ds_root: Path, check_splits: bool) -> tuple[list[Path], dict[str, int]]:
    """Every image the adapter reads (all splits, labels checked) and its official split sizes."""
    from ifer.data import open_dataset  # deferred: the adapters import this module's siblings

    if name == "ffhq":
        datasets = [open_dataset("ffhq", ds_root)]
    elif name == "celebahq":
        datasets = [open_dataset("celebahq", ds_root, "all")]
        if check_splits:
            datasets.append(open_dataset("celebahq", ds_root, "test"))
    else:
        datasets = [open_dataset(name, ds_root, split) for split in ("train", "val", "test")]
    paths = sorted({r.path for ds in datasets for r in ds.records})
    last = datasets[-1]
    sizes = last.protocol.get("official_split_sizes") or {last.protocol.get("split", "all"): len(last)}
    return paths, sizes


def verify_real(name: str, ds_root: Path, fp: dict[str, Any], check_splits: bool = True, deep: bool = False,
                workers: int | None = None, progress: bool = False) -> dict[str, Any]:
    entry: dict[str, Any] = {"status": "ok", "problems": [], "notes": [], "expected_count": fp.get("count")}
    try:
        paths, sizes = adapter_images(name, ds_root, check_splits)
    except DataError as exc:  # a layout or label-file problem: the adapter's own one-line message
        entry["problems"].append(f"{type(exc).__name__}: {exc}")
        entry["status"] = "error"
        return entry
    entry["count"] = len(paths)
    if fp.get("count") is not None and len(paths) != fp["count"]:
        entry["problems"].append(f"{len(paths)} images, expected {fp['count']}")
    if check_splits and fp.get("split_sizes"):
        for split, n in fp["split_sizes"].items():
            if sizes.get(split) != n:
                entry["problems"].append(f"{split} split has {sizes.get(split)} samples, protocol says {n}")
    files = matched_files(ds_root, fp["include"])
    if not fp.get("digest"):
        entry["notes"].append(f"digest not recorded ({fp.get('reason', 'no reason given')}); record it with: "
                              f"python -m ifer.data fingerprint --root <datasets> --name {name} --write")
    elif not files:
        entry["notes"].append(f"digest recorded for the layout {fp['include']}, which this copy does not use "
                              f"(e.g. a resized copy): contents not compared")
    else:
        actual = hash_files(ds_root, files)
        if combined_digest(actual) == fp["digest"]:
            entry["digest"] = fp["digest"]
        else:
            entry["problems"].append("combined sha256 digest differs from fingerprints.json")
            if fp.get("manifest"):
                _with_diff(entry, diff_files(read_manifest(Path(__file__).parent / fp["manifest"]), actual))
            else:
                entry["notes"].append("no per-file manifest recorded, so the differing files cannot be named")
    if entry["problems"]:
        entry["status"] = "mismatch"
    elif "digest" not in entry:
        entry["status"] = "unverified"
    if deep:
        _deep(entry, ds_root, paths, workers, progress, name)
    return entry


def verify_datasets(root: str | os.PathLike, names: list[str] | None = None, fingerprints: str | os.PathLike = FINGERPRINTS,
                    check_splits: bool = True, synthfer_root: str | os.PathLike | None = None, *,
                    required: Iterable[str] = (), deep: bool = False, workers: int | None = None,
                    progress: bool = False) -> dict[str, Any]:
    """Verify the datasets under ``root`` and return a JSON-able report with ``ok``.

    ``names=None`` checks every known dataset that is present. Datasets named explicitly, and those in
    ``required`` (what the active profile reads), are failures when absent; others are ``absent``.
    SynthFER is read from ``synthfer_root`` (default ``root/synthfer``). ``deep`` decodes every image in
    ``workers`` processes (default: all CPUs), with a progress bar when ``progress``.
    """
    root = Path(root)
    fps = load_fingerprints(fingerprints)
    known = ["synthfer", *fps]
    checked = resolve_names(names, known) if names else list(known)
    must = set(resolve_names(list(names or []) + list(required), known))
    checked += [n for n in resolve_names(required, known) if n not in checked]
    report: dict[str, Any] = {"root": str(root), "deep": deep, "required": sorted(must), "datasets": {}}
    for name in checked:
        ds_root = Path(synthfer_root) if (name == "synthfer" and synthfer_root) else root / name
        if not ds_root.exists():
            report["datasets"][name] = (
                {"status": "missing", "problems": [f"required but not found: {ds_root}"], "notes": []} if name in must
                else {"status": "absent", "problems": [], "notes": [f"optional; not found at {ds_root}"]})
            continue
        report["datasets"][name] = verify_synthfer(ds_root, deep, workers, progress) if name == "synthfer" else \
            verify_real(name, ds_root, fps[name], check_splits, deep, workers, progress)
    report["ok"] = not any(d["status"] in FAILED for d in report["datasets"].values())
    return report


def fingerprint(root: str | os.PathLike, name: str, write: bool = False, fingerprints: Path = FINGERPRINTS) -> dict[str, Any]:
    """Compute ``name``'s fingerprint under ``root/name``; with ``write``, record it (and a per-file manifest).

    ``count`` is the number of images the adapter reads; the digest covers the ``include`` files.
    """
    fps = json.loads(Path(fingerprints).read_text())
    if name not in fps or name.startswith("_"):
        raise UnknownDatasetError(f"no fingerprint entry for {name!r}; known: {[k for k in fps if not k.startswith('_')]}")
    ds_root = Path(root) / name
    if not ds_root.exists():
        raise DataError(f"[{name}] {ds_root} not found")
    files = hash_files(ds_root, matched_files(ds_root, fps[name]["include"]))
    entry = dict(fps[name], count=len(adapter_images(name, ds_root, check_splits=False)[0]), digest=combined_digest(files))
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
    """The human-readable report ``ifer verify`` prints: one block per dataset, problems first."""
    datasets = report["datasets"]
    failed = [n for n, d in datasets.items() if d["status"] in FAILED]
    head = "OK" if report["ok"] else f"FAILED ({len(failed)} of {len(datasets)}: {', '.join(failed)})"
    lines = [f"verify {report['root']}{' --deep' if report.get('deep') else ''}: {head}"]
    for name, d in datasets.items():
        counts = ""
        if "count" in d:
            exp = d.get("expected_count")
            counts = f"  {d['count']} images" + (f" (expected {exp})" if exp is not None else " (no expected count)")
        if "decoded" in d:
            counts += f", {d['decoded']} decoded, {d['n_bad_images']} bad"
        lines.append(f"  {name:10s} {d['status']:10s}{counts}".rstrip())
        lines += [f"      - {p}" for p in d.get("problems", [])]
        lines += [f"      . {n}" for n in d.get("notes", [])]
    return "\n".join(lines)


def write_report(report: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write a verify report as JSON (``results/<profile>/data_check.json`` in the DVC verify stage)."""
    return atomic_write_json(path, report)


def run_verify(root: str | os.PathLike, names: list[str] | None = None, *, required: Iterable[str] = (),
               deep: bool = False, workers: int | None = None, out: str | os.PathLike | None = None,
               synthfer_root: str | os.PathLike | None = None, fingerprints: str | os.PathLike | None = None,
               check_splits: bool = True) -> int:
    """Verify, print the report, optionally write it as JSON; exit status 0 (ok) or 1 (a dataset failed).

    The shared body of ``ifer verify`` and ``python -m ifer.data verify``.
    """
    import sys

    report = verify_datasets(root, names, fingerprints or FINGERPRINTS, check_splits, synthfer_root,
                             required=required, deep=deep, workers=workers, progress=deep and sys.stderr.isatty())
    print(format_report(report), flush=True)
    if out:
        write_report(report, out)
    return 0 if report["ok"] else 1
