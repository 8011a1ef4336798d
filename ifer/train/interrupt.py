"""SIGINT/SIGTERM during training: finish the current step, save a resumable ``last.pt``, stop with one line.

Schedulers (SLURM, Kubernetes, ``dvc`` on Ctrl-C) send SIGTERM or SIGINT; the trainers check the flag at every
step boundary, so the checkpoint is written within one training step. A second signal acts as usual (immediate
KeyboardInterrupt / termination), for a step that hangs. The CLI prints
``ifer <verb>: interrupted at step N; resume with: <same command>`` and exits 130 (SIGINT) or 143 (SIGTERM).

    python -m ifer.cli train-fer --params params.yaml     # press Ctrl-C, then run the same command again
"""
from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch stays unimported: the CLI imports this module for every verb
    from ifer.train.distributed import DistInfo

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(Exception):
    """Raised after the interrupt checkpoint is written; ``exit_code`` is 128 + the signal number."""

    def __init__(self, step: int, signum: int, checkpoint: Path | None):
        self.step, self.signum, self.checkpoint = step, signum, checkpoint
        super().__init__(f"interrupted by {signal.Signals(signum).name} at step {step}; saved {checkpoint}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopOnSignal:
    """Context manager: while active, SIGINT/SIGTERM set ``signum`` instead of killing the process.

    Handlers can only be installed from the main thread; elsewhere (e.g. a trainer run in a worker thread) the
    context does nothing and signals keep their usual effect.
    """

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame):
        self.signum = signum
        for s, h in self._previous.items():  # a second signal acts as usual
            signal.signal(s, h)

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.getsignal(s) for s in _SIGNALS}
            for s in _SIGNALS:
                signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous = {}

    def requested(self, info: DistInfo) -> bool:
        """True on every rank once any rank got a signal (all ranks save and stop at the same step)."""
        from ifer.train.distributed import broadcast_flag

        return broadcast_flag(self.signum is not None, info)
