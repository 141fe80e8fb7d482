"""Checkpoints on an iteration cadence: last, periodic and best-by-metric."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Checkpoint

from gan_lab.arguments import Count
from gan_lab.checkpoint_io import link_or_copy, remove_stale_temp_files

log = logging.getLogger(__name__)


def _weights_finite(pl_module: Any) -> bool:
    # Runs the module's non-finite guard first: diverged weights never replace a good checkpoint.
    check = getattr(pl_module, "check_finite", None)
    return check() if check is not None else getattr(pl_module, "stop_reason", None) != "non-finite"


class IterationCheckpoint(Checkpoint):
    """Saves ``last.ckpt`` every ``every_n_iterations`` and at the end, plus periodic/best files.

    Lightning's ModelCheckpoint counts ``global_step``, which grows by k+1 per GAN iteration;
    this callback counts iterations. Subclassing ``Checkpoint`` makes Lightning run it after the
    other callbacks, so a metric computed at the same iteration is already available.

    ``last.ckpt`` is written first at each iteration, being what a resume reads: a disk that
    fills on the periodic or best file still leaves it current. Those two, when they hold the
    same iteration, are hard links to it (``link_or_copy``): no second write, no new space.

    It is the one tracker of the best ``monitor`` value: at each evaluation it logs the best so
    far and its iteration as ``best/<monitor>`` and ``best/iteration`` (so a W&B summary, whose
    value is the last one logged, holds the run's best, and a dashboard can sort a sweep by it),
    and ``best`` gives them to the run's ``done`` record.
    """

    def __init__(
        self,
        dirpath: str,
        every_n_iterations: Count = 500,
        keep_periodic: bool = True,
        monitor: str | None = None,
        mode: Literal["min", "max"] = "min",
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
        self.best_iteration: int | None = None
        self._saved_iteration = -1
        self._last_value: Any = None

    @property
    def last_path(self) -> Path:
        return self.dirpath / "last.ckpt"

    def setup(self, trainer: L.Trainer, pl_module: Any, stage: str) -> None:
        # A write killed mid-way (kill -9, power loss) leaves its temporary file; the next run in
        # this dir (a resume) is the first moment it is known to be stale, and the only writer.
        if stage == "fit" and trainer.is_global_zero:
            for path in remove_stale_temp_files(self.dirpath):
                log.info("removed %s, left by a checkpoint write that was interrupted", path)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:
        if trainer.sanity_checking:
            return
        # As soon as a new metric value arrives, not only on cadence; decided before last.ckpt is
        # written so that it records the new best score.
        iteration = pl_module.iteration
        score = self._new_score(trainer)
        new_best = score is not None and self._update_best(score, iteration)
        if score is not None and (best := self._best_metrics()):
            # In callback_metrics too: the run's final metrics (done, a sweeper's
            # optimized_metric=best/val/primary) hold its best.
            trainer.callback_metrics.update({k: torch.tensor(v) for k, v in best.items()})
            if trainer.is_global_zero:
                for logger in trainer.loggers:
                    logger.log_metrics(best, step=iteration)
        # The final iteration's last.ckpt is written here too (on_train_end then has nothing to
        # do), so that it comes before a best.ckpt of that same iteration; so is the last one of
        # a run that stops early (a signal, max_skips), which ends before on_train_end.
        final = iteration >= int(trainer.limit_train_batches or 0)
        stopping = getattr(pl_module, "stopped", None) is not None
        due = iteration % self.every_n_iterations == 0 or final or stopping
        if due and _weights_finite(pl_module):
            self.save(trainer, pl_module)
        if new_best:
            self._write_copy(trainer, pl_module, self.dirpath / "best.ckpt")

    def on_train_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        if _weights_finite(pl_module):
            self.save(trainer, pl_module)

    def save(self, trainer: L.Trainer, pl_module: Any) -> None:
        """Write last (and periodic / best) checkpoints for the current iteration."""
        iteration = pl_module.iteration
        if iteration == self._saved_iteration:
            return
        trainer.save_checkpoint(self.last_path, weights_only=False)
        self._saved_iteration = iteration
        if self.keep_periodic and iteration % self.every_n_iterations == 0:
            self._write_copy(trainer, pl_module, self.dirpath / f"iter_{iteration:07d}.ckpt")

    def _write_copy(self, trainer: L.Trainer, pl_module: Any, path: Path) -> None:
        """This iteration's checkpoint at ``path``: a link to last.ckpt if that holds it."""
        if self._saved_iteration != pl_module.iteration:
            trainer.save_checkpoint(path, weights_only=False)
        elif trainer.is_global_zero:  # rank 0 writes files, as in Trainer.save_checkpoint
            link_or_copy(self.last_path, path)

    def _new_score(self, trainer: L.Trainer) -> float | None:
        """The monitored metric's value if it arrived since the last call (an evaluation)."""
        value = trainer.callback_metrics.get(self.monitor) if self.monitor else None
        if value is None or value is self._last_value:
            return None
        self._last_value = value
        return float(value)

    def _update_best(self, score: float, iteration: int) -> bool:
        """Whether ``score`` is the best so far (then ``best_*`` are updated)."""
        better = score < self.best_score if self.mode == "min" else score > self.best_score
        # The first score is the best so far even when it is the worst possible (a toy run
        # whose samples hit no mode has reverse KL = inf): every evaluated run has a best.ckpt.
        first = self.best_path is None and not math.isnan(score)
        if better or first:
            self.best_score = score
            self.best_path = str(self.dirpath / "best.ckpt")
            self.best_iteration = iteration
        return better or first

    def _best_metrics(self) -> dict[str, float]:
        if self.best_iteration is None:
            return {}
        return {f"best/{self.monitor}": self.best_score, "best/iteration": self.best_iteration}

    @property
    def best(self) -> dict[str, Any] | None:
        """``{"metric", "value", "iteration"}`` of the best evaluation so far (best.ckpt's), or
        None before the first one; what ``done`` records."""
        if self.best_iteration is None:
            return None
        return {"metric": self.monitor, "value": self.best_score, "iteration": self.best_iteration}

    def state_dict(self) -> dict[str, Any]:
        return {
            "best_score": self.best_score,
            "best_path": self.best_path,
            "best_iteration": self.best_iteration,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # The best so far counts only while this dir holds its best.ckpt: a warm start from
        # another run's checkpoint keeps its own best.ckpt, even when worse than that run's.
        if (self.dirpath / "best.ckpt").is_file():
            self.best_score = state_dict.get("best_score", self.best_score)
            self.best_path = str(self.dirpath / "best.ckpt")
            # Checkpoints written before the iteration was kept lack it: unknown, not 0.
            self.best_iteration = state_dict.get("best_iteration")


def best_evaluation(trainer: L.Trainer) -> dict[str, Any] | None:
    """The run's best evaluation (``IterationCheckpoint.best``), or None without the callback:
    it is the one tracker of the best (best.ckpt's)."""
    trackers = [c for c in trainer.callbacks if isinstance(c, IterationCheckpoint)]
    return trackers[0].best if trackers else None
