"""Record this CPU's fp32/bf16 speed (from a run of the CPU gates) and fp32/bf16 top-1 agreement of trained
checkpoints, with the CPU flags and peak, in one JSON under results/benchmarks/::

    pytest benchmark/test_throughput.py -k "not_slower or bf16_speedup" --benchmark-only \
        --benchmark-json .benchmarks/gates.json
    python benchmark/record_cpu_bf16.py --gates .benchmarks/gates.json \
        --checkpoint ifer=runs/tiny/fer/clean/ifer/synthfer/seed0/best.pt --dataset synthfer --profile tiny

Agreement is measured with ``ifer.eval.predict.bf16_agreement`` on the dataset's test split (the number that
``ifer predict --precision auto`` compares with 99.5 %); without ``--checkpoint`` the file says none was given.
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import torch

from ifer.core.machine import cpu_peak, machine_info


def gate_rows(gates: dict) -> list[dict]:
    """The gate tests' timings and ratios from a pytest-benchmark JSON."""
    rows = []
    for b in gates.get("benchmarks", []):
        extra = b.get("extra_info", {})
        if "speedup" in extra:
            rows.append({"test": b["name"], **{k: v for k, v in extra.items() if not isinstance(v, (list, dict))}})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gates", help="pytest-benchmark JSON of the CPU gate tests")
    ap.add_argument("--rows", action="append", default=[], metavar="CSV",
                    help="throughput CSV(s) the gate run wrote (--throughput-dir): plain and fast rows, with peaks")
    ap.add_argument("--checkpoint", action="append", default=[], metavar="METHOD=PATH")
    ap.add_argument("--dataset", default="synthfer")
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--note", default="", help="free text, e.g. how loaded the machine was")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    info = machine_info()
    record = {"machine": info, "peak": {p: cpu_peak(p) for p in ("fp32", "bf16")}, "note": args.note,
              "gates": gate_rows(json.loads(Path(args.gates).read_text())) if args.gates else [],
              "rows": [r for f in args.rows for r in csv.DictReader(open(f))], "agreement": []}
    if args.gates:
        record["gate_timings"] = json.loads(Path(args.gates).read_text()).get("benchmarks", [])
        for b in record["gate_timings"]:
            b.pop("stats", None)  # the rows above keep the medians; raw stats are in the pytest JSON
    if args.checkpoint:
        from ifer.core.config import load_config
        from ifer.data.build import fer_datasets
        from ifer.eval.predict import bf16_agreement, load_classifier

        cfg = load_config(args.profile)
        for item in args.checkpoint:
            method, path = item.split("=", 1)
            model, _ = load_classifier(cfg, path, method)
            test = fer_datasets(cfg, args.dataset, cfg.fer_methods[method].train, eval_only=True).test
            record["agreement"].append({"method": method, "checkpoint": path, "dataset": args.dataset,
                                        **bf16_agreement(model, test, cfg.eval.batch_size)})
    else:
        record["agreement_note"] = "no trained checkpoint given (--checkpoint METHOD=PATH); nothing measured"
    out = Path(args.out or f"results/benchmarks/cpu-bf16-{info['cpu'].replace(' ', '-').lower()}"
                           f"-pt{torch.__version__.split('+')[0]}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1, default=str) + "\n")
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
