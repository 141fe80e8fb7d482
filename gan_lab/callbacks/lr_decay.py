"""Linear learning-rate decay over the last part of training, for G and D alike."""

from __future__ import annotations

from typing import Annotated, Any

import lightning as L

from gan_lab.arguments import Count, Fraction, Interval

# Where the decay begins, as a fraction of `total` (1 would leave no room to decay).
Start = Annotated[float, Interval(ge=0, lt=1)]


class LinearLRDecay(L.Callback):
    """Scales every optimizer's lr linearly from 1 at ``start * total`` to ``final`` at ``total``.

    A low final lr stops G jittering around the modes, which sharpens the samples (2-D mixture
    high-quality share). Counts GAN iterations (``GANModule.iteration``), not ``global_step``.
    """

    def __init__(self, total: Count, start: Start = 0.5, final: Fraction = 0.0) -> None:
        if total <= 0:
            raise ValueError(f"total must be a positive number of iterations, got {total}")
        if not 0.0 <= start < 1.0:
            raise ValueError(f"start must be in [0, 1), got {start}")
        self.total, self.start, self.final = total, start, final

    def factor(self, iteration: int) -> float:
        """The lr multiplier at ``iteration``."""
        begin = self.start * self.total
        progress = min(max((iteration - begin) / (self.total - begin), 0.0), 1.0)
        return 1.0 + (self.final - 1.0) * progress

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:
        scale = self.factor(pl_module.iteration)
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                # The configured lr is kept in the optimizer's state, so a resume restores it.
                base = group.setdefault("initial_lr", group["lr"])
                group["lr"] = base * scale
