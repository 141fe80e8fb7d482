"""Metrics during training, on an iteration cadence and at the last iteration."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from gan_lab.arguments import NonNegativeInt
from gan_lab.distributed import broadcast_buffers
from gan_lab.loggers import log_protocol
from gan_lab.metrics.evaluation import Evaluator


class Evaluation(L.Callback):
    """Every ``every_n_iterations`` (and at the end of the budget) logs the evaluator's metrics.

    ``every_n_iterations=0`` (eval=none) evaluates never, not even at the end; a cadence past
    the budget evaluates only at the end (gan_lab.validation notes both at start-up). Under
    DDP every rank evaluates its share (the evaluator's collectives need them all), and rank 0's
    numbers are then sent to every rank, where the checkpoint callback reads them: best.ckpt is
    decided alike on every rank, as its saves are collective. The evaluator's protocol (what
    its numbers depend on) goes into each logger's config once (gan_lab.loggers.log_protocol).
    """

    def __init__(
        self, evaluator: Evaluator | None, every_n_iterations: NonNegativeInt = 1000
    ) -> None:
        self.evaluator = evaluator
        self.every_n_iterations = every_n_iterations
        self._logged_protocol: dict[str, Any] | None = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:
        if self.evaluator is None or self.every_n_iterations <= 0:
            return
        iteration = pl_module.iteration
        last = iteration >= int(trainer.limit_train_batches or 0)
        if iteration % self.every_n_iterations and not last:
            return
        broadcast_buffers(pl_module)
        metrics = self.evaluator(pl_module, trainer.datamodule, iteration)
        # The ranks computed the same numbers up to float sums; one set decides on every rank.
        metrics = trainer.strategy.broadcast(metrics, src=0)
        # Straight to the loggers, once, at the iteration's own step: values logged with self.log
        # from a callback would be re-sent at every later logging step. callback_metrics feeds
        # checkpoint selection.
        protocol = self.evaluator.protocol
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=iteration)
                if protocol is not None and protocol != self._logged_protocol:
                    log_protocol(logger, protocol)
        self._logged_protocol = protocol
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in metrics.items()})


def evaluation_protocol(trainer: L.Trainer) -> dict[str, Any] | None:
    """The protocol of the run's evaluations (``Evaluator.protocol``), or None where nothing
    was evaluated."""
    for callback in trainer.callbacks:
        if isinstance(callback, Evaluation) and callback.evaluator is not None:
            return callback.evaluator.protocol
    return None
