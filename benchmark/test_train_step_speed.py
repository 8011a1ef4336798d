"""Keep the main job fast: one training step of each tiny model, timed against a fixed GEMM in the same run.

An absolute step time says more about the machine (and what else runs on it) than about the code, so each step
is timed interleaved with a reference workload (a 1024 x 1024 fp32 matmul chain, fixed FLOPs) and the *ratio*
``step median / reference median`` is compared with the ratio recorded for this CPU model and thread count in
``results/benchmarks/train-step-ratios.json``. The test fails when a step is more than ``SLOWDOWN_GATE`` (1.3x)
slower relative to the reference than recorded. Measured on a 2-core Xeon (2 threads): undoing both the
StyleGAN2 activation modulation and the bf16 path makes the ifer_tiny step 1.34x slower (254 vs 189 ms) and fails
it; either alone (~1.16x) does not: the gate catches marked slowdowns, not small ones. Two runs' ratios agreed
within 6 %. The ``ifer_tiny`` step is the main job's hottest stage
(train_fer of IFER: 3 runs x 416 steps). The 2-core AMD EPYC (avx512_bf16) record is the median of 5 runs
(2026-12-07; ifer_tiny ratios 1.90, 2.28, 2.28, 2.29, 2.31: one run's step took 178 ms, the others 220 ms; the
largest ratio of any model was 1.05x its median, well inside the gate). Each line also states the step's
matmul/conv FLOP rate against the CPU's dense peak (``ifer.bench.steps.step_flops``, ``cpu_peak``): on that EPYC
ifer_tiny reaches 0.10-0.13 TFLOP/s, 31-38 % of the bf16 peak (62-76 % of the fp32 peak).

    pytest benchmark/test_train_step_speed.py --benchmark-only -s                 # check against the record
    IFER_RECORD_RATIOS=1 pytest benchmark/test_train_step_speed.py --benchmark-only -s   # (re)record this CPU

A CPU with no recorded ratio skips with the command that records one.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from ifer.bench.steps import step_flops, training_step
from ifer.bench.timers import measure_interleaved
from ifer.core.machine import cpu_name, cpu_peak, native_bf16

RECORD = Path(__file__).resolve().parents[1] / "results" / "benchmarks" / "train-step-ratios.json"
SLOWDOWN_GATE = 1.3
MODELS = ["ifer_tiny", "fer_resnet18_tiny", "disentangled_tiny", "asit_tiny"]
BATCH = {"asit_tiny": 8}  # the tiny profile's batch sizes (ASIT 8, FER 32)


def _reference(n: int = 1024, reps: int = 8):
    a, b = torch.randn(n, n), torch.randn(n, n)

    def run():
        out = a
        for _ in range(reps):
            out = torch.mm(b, out) * (1.0 / n)
        return out
    return run


def _step(name: str, amp: bool):
    return training_step(name, 64, BATCH.get(name, 32), "bf16" if amp else "fp32", "cpu")


def _key(amp: bool) -> str:
    return f"{cpu_name()} | threads {torch.get_num_threads()} | {'bf16' if amp else 'fp32'}"


@pytest.mark.parametrize("name", MODELS)
def test_training_step_not_slower_than_recorded(benchmark, name):
    amp = name != "asit_tiny" and native_bf16()  # the tiny recipe: bf16 FER training where native, ASIT fp32
    step, ref = _step(name, amp), _reference()
    res = benchmark.pedantic(lambda: measure_interleaved({"step": step, "ref": ref}, warmup=3, iters=9),
                             rounds=1, iterations=1)
    ratio = res["step"]["median_s"] / res["ref"]["median_s"]
    # beside the time, the physical limit: matmul/conv FLOPs of the step over its median, against the dense peak of
    # this CPU at these threads in the step's precision (ifer.core.machine.cpu_peak)
    achieved = step_flops(step) / res["step"]["median_s"] / 1e12
    peak = cpu_peak("bf16" if amp else "fp32", torch.get_num_threads())["tflops"]
    benchmark.extra_info.update({"ratio": ratio, "step_median_s": res["step"]["median_s"],
                                 "ref_median_s": res["ref"]["median_s"], "key": _key(amp),
                                 "achieved_tflops": achieved, "peak_tflops": peak})
    bound = (f"{100 * achieved / peak:.0f} % of the {'bf16' if amp else 'fp32'} peak {peak:.3f}" if peak
             else "peak unknown for this CPU")
    print(f"\n{name}: step {res['step']['median_s'] * 1e3:.0f} ms, reference {res['ref']['median_s'] * 1e3:.0f} ms, "
          f"ratio {ratio:.3f} ({_key(amp)}); {achieved:.3f} TFLOP/s of matmul/conv work = {bound}")
    records = json.loads(RECORD.read_text()) if RECORD.is_file() else {}
    key = _key(amp)
    if os.environ.get("IFER_RECORD_RATIOS"):
        records.setdefault(key, {})[name] = round(ratio, 4)
        RECORD.parent.mkdir(parents=True, exist_ok=True)
        RECORD.write_text(json.dumps(records, indent=1, sort_keys=True) + "\n")
        return
    recorded = records.get(key, {}).get(name)
    if recorded is None:
        pytest.skip(f"no recorded ratio for {key!r}: record one with IFER_RECORD_RATIOS=1 pytest {__file__}")
    assert ratio <= SLOWDOWN_GATE * recorded, (
        f"{name} training step is {ratio / recorded:.2f}x slower relative to the reference GEMM than recorded "
        f"({ratio:.3f} vs {recorded:.3f}, gate {SLOWDOWN_GATE}x) on {key}")
