"""Inference throughput (images/s, median) of the ASIT encoder, StyleGAN2 generator, inversion and IFER.

Each test times the prepared fast path (``ifer.bench.fastpath``), then checks the timed output against the
plain fp32 eager output of the same weights within the precision's ``PARITY_RTOL``. CPU runs the 64-px
``tiny`` models; CUDA the 256-px ``base`` models (and ``torch.compile``)::

    pytest benchmark/test_throughput.py --benchmark-only --benchmark-json .benchmarks/throughput.json
    pytest benchmark/test_throughput.py -k "not_slower or bf16_speedup" --benchmark-only -s   # the CPU gates

Every row reports its fraction of the machine's peak (GPU: datasheet; CPU: ``ifer.core.machine.cpu_peak``).
"""
from __future__ import annotations

import time

import pytest
import torch

from ifer.bench.fastpath import PARITY_RTOL, InferenceOptions, prepare_for_inference, relative_error
from ifer.bench.throughput import BenchModule, ThroughputRecord, device_tag, gmacs_per_image, peak_tflops
from ifer.bench.timers import measure_interleaved, synchronize
from ifer.core.machine import cpu_peak
from ifer.eval.predict import native_bf16

MODELS = {  # kind -> (CPU model, CUDA model)
    "encoder": ("asit_encoder_tiny", "asit_encoder_base"),
    "generator": ("stylegan2_generator_64_tiny", "stylegan2_generator_256"),
    "inversion": ("asit_tiny", "asit_base"),
    "ifer": ("ifer_tiny", "ifer_base"),
}
BATCH_SIZES = {"cpu": (1, 4, 16), "cuda": (1, 4, 16, 64)}
ROUNDS = {"cpu": 3, "cuda": 30}
WARMUP = {"cpu": 1, "cuda": 5}


def _reference(name: str, x: torch.Tensor):
    with torch.no_grad():
        return BenchModule(name).to(x.device)(x)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("batch_size", sorted({b for bs in BATCH_SIZES.values() for b in bs}))
@pytest.mark.parametrize("kind", list(MODELS))
def test_throughput(benchmark, record_throughput, device, kind, batch_size, precision, compiled):
    if batch_size not in BATCH_SIZES[device]:
        pytest.skip(f"batch {batch_size} is measured on CUDA only (keeps the CPU run short)")
    if device == "cpu" and precision == "bf16" and batch_size > 4:
        pytest.skip("CPU bf16: batches 1 and 4 suffice (without avx512_bf16/AMX it is emulated, 2-3x slower than fp32)")
    if compiled and device == "cpu":
        pytest.skip("torch.compile is not timed on CPU (inductor needs minutes per model on 2 cores)")
    name = MODELS[kind][device == "cuda"]
    options = InferenceOptions(channels_last=True, bf16=precision == "bf16", fused_attn=True, compile=compiled)
    module = BenchModule(name).to(device)
    x = module.example_input(batch_size)
    run = prepare_for_inference(module, options)

    def step():
        out = run(x)
        synchronize()  # the timed interval must contain the GPU work, whatever timer pytest-benchmark uses
        return out

    # warm-up rounds absorb compilation, cuDNN autotuning and oneDNN weight packing
    out = benchmark.pedantic(step, rounds=ROUNDS[device], warmup_rounds=WARMUP[device], iterations=1)

    err = relative_error(out, _reference(name, x))
    assert err <= PARITY_RTOL[precision], f"{name} {options.label()}: relative error {err:.2e}"
    if benchmark.stats is None:  # --benchmark-disable: correctness only
        return
    data = sorted(benchmark.stats.stats.data)
    median = benchmark.stats.stats.median
    record_throughput(ThroughputRecord(
        model=name, device=device_tag(device), batch_size=batch_size, precision=precision,
        channels_last=options.channels_last, compiled=compiled, fused_attn=options.fused_attn,
        img_size=module.img_size, images_per_s=batch_size / median, step_time_ms_median=1e3 * median,
        step_time_ms_p10=1e3 * data[int(0.1 * (len(data) - 1))], step_time_ms_p90=1e3 * data[round(0.9 * (len(data) - 1))],
        gmacs_per_image=gmacs_per_image(name), peak_tflops=_peak(device, precision)))


def _peak(device: str, precision: str) -> float | None:
    """TFLOP/s peak: the GPU datasheet figure, or the CPU's from its flags, clock and threads (``cpu_peak``)."""
    return peak_tflops(device, precision) if device == "cuda" else cpu_peak(precision)["tflops"]


#: fp32 fast path vs plain fp32: "not slower" allows this much of the fast path's median over plain's. It is the
#: spread between two identical paths timed interleaved on a shared 2-core runner, not a performance target.
NOISE_MARGIN = 0.10
#: bf16 (native, oneDNN AVX-512 BF16 / AMX) vs plain fp32 for the 256-px base IFER at batch >= 4: the peak
#: ratio is 2x (``cpu_peak``); 2.5x was measured (issue 13), since bf16 also halves the memory traffic.
BF16_SPEEDUP_GATE = 2.0
GATE_OPTIONS = InferenceOptions(channels_last=True, fused_attn=True)


def warm_until_settled(fn, rel: float = 0.15, min_calls: int = 2, max_calls: int = 8) -> list[float]:
    """Call ``fn`` until two consecutive timings agree within ``rel`` (bf16's first calls pack weights and
    take 10-40x longer); returns the warm-up timings. Never more than ``max_calls`` calls."""
    times: list[float] = []
    for _ in range(max_calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= min_calls and abs(times[-1] - times[-2]) <= rel * min(times[-1], times[-2]):
            break
    return times


def _gate_rows(record_throughput, name, batch_size, img_size, res, paths):
    gmacs = gmacs_per_image(name)
    for label, (options, precision) in paths.items():
        r = res[label]
        record_throughput(ThroughputRecord(
            model=f"{name}[{label}:{options.label()}]", device="cpu", batch_size=batch_size, precision=precision,
            channels_last=options.channels_last, compiled=options.compile, fused_attn=options.fused_attn,
            img_size=img_size, images_per_s=r["images_per_s"], step_time_ms_median=1e3 * r["median_s"],
            step_time_ms_p10=1e3 * r["p10"], step_time_ms_p90=1e3 * r["p90"], gmacs_per_image=gmacs,
            peak_tflops=_peak("cpu", precision)))


def _interleaved(benchmark, fns, batch_size, iters):
    for fn in fns.values():
        warm_until_settled(fn)
    return benchmark.pedantic(measure_interleaved, args=(fns,), kwargs={"warmup": 0, "iters": iters,
                                                                        "batch_size": batch_size},
                              rounds=1, iterations=1)


def test_encoder_cpu_fp32_fast_path_not_slower(benchmark, record_throughput):
    """as_described base encoder, eval, 256 px, batch 1, CPU: fp32 fast path (SDPA + NHWC) is not slower than
    plain fp32 eager (median within ``NOISE_MARGIN``), at 1e-4 parity.

    Plain fp32 already runs near the FMA peak (70-83 % measured), so no large fp32 speed-up is physically
    available; the gate guards against the fast path regressing. Both paths run the same weights, alternating
    call by call (``measure_interleaved``), so load from other processes hits both alike.
    """
    name, batch_size = "asit_encoder_base", 1
    plain = BenchModule(name)
    fast_module = BenchModule(name)
    fast_module.load_state_dict(plain.state_dict())
    x = plain.example_input(batch_size)
    fast = prepare_for_inference(fast_module, GATE_OPTIONS)

    def plain_step():
        with torch.no_grad():  # the straightforward eager forward a user would write
            return plain(x)

    res = _interleaved(benchmark, {"plain": plain_step, "fast": lambda: fast(x)}, batch_size, iters=5)
    ratio = res["plain"]["median_s"] / res["fast"]["median_s"]
    err = relative_error(res["fast"]["output"], res["plain"]["output"])
    _gate_rows(record_throughput, name, batch_size, plain.img_size, res,
               {"plain": (InferenceOptions(), "fp32"), "fast": (GATE_OPTIONS, "fp32")})
    benchmark.extra_info.update({"speedup": ratio, "relative_error": err, "fast_options": GATE_OPTIONS.label(),
                                 "noise_margin": NOISE_MARGIN, "plain_median_s": res["plain"]["median_s"],
                                 "fast_median_s": res["fast"]["median_s"]})
    print(f"\n{name} CPU batch {batch_size}: plain {res['plain']['median_s']:.2f} s, "
          f"fast ({GATE_OPTIONS.label()}) {res['fast']['median_s']:.2f} s, speed-up {ratio:.2f}x, rel. error {err:.1e}")
    assert err <= PARITY_RTOL["fp32"], f"fast path differs from plain eager: relative error {err:.2e}"
    assert res["fast"]["median_s"] <= (1 + NOISE_MARGIN) * res["plain"]["median_s"], \
        f"fp32 fast path slower than plain beyond the {NOISE_MARGIN:.0%} noise margin: " \
        f"fast {res['fast']['median_s']:.2f} s vs plain {res['plain']['median_s']:.2f} s"


def test_ifer_base_cpu_bf16_speedup(benchmark, record_throughput):
    """256-px base IFER, batch 4, CPU: bf16 fast path >= 2x plain fp32 eager where the CPU has native bf16.

    Agreement of the predictions is a policy of ``ifer predict`` (measured per trained checkpoint), not this
    gate: random weights say nothing about it; the output must still lie within the bf16 parity bound.
    """
    has_bf16, why = native_bf16()
    if not has_bf16:
        pytest.skip(f"no native bf16: {why}")
    name, batch_size = "ifer_base", 4
    plain = BenchModule(name)
    fast_module = BenchModule(name)
    fast_module.load_state_dict(plain.state_dict())
    x = plain.example_input(batch_size)
    options = InferenceOptions(channels_last=True, fused_attn=True, bf16=True)
    fast = prepare_for_inference(fast_module, options)

    def plain_step():
        with torch.no_grad():
            return plain(x)

    res = _interleaved(benchmark, {"plain": plain_step, "bf16": lambda: fast(x)}, batch_size, iters=3)
    ratio = res["plain"]["median_s"] / res["bf16"]["median_s"]
    err = relative_error(res["bf16"]["output"], res["plain"]["output"])
    _gate_rows(record_throughput, name, batch_size, plain.img_size, res,
               {"plain": (InferenceOptions(), "fp32"), "bf16": (options, "bf16")})
    benchmark.extra_info.update({"speedup": ratio, "relative_error": err, "bf16_options": options.label(),
                                 "native_bf16": why, "plain_median_s": res["plain"]["median_s"],
                                 "bf16_median_s": res["bf16"]["median_s"]})
    print(f"\n{name} CPU batch {batch_size}: plain fp32 {res['plain']['median_s']:.2f} s, "
          f"{options.label()} {res['bf16']['median_s']:.2f} s, speed-up {ratio:.2f}x, rel. error {err:.1e}")
    assert err <= PARITY_RTOL["bf16"], f"bf16 output differs from fp32: relative error {err:.2e}"
    assert ratio >= BF16_SPEEDUP_GATE, f"bf16 speed-up {ratio:.2f}x < {BF16_SPEEDUP_GATE}x " \
                                       f"(plain {res['plain']['median_s']:.2f} s, bf16 {res['bf16']['median_s']:.2f} s)"
