"""What a run says: a progress bar counted in iterations with the latest losses, Lightning's
records in the run's log (Hydra's ``<run dir>/train.log``), and none of its boilerplate."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar
from lightning_utilities.core import rank_zero

# One Lightning "epoch" is the whole budget (gan_lab.build.build_trainer), so "Epoch 0/0" says
# nothing; the bar's count is the iteration.
DESCRIPTION = "iteration"
# On the bar: the losses of the last logged iteration, and the metric checkpoints are chosen by.
SHOWN_METRICS = ("train/d_loss", "train/g_loss", "val/primary")

# Loggers Lightning gives console handlers at import time (lightning/__init__.py and its
# pytorch and fabric subpackages).
LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")


class LightningBoilerplate(logging.Filter):
    """Drops Lightning's info records that say nothing about a gan_lab run; anything else,
    warnings and errors included, passes."""

    PREFIXES = (
        # An advertisement, at every Trainer we build.
        "💡 Tip:",
        # The budget is one epoch by construction; the bar and the final summary say it ended.
        "`Trainer.fit` stopped: `max_epochs=",
        # Only on a machine without a TPU; a used TPU is still reported.
        "TPU available: False",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO or not record.getMessage().startswith(self.PREFIXES)


_BOILERPLATE = LightningBoilerplate()

# Warnings of the libraries' own making that a gan_lab user can do nothing about, matched by
# their message's start (a regex) and category; every other warning still shows.
KNOWN_WARNINGS = (
    # Lightning 2.x calling a torch API that torch deprecated after it; gone with an upgrade.
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),
    # torchmetrics' KID keeps every feature (10k x 128 floats for classifier FID): by design.
    (r"Metric `Kernel Inception Distance` will save all extracted features", UserWarning),
)


def quiet_lightning() -> None:
    """Attach the boilerplate filter to the loggers that emit it and ignore ``KNOWN_WARNINGS``
    (idempotent).

    A logger's filters see only the records logged on it, not its children's, so the filter
    goes on the emitting logger itself: rank_zero_info's. (Lightning's "`weights_only` was not
    set" notice is not filtered: our checkpoint callbacks pass ``weights_only=False``, full
    checkpoints, so it is never logged.)
    """
    rank_zero.log.addFilter(_BOILERPLATE)
    for message, category in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)


@contextmanager
def run_log() -> Iterator[None]:
    """While a run fits, Lightning's records and Python warnings go to the root logger's
    handlers: Hydra's console and ``<run dir>/train.log``.

    At import time Lightning gives its loggers their own stderr handlers and, as the root
    logger has none yet, stops ``lightning.pytorch`` and ``lightning.fabric`` propagating; Hydra
    configures the root only later, so nothing of Lightning's reached train.log (and, routed as
    it is, every record would print twice). Where the root still has no handlers (a plain
    in-process call) everything stays as it is. The previous state is restored on exit.
    """
    if not logging.getLogger().handlers:
        yield
        return
    saved = []
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, list(logger.handlers), logger.propagate))
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True
    logging.captureWarnings(True)
    try:
        yield
    finally:
        logging.captureWarnings(False)
        for logger, handlers, propagate in saved:
            logger.propagate = propagate
            for handler in handlers:
                logger.addHandler(handler)


def shown_metrics(trainer: L.Trainer) -> dict[str, float]:
    """The bar's metrics: anything logged with ``prog_bar=True``, then the latest losses
    (without their ``train/`` prefix) and ``val/primary`` once they exist."""
    metrics: dict[str, float] = dict(trainer.progress_bar_metrics)
    # A host sync per value on GPU, but only at a redraw, every log_every iterations.
    for key in SHOWN_METRICS:
        if key in trainer.callback_metrics:
            metrics[key.removeprefix("train/")] = float(trainer.callback_metrics[key])
    return metrics


class IterationRichProgressBar(RichProgressBar):
    """Rich bar over the budget's iterations, redrawn every ``every_n_iterations`` (and at the
    last) with the latest losses and ``val/primary``."""

    def __init__(self, every_n_iterations: int, refresh_per_second: int = 10) -> None:
        # Rich's refresh_rate is redraws per second of its own thread; the per-iteration cost
        # (docs/benchmarks.md) is in on_train_batch_end, throttled below.
        super().__init__(refresh_rate=refresh_per_second)
        self.every_n_iterations = every_n_iterations

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        if self.progress is not None and self.train_progress_bar_id is not None:
            style = self.theme.description
            description = f"[{style}]{DESCRIPTION}" if style else DESCRIPTION
            self.progress.update(self.train_progress_bar_id, description=description)

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        iteration = batch_idx + 1
        if iteration % self.every_n_iterations == 0 or iteration >= trainer.num_training_batches:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def get_metrics(
        self, trainer: L.Trainer, pl_module: L.LightningModule
    ) -> dict[str, int | str | float | dict[str, float]]:
        return dict(shown_metrics(trainer))


class IterationTQDMProgressBar(TQDMProgressBar):
    """tqdm bar over the budget's iterations, updated every ``every_n_iterations`` (and at the
    last) with the latest losses and ``val/primary``; used where ``rich`` is not installed."""

    def __init__(self, every_n_iterations: int) -> None:
        super().__init__(refresh_rate=every_n_iterations)

    @property
    def train_description(self) -> str:
        return DESCRIPTION

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        # Lightning's version renames the bar "Epoch N" (and redraws it so); the one epoch is
        # the whole budget here, so only the count starts over.
        self.train_progress_bar.reset(total=self.total_train_batches)
        self.train_progress_bar.initial = 0

    def get_metrics(
        self, trainer: L.Trainer, pl_module: L.LightningModule
    ) -> dict[str, int | str | float | dict[str, float]]:
        return dict(shown_metrics(trainer))
