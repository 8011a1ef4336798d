"""Run the rehearsal: a scratch copy of the repository, the rehearsal data and weights, ``dvc repro`` (the last
stages through ``ifer launch``).

The scratch copy (``<scratch>/work``) holds the tracked and untracked-but-not-ignored files of the checkout,
so the run uses the code as it is on disk and never touches the checkout's ``results/``, ``runs/`` or
``dvc.lock``. Its ``datasets`` and ``weights`` folders link to ``<scratch>/root``, written once by
:func:`write_root`. One line per stage is printed (with its wall time), then the tables written::

    python -m ifer.rehearsal run --scratch .rehearsal
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ifer.rehearsal.datasets import SUBSET_LISTS, WRITERS, write_datasets
from ifer.rehearsal.weights import FILES, OFFICIAL_FILES, write_official_checkpoints, write_weights

PROFILE_LAYER = Path("ifer") / "configs" / "profiles" / "rehearse.yaml"
_STAGE_LINE = re.compile(r"^Running stage '([^']+)'")
_LAUNCH_DONE = re.compile(r"^ifer launch: (\S+) done in ([0-9.]+) s$")  # ifer.launch: one line per finished job
# the stages `ifer launch` runs at the end of the rehearsal (see run); the others run under `dvc repro`
LAUNCHED = ("eval_fer", "analyze_fer", "report")


class RehearsalError(RuntimeError):
    """A stage failed or the report lacks what the protocol promises; the message says which."""


def write_root(root: str | os.PathLike, seed: int = 0) -> dict[str, dict[str, Path]]:
    """``<root>/datasets/<name>`` (miniature real layouts) with ``<root>/datasets/fingerprints.json`` (their
    fingerprints, for ``data.fingerprints``) and ``<root>/weights/<file>`` (random upstream formats)."""
    from ifer.data.verify import FINGERPRINTS

    root = Path(root)
    written = {"datasets": write_datasets(root / "datasets", seed=seed)}
    fps = root / "datasets" / "fingerprints.json"
    fps.write_text(json.dumps(rehearsal_fingerprints(root / "datasets", FINGERPRINTS), indent=2) + "\n")
    written["datasets"]["fingerprints"] = fps
    written["weights"] = write_weights(root / "weights", seed=seed)
    # the authors' two released kinds (IFER on RAF-DB, ASIT on FFHQ) in their layouts, for `ifer eval-checkpoint`
    written["official"] = write_official_checkpoints(root / "weights", seed=seed)
    return written


def _ensure_root(root: Path, seed: int) -> None:
    stamp = root / ".complete"
    # the seed and the file lists: a root written by an older version (fewer files) is written again
    want = json.dumps({"seed": seed, "weights": FILES, "official": OFFICIAL_FILES, "lists": SUBSET_LISTS},
                      sort_keys=True)
    if stamp.is_file() and stamp.read_text() == want:
        return
    if root.exists():
        shutil.rmtree(root)
    write_root(root, seed)
    stamp.write_text(want)


def copy_checkout(repo: Path, work: Path) -> int:
    """Copy the checkout's tracked and untracked-not-ignored files into a fresh ``work``; returns the count."""
    files = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           check=True, capture_output=True).stdout.decode().split("\0")
    if work.exists():
        shutil.rmtree(work)
    n = 0
    for rel in filter(None, dict.fromkeys(files)):
        src = repo / rel
        if not src.is_file():  # deleted in the working tree but still in the index
            continue
        dst = work / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
        n += 1
    return n


def rehearsal_fingerprints(datasets: Path, template: Path) -> dict:
    """``fingerprints.json`` content for the miniature datasets: their file counts, split sizes and digests.

    The packaged file expects the published counts (70,000 FFHQ images, ...), which a miniature copy can never
    have; the rehearsal profile points ``data.fingerprints`` at this one, so ``verify`` checks the rehearsal
    data as strictly as a maintainer's recorded fingerprint would (digest included) instead of being skipped.
    """
    from ifer.data import open_dataset
    from ifer.data.verify import fingerprint

    fps = json.loads(Path(template).read_text())
    for name in (n for n in WRITERS if (Path(datasets) / n).is_dir()):
        fp = fps[name] = fingerprint(datasets, name, fingerprints=template)  # count + digest, as verify computes them
        fp.update(manifest=None, reason="rehearsal: miniature copy written by ifer.rehearsal, not the real dataset")
        if fp.get("split_sizes"):
            ds = open_dataset(name, Path(datasets) / name, split="test")
            sizes = ds.protocol.get("official_split_sizes") or {"test": len(ds)}
            fp["split_sizes"] = {k: sizes[k] for k in fp["split_sizes"]}
    return fps


def _env(python: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{python.parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("PYTHONHASHSEED", "0")
    # OMP_NUM_THREADS is the caller's: under `nox -s tests` (one thread per xdist worker) giving the stages 2 threads
    # beside the other 1-thread worker oversubscribed the 2 cores and ran ~2x slower (measured 2026-11-29).
    return env


def check_report(results: Path, methods: list[str], datasets: list[str], protocols: list[str] = ("clean",),
                 subsets: list[dict] = (), transfer_only: list[str] = ()) -> list[str]:
    """Problems with the rehearsal's outputs: a missing protocol x method x dataset result or table cell, LPIPS /
    ID / FID not numbers."""
    import pandas as pd

    problems = []
    fer = json.loads((results / "fer_metrics.json").read_text())
    have = {(r.get("protocol") or "clean", r["method"], r["dataset"]) for r in fer["rows"]}
    problems += [f"fer_metrics.json has no row for {p} x {m} x {d}" for p in protocols for m in methods
                 for d in datasets if (p, m, d) not in have]
    table = pd.read_csv(results / "fer_comparison.csv")
    for m in methods:
        for d in datasets:
            rows = table[(table["method"] == m) & (table["dataset"] == d)]
            if rows.empty:
                problems.append(f"fer_comparison.csv has no row for {m} x {d}")
                continue
            problems += [f"fer_comparison.csv: {m} x {d} has no {p} estimate" for p in protocols
                         if f"{p}_mean" not in rows or rows[f"{p}_mean"].isna().all()]
            if {"clean", "released"} <= set(protocols) and rows["delta_released_minus_clean"].isna().all():
                problems.append(f"fer_comparison.csv: {m} x {d} has no released - clean delta")
    # the analyses beyond accuracy (issue 21): every run analysed, every table written, the transfer matrix full
    analysis = json.loads((results / "analysis_metrics.json").read_text())
    seen = {(r["protocol"], r["method"], r["dataset"]) for r in analysis["runs"]}
    analysed = analysis.get("protocols_analysed") or []
    problems += [f"analysis_metrics.json analyses {analysed}, not a subset of {list(protocols)}"
                 for _ in [0] if not analysed or not set(analysed) <= set(protocols)]
    problems += [f"analysis_metrics.json has no run for {p} x {m} x {d}" for p in analysed for m in methods
                 for d in datasets if (p, m, d) not in seen]
    problems += [f"analysis_metrics.json: {r['protocol']} x {r['method']} x {r['dataset']} transfers to "
                 f"{sorted(r['transfer'])}, not to every other dataset" for r in analysis["runs"]
                 if set(r["transfer"]) != (set(datasets) | set(transfer_only)) - {r["dataset"]}]
    # a test-only dataset with classes the training sets lack (FERPlus contempt) is scored on the shared ones
    problems += [f"analysis_metrics.json: {r['method']} x {r['dataset']} -> {t}: class map {cm} is not the 7 "
                 f"basic expressions by name" for r in analysis["runs"] for t in transfer_only
                 if (cm := (r["transfer"].get(t) or {}).get("class_map")) is not None
                 and (len(cm) != 7 or any(k != v for k, v in cm.items()))]
    problems += [f"analysis_metrics.json: no cost for {m}" for m in methods if m not in analysis["cost"]]
    # every configured subset list scored for every analysed method, and its table written
    got = {(x["protocol"], x["dataset"], x["subset"]): x for x in analysis.get("subsets") or []}
    for p in analysed:
        for want in subsets:
            x = got.get((p, want["dataset"], want["name"]))
            if x is None:
                problems.append(f"analysis_metrics.json: no {p} result for subset {want['name']} of {want['dataset']}")
            elif set(x["methods"]) != set(methods):
                problems.append(f"analysis_metrics.json: subset {want['name']} scored {sorted(x['methods'])}, "
                                f"not {sorted(methods)}")
    if subsets and not (results / "fer_subsets.md").is_file():
        problems.append("fer_subsets.md was not written")
    # corruption parameters are stated per input size (paper: KE2NT at 112 px, the others at 224)
    params_sizes = set(analysis["protocols"].get("corruption_parameters") or {})
    problems += [f"analysis_metrics.json: {r['method']} was corrupted at {r['corruptions'].get('input_size')} px, "
                 f"but corruption_parameters states sizes {sorted(params_sizes)}" for r in analysis["runs"]
                 if str(r["corruptions"].get("input_size")) not in params_sizes]
    problems += [f"{n} was not written" for n in ("fer_cost.md", "fer_calibration.md", "fer_corruptions.md",
                                                  "fer_transfer.md") if not (results / n).is_file()]
    inv = json.loads((results / "inversion_metrics.json").read_text())["methods"]["asit"]
    for prefix in ("lpips", "id_sim", "fid"):
        found = {k: v for k, v in inv.items() if k.startswith(prefix)}
        if not found:
            problems.append(f"inversion_metrics.json has no {prefix}* metric for asit")
        problems += [f"inversion_metrics.json: {k} = {v!r} is not a number" for k, v in found.items()
                     if not (isinstance(v, (int, float)) and math.isfinite(v))]
    return problems


def check_checkpoints(work: Path, params: dict, python: Path, env: dict, log=print, parallel: int = 2) -> list[str]:
    """What a user does with the trained files, under ``paper``: ``ifer predict`` on a real photo (matplotlib's
    Grace Hopper portrait) with each method's ``best.pt`` and no ``--method`` (the file says what it is), and
    ``ifer eval-checkpoint`` on one of them and on the official-layout IFER and ASIT files (``OFFICIAL_FILES``).
    The commands are independent: ``parallel`` of them run at once (each with the caller's OMP_NUM_THREADS).
    Returns the problems (a failed command, no prediction, an assumption or metric not printed)."""
    import csv
    from concurrent.futures import ThreadPoolExecutor

    import matplotlib

    photos = work / "photos"
    photos.mkdir(exist_ok=True)
    shutil.copy(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg", photos / "hopper.jpg")
    runs = work / params["paths"]["runs"] / params["profile"] / "fer"
    problems, first = [], None
    checks = []  # (argv, judge(proc, seconds) -> (problem or None, log line or None))
    for method in params["methods"]:
        found = sorted(runs.glob(f"clean/{method}/*/seed*/best.pt"))
        if not found:
            problems.append(f"no clean best.pt of {method} under {runs}")
            continue
        first = first or (method, found[0])
        out = work / f"predict_{method}.csv"

        def judge(proc, dt, out=out, method=method, ckpt=found[0]):
            rows = list(csv.DictReader(out.open())) if out.is_file() else []
            if proc.returncode != 0 or not rows or not rows[0]["predicted"]:
                return (f"ifer predict --checkpoint {ckpt} (no --method) failed (exit {proc.returncode}): "
                        f"{(proc.stderr.strip().splitlines() or ['no prediction'])[-1]}"), None
            return None, f"predict with {method} best.pt (no --method): {rows[0]['predicted']} ({dt:.1f} s)"
        checks.append(([str(python), "-m", "ifer.cli", "predict", str(photos), "--checkpoint", str(found[0]),
                        "--params", "params.yaml", "--precision", "fp32", "--out", str(out)], judge))
    if first is not None:
        method, ckpt = first
        dataset = ckpt.parts[-3]

        def judge(proc, dt, method=method, ckpt=ckpt, dataset=dataset):
            if proc.returncode != 0 or "what the file is: recorded in the file (meta)" not in proc.stdout:
                return (f"ifer eval-checkpoint {ckpt} failed (exit {proc.returncode}): "
                        f"{(proc.stderr.strip().splitlines() or ['no choices printed'])[-1]}"), None
            return None, f"eval-checkpoint {method} best.pt on {dataset}: ok ({dt:.1f} s)"
        checks.append(([str(python), "-m", "ifer.cli", "eval-checkpoint", str(ckpt), "--dataset", dataset,
                        "--params", "params.yaml", "--out", str(work / "eval_checkpoint.json")], judge))
    # the authors' released kinds under `paper`: IFER built as_released and normalised from its own args (every
    # value it leaves unset printed as an assumption); ASIT with the paper's LPIPS, ID (CurricularFace) and FID
    # files, the wiring eval-checkpoint once got wrong (issue 18)
    expect = {"ifer": ("rafdb", ["model: ifer_base, mode as_released", "assumption: mean: args.mean is unset"]),
              "asit": (params["data"]["inversion"]["test"], ["mode as_released", "the authors' code, as_released",
                                                              "id_sim", "fid"])}
    for kind, rel in OFFICIAL_FILES.items():
        dataset, needles = expect[kind]
        ckpt = work / "weights" / rel

        def judge(proc, dt, kind=kind, ckpt=ckpt, dataset=dataset, needles=needles):
            missing = [n for n in needles if n not in proc.stdout]
            if proc.returncode != 0 or missing:
                return (f"ifer eval-checkpoint {ckpt} (official {kind} layout) failed (exit {proc.returncode})"
                        + (f"; output lacks {missing}" if missing else "") + ": "
                        + f"{(proc.stderr.strip().splitlines() or ['-'])[-1]}"), None
            return None, f"eval-checkpoint official {kind} file on {dataset}: ok ({dt:.1f} s)"
        checks.append(([str(python), "-m", "ifer.cli", "eval-checkpoint", str(ckpt), "--dataset", dataset,
                        "--params", "params.yaml", "--out", str(work / f"eval_official_{kind}.json")], judge))

    def timed(argv):
        t0 = time.perf_counter()
        proc = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True)
        return proc, time.perf_counter() - t0

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        done = list(pool.map(timed, [argv for argv, _ in checks]))
    for (_, judge), (proc, dt) in zip(checks, done):  # judged and logged in order, whatever finished first
        problem, line = judge(proc, dt)
        if problem:
            problems.append(problem)
        else:
            log(line)
    return problems


def run(scratch: str | os.PathLike = ".rehearsal", repo: str | os.PathLike = ".", seed: int = 0,
        python: str | os.PathLike | None = None, log=print) -> dict:
    """Write the rehearsal inputs, run ``dvc repro`` on the ``paper`` profile + ``rehearse`` layer in a scratch
    copy (eval_fer, analyze_fer and report through ``ifer launch``, 2 at a time), print one line per stage and
    return ``{"stages": {name: seconds}, "tables": [...], "total_s": ...}``."""
    scratch, repo = Path(scratch).resolve(), Path(repo).resolve()
    python = Path(python or sys.executable)
    t0 = time.perf_counter()
    _ensure_root(scratch / "root", seed)
    log(f"rehearsal inputs: {scratch / 'root'} ({time.perf_counter() - t0:.1f} s)")
    work = scratch / "work"
    n = copy_checkout(repo, work)
    for name in ("datasets", "weights"):
        (work / name).symlink_to(scratch / "root" / name, target_is_directory=True)
    # datasets.dvc tracks the licensed data of a real checkout; here datasets/ is the rehearsal's.
    (work / "datasets.dvc").unlink(missing_ok=True)
    env = _env(python)
    subprocess.run([str(python), "-m", "ifer.cli", "config", "--profile", "paper", "--params", str(PROFILE_LAYER),
                    "--out", "params.yaml"], cwd=work, env=env, check=True)
    # The copy has the checkout's .dvc/ (config, remotes) but no git: DVC must be told not to look for one.
    dvc_setup = ["config", "--local", "core.no_scm", "true"] if (work / ".dvc").is_dir() else ["init", "--no-scm", "--quiet"]
    subprocess.run([str(python), "-m", "dvc", *dvc_setup], cwd=work, env=env, check=True)
    import yaml

    # Every stage but the last three under `dvc repro` (what a user of one machine runs); then eval_fer and
    # analyze_fer, which both need every FER run and not each other, side by side under `ifer launch --executor
    # local --parallel 2` (one thread each), then report. They were ~30 % of the serial rehearsal (189 + 253 of
    # 1476 s on the AVX-512 EPYC): side by side they use a core the other xdist worker leaves idle once it is done
    # (on the AVX2 EPYC it was still busy then, and the gain was small: docs/performance.md).
    # launch records them in dvc.lock and checks that `dvc status` is clean and `dvc repro` has nothing to run.
    names = list(yaml.safe_load((work / "dvc.yaml").read_text())["stages"])
    head = [s for s in names if s not in LAUNCHED]
    log(f"scratch copy: {work} ({n} files); dvc repro {' '.join(head)}, then ifer launch of {', '.join(LAUNCHED)}")
    stages: dict[str, float] = {}
    with open(scratch / "dvc_repro.log", "w") as full_log:
        for cmd in ([str(python), "-m", "dvc", "repro", *head],
                    [str(python), "-m", "ifer.cli", "launch", "--executor", "local", "--parallel", "2"]):
            _run_logged(cmd, work, env, full_log, stages, log, scratch)
    params = yaml.safe_load((work / "params.yaml").read_text())
    results = work / params["paths"]["results"] / params["profile"]
    problems = check_report(results, params["methods"], params["data"]["fer"]["datasets"],
                            params.get("protocols") or ["clean"], (params.get("analysis") or {}).get("subsets") or [],
                            (params.get("analysis") or {}).get("transfer_datasets") or [])
    problems += check_checkpoints(work, params, python, env, log)
    if problems:
        raise RehearsalError("rehearsal report incomplete: " + "; ".join(problems))
    tables = sorted(str(p) for p in results.glob("*_comparison.*"))
    summary = {"stages": stages, "tables": tables, "total_s": time.perf_counter() - t0}
    (scratch / "timings.json").write_text(json.dumps(summary, indent=1) + "\n")
    for t in tables:
        log(f"table: {t}")
    log(f"rehearsal passed in {summary['total_s']:.0f} s; stage timings in {scratch / 'timings.json'}")
    return summary


def _run_logged(cmd: list[str], work: Path, env: dict, full_log, stages: dict[str, float], log, scratch: Path) -> None:
    """Run ``cmd`` in ``work``, its output into ``full_log``; each stage's wall time into ``stages``: from ``dvc
    repro``'s ``Running stage`` lines (the time to the next one), or from ``ifer launch``'s per-job ``done in``
    lines. Raises :class:`RehearsalError` with the last lines when it fails."""
    current, started, tail = None, time.perf_counter(), []
    full_log.write(f"$ {' '.join(cmd)}\n")
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1)
    for line in proc.stdout:
        full_log.write(line)
        full_log.flush()
        tail = (tail + [line.rstrip()])[-40:]
        m, done = _STAGE_LINE.match(line), _LAUNCH_DONE.match(line.rstrip())
        if m:
            now = time.perf_counter()
            if current is not None:
                stages[current] = now - started
                log(f"stage {current}: ok ({stages[current]:.1f} s)")
            current, started = m.group(1), now
        elif done:  # a stage dvc repro ran already (fingerprint_inputs: always_changed) keeps both times
            name = done.group(1) if done.group(1) not in stages else f"{done.group(1)} (again, ifer launch)"
            stages[name] = float(done.group(2))
            log(f"stage {name}: ok ({stages[name]:.1f} s, ifer launch)")
    rc = proc.wait()
    if current is not None:
        stages[current] = time.perf_counter() - started
        log(f"stage {current}: {'ok' if rc == 0 else 'FAILED'} ({stages[current]:.1f} s)")
    if rc != 0:
        raise RehearsalError(f"{' '.join(cmd[2:4])} failed (exit {rc}) in {work}; full log {scratch / 'dvc_repro.log'}; "
                             "last lines:\n" + "\n".join(tail))
