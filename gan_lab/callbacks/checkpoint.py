"""Checkpoints on an iteration cadence: last, periodic and best-by-metric."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Checkpoint


def _weights_finite(pl_module: Any) -> bool:
    # Runs the module's non-finite guard first: diverged weights never replace a good checkpoint.
    check = getattr(pl_module, "check_finite", None)
    return check() if check is not None else getattr(pl_module, "stop_reason", None) != "non-finite"


class IterationCheckpoint(Checkpoint):
    """Saves ``last.ckpt`` every ``every_n_iterations`` and at the end, plus periodic/best files.

    Lightning's ModelCheckpoint counts ``global_step``, which grows by k+1 per GAN iteration;
    this callback counts iterations. Subclassing ``Checkpoint`` makes Lightning run it after the
    other callbacks, so a metric computed at the same iteration is already available.
    """

    def __init__(
        self,
        dirpath: str,
        every_n_iterations: int = 500,
        keep_periodic: bool = True,
        monitor: str | None = None,
        mode: str = "min",
    ) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"checkpoint mode must be 'min' or 'max', got {mode!r}")
        self.dirpath = Path(dirpath)
        self.every_n_iterations = every_n_iterations
        self.keep_periodic = keep_periodic
        self.monitor = monitor
        self.mode = mode
        self.best_score = math.inf if mode == "min" else -math.inf
        self.best_path: str | None = None
        self._saved_iteration = -1
        self._last_value: Any = None

    @property
    def last_path(self) -> Path:
        return self.dirpath / "last.ckpt"

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:
        if trainer.sanity_checking:
            return
        self._save_best(trainer)  # as soon as a new metric value arrives, not only on cadence
        if pl_module.iteration % self.every_n_iterations == 0 and _weights_finite(pl_module):
            self.save(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        if _weights_finite(pl_module):
            self.save(trainer, pl_module)

    def save(self, trainer: L.Trainer, pl_module: Any) -> None:
        """Write last (and periodic / best) checkpoints for the current iteration."""
        iteration = pl_module.iteration
        if iteration == self._saved_iteration:
            return
        self._saved_iteration = iteration
        if self.keep_periodic and iteration % self.every_n_iterations == 0:
            trainer.save_checkpoint(self.dirpath / f"iter_{iteration:07d}.ckpt", weights_only=False)
        trainer.save_checkpoint(self.last_path, weights_only=False)

    def _save_best(self, trainer: L.Trainer) -> None:
        value = trainer.callback_metrics.get(self.monitor) if self.monitor else None
        if value is None or value is self._last_value:
            return
        self._last_value = value
        score = float(value)
        better = score < self.best_score if self.mode == "min" else score > self.best_score
        # The first score is the best so far even when it is the worst possible (a toy run
        # whose samples hit no mode has reverse KL = inf): every evaluated run has a best.ckpt.
        first = self.best_path is None and not math.isnan(score)
        if better or first:
            self.best_score = score
            self.best_path = str(self.dirpath / "best.ckpt")
            trainer.save_checkpoint(self.best_path, weights_only=False)

    def state_dict(self) -> dict[str, Any]:
        return {"best_score": self.best_score, "best_path": self.best_path}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_score = state_dict.get("best_score", self.best_score)
        self.best_path = state_dict.get("best_path")
