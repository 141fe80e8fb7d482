"""SIGINT/SIGTERM: finish the current iteration, save ``last.ckpt``, stop cleanly.

SIGTERM goes through Lightning's own handler (``_SignalConnector``), which sets
``trainer.received_sigterm``; after the batch's ``on_train_batch_end`` hooks Lightning raises
``SIGTERMException``, so the checkpoint written here is the state at that iteration boundary and
``gan_lab.train`` turns the exception into a clean exit. SIGINT (Ctrl+C) would otherwise raise
``KeyboardInterrupt`` mid-update; this callback replaces it by a flag while training runs (a
second Ctrl+C still interrupts at once).
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException

from gan_lab.callbacks.checkpoint import IterationCheckpoint


class Interruption(Callback):
    """Saves ``<dirpath>/last.ckpt`` at the next iteration boundary after SIGINT or SIGTERM."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)
        self.signal_name: str | None = None
        self._previous_sigint: Any = None

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if self.signal_name is not None:  # second Ctrl+C: give up on a clean stop
            raise KeyboardInterrupt
        self.signal_name = "SIGINT"
        print("\n[gan_lab] SIGINT: saving at the end of this iteration", file=sys.stderr)

    def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        self.signal_name = None
        self._previous_sigint = signal.getsignal(signal.SIGINT)
        try:
            signal.signal(signal.SIGINT, self._on_sigint)
        except ValueError:  # not the main thread (e.g. some launchers): keep the default
            self._previous_sigint = None

    def teardown(self, trainer: L.Trainer, pl_module: Any, stage: str) -> None:
        if self._previous_sigint is not None:
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:
        if self.signal_name is None and trainer.received_sigterm:
            self.signal_name = "SIGTERM"
        if self.signal_name is not None:
            self._save_and_stop(trainer, pl_module)

    def on_exception(self, trainer: L.Trainer, pl_module: Any, exception: BaseException) -> None:
        # SIGTERM that arrived after this callback's on_train_batch_end (e.g. during a slow
        # callback): Lightning raises at the end of that same iteration, still a clean boundary.
        if isinstance(exception, SIGTERMException):
            self.signal_name = "SIGTERM"
            self._save_and_stop(trainer, pl_module)

    def _save_and_stop(self, trainer: L.Trainer, pl_module: Any) -> None:
        if getattr(pl_module, "stop_reason", None) == "interrupted":
            return
        pl_module.stop_reason = "interrupted"
        trainer.should_stop = True  # also makes Lightning flush the loggers now
        checkpoints = [c for c in trainer.callbacks if isinstance(c, IterationCheckpoint)]
        path = checkpoints[0].last_path if checkpoints else self.dirpath / "last.ckpt"
        if not pl_module.check_finite():
            saved = "not saved (non-finite weights; the last good checkpoint is kept)"
        elif checkpoints:
            # Through the checkpoint callback, so a save it already made this iteration is reused.
            checkpoints[0].save(trainer, pl_module)
            saved = f"saved {path}"
        else:
            trainer.save_checkpoint(path, weights_only=False)
            saved = f"saved {path}"
        print(
            f"[gan_lab] {self.signal_name} at iteration {pl_module.iteration}: {saved}; "
            "resume with the same overrides plus ckpt_path=last hydra.run.dir=<this run dir>",
            file=sys.stderr,
        )
