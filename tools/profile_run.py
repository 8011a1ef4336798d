"""Profile a pipeline command by stage: wall time of every ``Running stage 'X'`` block of ``dvc repro`` output (or
of every pytest test with ``--pytest-junit``), with the machine's CPU flags and FLOP bound beside it.

    python tools/profile_run.py --out results/benchmarks/profile-main-job-<cpu>.json -- dvc repro
    python tools/profile_run.py --out results/benchmarks/profile-tests-<cpu>.json --pytest-junit /tmp/j.xml \
        -- python -m nox -s tests -- -q -m "not gpu" -n 2 --junitxml /tmp/j.xml

The command's output is passed through unchanged; the JSON holds ``stages`` (name -> seconds, in order), the
total, the command, the git SHA, ``tests`` and ``rehearsal_stages`` (the paper rehearsal's seconds per stage, from
the JUnit property its test records) with ``--pytest-junit``, ``machine`` (``ifer.core.machine.machine_info``) and ``cpu_peak`` (fp32 and bf16
dense peaks at the threads used, ``ifer.core.machine.cpu_peak``), so a time is never quoted without the bound.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

_STAGE = re.compile(r"^Running stage '([^']+)'")


def _junit_durations(path: Path) -> dict[str, float]:
    out = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        out[f"{case.get('classname')}::{case.get('name')}"] = float(case.get("time") or 0.0)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _junit_properties(path: Path, name: str) -> dict[str, object]:
    """``{test: value}`` of the JUnit ``<property name=name>`` each test recorded (``record_property``), values
    parsed as JSON where they are JSON (the rehearsal's per-stage seconds: ``rehearsal_stage_s``)."""
    out: dict[str, object] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        for prop in case.iter("property"):
            if prop.get("name") == name:
                try:
                    value = json.loads(prop.get("value") or "")
                except ValueError:
                    value = prop.get("value")
                out[f"{case.get('classname')}::{case.get('name')}"] = value
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="JSON file to write")
    ap.add_argument("--label", default="", help="free text stored with the profile (e.g. 'idle', 'one core busy')")
    ap.add_argument("--pytest-junit", type=Path, help="a --junitxml file the command writes: per-test durations")
    ap.add_argument("cmd", nargs=argparse.REMAINDER, help="the command, after --")
    args = ap.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        ap.error("no command given (put it after --)")
    stages: dict[str, float] = {}
    current, started = None, None
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    for line in proc.stdout:
        sys.stdout.write(line)
        m = _STAGE.match(line)
        if m:
            now = time.perf_counter()
            if current is not None:
                stages[current] = round(now - started, 2)
            current, started = m.group(1), now
    rc = proc.wait()
    total = time.perf_counter() - t0
    if current is not None:
        stages[current] = round(time.perf_counter() - started, 2)
    from ifer.core.machine import cpu_peak, machine_info

    threads = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
    sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip() or None
    prof = {"command": cmd, "label": args.label, "rc": rc, "total_s": round(total, 1), "git_sha": sha,
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "omp_num_threads": threads,
            "stages": stages, "machine": machine_info(),
            "cpu_peak": {p: cpu_peak(p, threads) for p in ("fp32", "bf16")}}
    if args.pytest_junit and args.pytest_junit.is_file():
        prof["tests"] = _junit_durations(args.pytest_junit)
        stages_of = _junit_properties(args.pytest_junit, "rehearsal_stage_s")
        if stages_of:  # the paper rehearsal's stages, longest first
            prof["rehearsal_stages"] = {t: dict(sorted(v.items(), key=lambda kv: -kv[1])) if isinstance(v, dict) else v
                                        for t, v in stages_of.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(prof, indent=1, default=str) + "\n")
    print(f"profile: {args.out} ({total:.0f} s, rc {rc})", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
