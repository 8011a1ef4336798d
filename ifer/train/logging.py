"""Rank-safe run logging: JSON lines on rank 0; progress on rank 0 only (tqdm bars on a terminal, periodic
``ifer`` log lines with ETA otherwise: ``ifer.core.progress``)."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ifer.core.io import atomic_write_text
from ifer.core.progress import Progress, fmt_duration, fmt_value


class RunLogger:
    """Appends one JSON object per event to ``<run_dir>/log.jsonl``; other ranks write nothing."""

    def __init__(self, run_dir: str | Path, is_main: bool = True, progress: bool = True):
        self.run_dir, self.is_main = Path(run_dir), is_main
        self.progress = progress and is_main
        if is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / "log.jsonl"
        self._t0 = time.time()
        self.name = _display_name(self.run_dir)
        # progress state: the open bar, this process's clock, the last/best selection metric
        self._bar: Progress | None = None
        self._clock: tuple[float, int] | None = None
        self._val: tuple[str, float] | None = None
        self._best: tuple[float, Any] | None = None
        self._epochs: int | None = None

    def log(self, kind: str, **fields: Any) -> None:
        if not self.is_main:
            return
        rec = {"kind": kind, "time_s": round(time.time() - self._t0, 3), **fields}
        with open(self.path, "a") as f:
            f.write(json.dumps(rec, default=float) + "\n")
        if kind in ("epoch", "val"):
            self._on_validation(rec)

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
        for r in keep:  # the best so far of the part that is kept
            if r["kind"] in ("epoch", "val"):
                self._track_best(r)

    def bar(self, total: int, desc: str, initial: int = 0, epoch: int | None = None, epochs: int | None = None):
        """A progress bar (tqdm on a terminal) or, without a terminal, an ``ifer`` log line every
        ``IFER_PROGRESS_INTERVAL`` s: run, epoch, step of the run's total, loss, last validation metric, best so far,
        elapsed, ETA. ``epoch``/``epochs``: the bar covers one epoch of ``total`` steps (counter and ETA are the run's);
        without them it covers the whole run (ASIT: ``total`` steps, ``initial`` done)."""
        per_epoch = epoch is not None and epochs
        offset = epoch * total if per_epoch else 0
        run_total = epochs * total if per_epoch else total
        if per_epoch:
            self._epochs = epochs
        label = f"{desc.split()[0] if not per_epoch else 'train_fer'} {self.name}" + (
            f" epoch {epoch + 1}/{epochs}" if per_epoch else "")
        if self._clock is None:
            self._clock = (time.monotonic(), offset + initial)
        self._bar = Progress(total, desc, initial=initial, enabled=self.progress, label=label, offset=offset,
                             run_total=run_total, clock=self._clock)
        self._bar.set_postfix(self._val_fields(), refresh=False)
        return self._bar

    # ---- the selection metric: FER ``epoch`` rows (``<split>_accuracy``, higher is better), ASIT ``val`` rows
    # (``loss``, lower is better)
    def _track_best(self, rec: dict) -> None:
        if rec["kind"] == "epoch":
            key = next((k for k in rec if k.endswith("_accuracy") and not k.startswith("train_")
                        and "mean_class" not in k), None)
            higher, at = True, ("epoch", rec.get("epoch", -1) + 1)
        else:
            key, higher, at = ("loss" if "loss" in rec else None), False, ("step", rec.get("step"))
        if key is None or not isinstance(rec[key], (int, float)):
            return
        value = float(rec[key])
        self._val = ("val_loss" if rec["kind"] == "val" else key, value)
        if self._best is None or (value > self._best[0] if higher else value < self._best[0]):
            self._best = (value, at)

    def _val_fields(self) -> dict:
        if self._val is None:
            return {}
        out = {self._val[0]: self._val[1]}
        if self._best is not None:
            out["best"] = self._best[0]
        return out

    def _on_validation(self, rec: dict) -> None:
        self._track_best(rec)
        if not self.progress or self._bar is None:
            return
        bar = self._bar
        bar.set_postfix(self._val_fields())
        if bar.mode != "lines" and rec["kind"] == "val":
            return  # ASIT on a terminal: the bar shows it
        elapsed, left = bar.eta()
        where = (f"epoch {rec['epoch'] + 1}/{self._epochs or '?'}" if rec["kind"] == "epoch"
                 else f"step {rec.get('step')}/{bar.grand_total}")
        train = "".join(f" {k} {fmt_value(v)}" for k, v in rec.items() if k == "train_loss")
        best = (f" best {fmt_value(self._best[0])} ({self._best[1][0]} {self._best[1][1]})"
                if self._best is not None else "")
        bar.write(f"{bar.label.split(' epoch ')[0]} {where} done:{train} {self._val[0]} {fmt_value(self._val[1])}"
                  f"{best} | elapsed {fmt_duration(elapsed)} eta {fmt_duration(left)}" if self._val else
                  f"{bar.label} {where} done")


def _display_name(run_dir: Path) -> str:
    """The run folder relative to the working directory when below it (``runs/tiny/fer/clean/ifer/synthfer/seed0``)."""
    try:
        return str(run_dir.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(run_dir)


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
