"""Progress you can follow anywhere: a tqdm bar on a terminal, periodic log lines everywhere else.

On a terminal (stderr is a TTY) :class:`Progress` draws a tqdm bar. Otherwise (``dvc repro > log``, CI, nohup) it
writes one INFO line on the ``ifer`` logger every ``IFER_PROGRESS_INTERVAL`` seconds (default 30; 0 = every
update), so the line lands wherever logging goes::

    INFO ifer: train_fer runs/tiny/fer/clean/ifer/synthfer/seed0 epoch 2/4: step 13/24 (54%) loss 0.531
    val_accuracy 0.71 best 0.74 | elapsed 0:12 eta 0:08

``IFER_PROGRESS=bars|lines|off`` forces the mode (default: bars on a TTY, lines otherwise). Only rank 0 of a
torchrun job reports (``RANK``). One helper for every loop: training (through ``ifer.train.logging.RunLogger``),
inversion, evaluation, FID features, the identity probe.

    python -c "from ifer.core.progress import Progress; import logging; logging.basicConfig(level=logging.INFO); \
p = Progress(3, 'demo', interval=0, mode='lines'); [p.update() for _ in range(3)]; p.close()"
"""
from __future__ import annotations

import logging
import math
import os
import sys
import time
from typing import Any

LOGGER = logging.getLogger("ifer")
DEFAULT_INTERVAL_S = 30.0
MODES = ("bars", "lines", "off")


def progress_interval() -> float:
    """Seconds between two progress lines: ``IFER_PROGRESS_INTERVAL`` (default 30)."""
    raw = os.environ.get("IFER_PROGRESS_INTERVAL", "")
    try:
        return max(0.0, float(raw)) if raw.strip() else DEFAULT_INTERVAL_S
    except ValueError:
        return DEFAULT_INTERVAL_S


def progress_mode(enabled: bool = True) -> str:
    """``bars`` (stderr is a TTY), ``lines`` (it is not) or ``off``; ``IFER_PROGRESS`` overrides; rank > 0: off."""
    if not enabled or int(os.environ.get("RANK", "0") or 0) != 0:
        return "off"
    forced = os.environ.get("IFER_PROGRESS", "").strip().lower()
    if forced in MODES:
        return forced
    try:
        return "bars" if sys.stderr.isatty() else "lines"
    except (AttributeError, ValueError):
        return "lines"


def fmt_duration(seconds: float | None) -> str:
    """``0:08``, ``12:03``, ``1:02:03``; ``?`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = int(round(max(0.0, seconds)))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


class Progress:
    """A tqdm-compatible bar (``update``, ``set_postfix``, ``close``) that logs lines when there is no terminal.

    ``desc``: the bar's label; ``label``: the log line's (default ``desc``). The counter shown and the ETA are the
    whole run's when ``run_total`` is given: ``offset`` steps were done before this bar's first one (earlier
    epochs), and ``clock = (start time, steps done then)`` is when this process started counting, so the rate
    covers everything since (validation included). Without them they are this bar's own.
    """

    def __init__(self, total: int, desc: str, *, initial: int = 0, enabled: bool = True, mode: str | None = None,
                 interval: float | None = None, unit: str = "step", label: str | None = None,
                 offset: int = 0, run_total: int | None = None, clock: tuple[float, int] | None = None,
                 logger: logging.Logger | None = None):
        self.total, self.n, self.desc, self.unit = int(total), int(initial), desc, unit
        self.label = label or desc
        self.mode = mode or progress_mode(enabled)
        self.interval = progress_interval() if interval is None else interval
        self.offset, self.run_total = offset, run_total
        now = time.monotonic()
        self.clock = clock or (now, offset + self.n)
        self.fields: dict[str, Any] = {}
        self.logger = logger or LOGGER
        self._last = now
        self._bar = None
        self.lines = 0
        if self.mode == "bars":
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, initial=initial, dynamic_ncols=True, leave=False, unit=unit)

    # ---- tqdm interface
    def update(self, n: int = 1) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.mode == "lines" and time.monotonic() - self._last >= self.interval:
            self.emit()

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        self.fields.update(ordered_dict or {}, **kwargs)
        if self._bar is not None:
            self._bar.set_postfix({k: fmt_value(v) for k, v in self.fields.items()}, refresh=refresh)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- lines
    @property
    def done(self) -> int:
        return self.offset + self.n

    @property
    def grand_total(self) -> int:
        return self.run_total if self.run_total is not None else self.total

    def eta(self) -> tuple[float, float | None]:
        """(elapsed, remaining) seconds since ``clock``; remaining is None before the first step."""
        t0, n0 = self.clock
        elapsed = time.monotonic() - t0
        steps = self.done - n0
        left = max(0, self.grand_total - self.done)
        return elapsed, (elapsed / steps * left if steps > 0 else (0.0 if left == 0 else None))

    def line(self) -> str:
        total = self.grand_total
        pct = f" ({100 * self.done / total:.0f}%)" if total else ""
        fields = sorted(self.fields.items(), key=lambda kv: kv[0] != "loss")  # the loss first
        extra = "".join(f" {k} {fmt_value(v)}" for k, v in fields)
        elapsed, left = self.eta()
        return (f"{self.label}: {self.unit} {self.done}/{total}{pct}{extra} | elapsed {fmt_duration(elapsed)} "
                f"eta {fmt_duration(left)}")

    def emit(self) -> None:
        self._last = time.monotonic()
        self.lines += 1
        self.logger.info("%s", self.line())

    def write(self, message: str) -> None:
        """A one-off line (an epoch's summary): above the bar on a terminal, a log line otherwise."""
        if self.mode == "off":
            return
        if self._bar is not None:
            self._bar.write(message, file=sys.stderr)
        else:
            self.logger.info("%s", message)


def track(iterable, total: int | None = None, desc: str = "", **kwargs: Any):
    """``for x in track(loader, desc='predict'): ...``: a :class:`Progress` around any iterable."""
    total = len(iterable) if total is None else total
    bar = Progress(total, desc, **kwargs)
    try:
        for item in iterable:
            yield item
            bar.update()
    finally:
        bar.close()
