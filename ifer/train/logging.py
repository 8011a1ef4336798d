"""Rank-safe run logging: JSON lines on rank 0, tqdm progress bars on rank 0 only."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ifer.core.io import atomic_write_text


class RunLogger:
    """Appends one JSON object per event to ``<run_dir>/log.jsonl``; other ranks write nothing."""

    def __init__(self, run_dir: str | Path, is_main: bool = True, progress: bool = True):
        self.run_dir, self.is_main = Path(run_dir), is_main
        self.progress = progress and is_main
        if is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / "log.jsonl"
        self._t0 = time.time()

    def log(self, kind: str, **fields: Any) -> None:
        if not self.is_main:
            return
        rec = {"kind": kind, "time_s": round(time.time() - self._t0, 3), **fields}
        with open(self.path, "a") as f:
            f.write(json.dumps(rec, default=float) + "\n")

    def start_fresh(self) -> None:
        """A run that starts from step 0 (nothing to resume, or ``--no-resume``) drops an earlier run's log."""
        if self.is_main:
            self.path.unlink(missing_ok=True)

    def rewind(self, step: int) -> None:
        """On resume: drop what was logged after the checkpoint (rows past ``step``, a final ``test`` row, a partial
        last line), so the steps that are trained again do not appear twice in the log and the curves."""
        if not self.is_main or not self.path.is_file():
            return
        rows = read_log(self.path)
        keep = [r for r in rows if r.get("step", -1) <= step and r["kind"] != "test"]
        atomic_write_text(self.path, "".join(json.dumps(r, default=float) + "\n" for r in keep))

    def bar(self, total: int, desc: str, initial: int = 0):
        # disable=None also hides bars when stderr is not a terminal (dvc, CI logs)
        return tqdm(total=total, desc=desc, initial=initial, disable=None if self.progress else True,
                    dynamic_ncols=True, leave=False)


def read_log(path: str | Path, kind: str | None = None) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1:  # only the last line may be partial (a kill mid-write)
                raise ValueError(f"{path}:{i + 1}: not a JSON line") from None
    return [r for r in rows if kind is None or r["kind"] == kind]
