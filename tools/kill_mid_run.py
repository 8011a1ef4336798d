"""Fault injection for the regression session: SIGKILL a running stage once it has written a checkpoint.

    python tools/kill_mid_run.py runs/tiny/asit/seed0/last.pt train-asit seed=0 --timeout 1800

Waits until FILE exists (the stage saved ``last.pt`` mid-run), then sends SIGKILL to every process whose command
line contains all the WORDs (the stage's ``python -m ifer.cli ...`` and its shell), as an OOM killer or a
scheduler's SIGKILL after SIGTERM would. Prints one line with what it killed and when; exit 0 when it killed
something, 1 when FILE never appeared or no process matched (then nothing was proven: the caller fails).
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path


def matching(words: list[str]) -> list[int]:
    me, out = os.getpid(), []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) == me:
            continue
        try:
            argv = (p / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        line = " ".join(argv)
        if all(w in line for w in words) and "kill_mid_run" not in line:
            out.append(int(p.name))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file", help="wait for this file (a mid-run checkpoint)")
    ap.add_argument("words", nargs="+", help="kill processes whose command line contains all of these")
    ap.add_argument("--timeout", type=float, default=1800.0)
    a = ap.parse_args(argv)
    t0 = time.monotonic()
    while not Path(a.file).exists():
        if time.monotonic() - t0 > a.timeout:
            print(f"kill_mid_run: {a.file} did not appear within {a.timeout:.0f} s; nothing killed", file=sys.stderr)
            return 1
        time.sleep(0.2)
    pids = matching(a.words)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if not pids:
        print(f"kill_mid_run: {a.file} appeared but no process matched {a.words}", file=sys.stderr)
        return 1
    print(f"kill_mid_run: SIGKILL to pid(s) {pids} ({' '.join(a.words)}) {time.monotonic() - t0:.0f} s after "
          f"start, once {a.file} existed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
