"""Inference throughput (images/s, median) of the ASIT encoder, StyleGAN2 generator, inversion and IFER.

Each test times the prepared fast path (``ifer.bench.fastpath``), then checks the timed output against the
plain fp32 eager output of the same weights within the precision's ``PARITY_RTOL``. CPU runs the 64-px
``tiny`` models; CUDA the 256-px ``base`` models (and ``torch.compile``)::

    pytest benchmark/test_throughput.py --benchmark-only --benchmark-json .benchmarks/throughput.json
    pytest benchmark/test_throughput.py::test_encoder_cpu_fast_path_speedup --benchmark-only -s
"""
from __future__ import annotations

import pytest
import torch

from ifer.bench.fastpath import PARITY_RTOL, InferenceOptions, prepare_for_inference, relative_error
from ifer.bench.throughput import BenchModule, ThroughputRecord, device_tag, gmacs_per_image, peak_tflops
from ifer.bench.timers import measure_interleaved, synchronize

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
        pytest.skip("bf16 on a CPU without avx512_bf16/AMX is emulated (2-3x slower than fp32); batches 1, 4 suffice")
    if compiled and device == "cpu":
        pytest.skip("torch.compile on CPU is timed only in test_encoder_cpu_fast_path_speedup (inductor "
                    "needs minutes per model on 2 cores)")
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
        gmacs_per_image=gmacs_per_image(name), peak_tflops=peak_tflops(device, precision)))


#: The acceptance gate: fast path / plain fp32 eager, both timed in this run, at equal outputs.
SPEEDUP_GATE = 1.5
GATE_OPTIONS = InferenceOptions(channels_last=True, fused_attn=True)


def test_encoder_cpu_fast_path_speedup(benchmark, record_throughput):
    """as_described base encoder, eval, 256 px, batch 1, CPU: fast path >= 1.5x plain eager at 1e-4 parity.

    Both paths run the same weights, alternating call by call (``measure_interleaved``), so load from
    other processes hits both alike. The threshold is the acceptance criterion and is not relaxed here.
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

    res = benchmark.pedantic(measure_interleaved, args=({"plain": plain_step, "fast": lambda: fast(x)},),
                             kwargs={"warmup": 1, "iters": 3, "batch_size": batch_size}, rounds=1, iterations=1)
    ratio = res["plain"]["median_s"] / res["fast"]["median_s"]
    err = relative_error(res["fast"]["output"], res["plain"]["output"])
    gmacs = gmacs_per_image(name)
    for label, options in (("plain", InferenceOptions()), ("fast", GATE_OPTIONS)):
        r = res[label]
        record_throughput(ThroughputRecord(
            model=f"{name}[{label}:{options.label()}]", device="cpu", batch_size=batch_size, precision="fp32",
            channels_last=options.channels_last, compiled=options.compile, fused_attn=options.fused_attn,
            img_size=plain.img_size, images_per_s=r["images_per_s"], step_time_ms_median=1e3 * r["median_s"],
            step_time_ms_p10=1e3 * r["p10"], step_time_ms_p90=1e3 * r["p90"], gmacs_per_image=gmacs))
    benchmark.extra_info.update({"speedup": ratio, "relative_error": err, "fast_options": GATE_OPTIONS.label()})
    print(f"\n{name} CPU batch {batch_size}: plain {res['plain']['median_s']:.2f} s, "
          f"fast ({GATE_OPTIONS.label()}) {res['fast']['median_s']:.2f} s, speed-up {ratio:.2f}x, rel. error {err:.1e}")
    assert err <= PARITY_RTOL["fp32"], f"fast path differs from plain eager: relative error {err:.2e}"
    assert ratio >= SPEEDUP_GATE, f"speed-up {ratio:.2f}x < {SPEEDUP_GATE}x (plain {res['plain']['median_s']:.2f} s, " \
                                  f"fast {res['fast']['median_s']:.2f} s)"
