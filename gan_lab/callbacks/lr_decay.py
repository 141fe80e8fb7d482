"""Linear learning-rate decay over the last part of training, for G and D alike."""

from __future__ import annotations

from typing import Any

import lightning as L


class LinearLRDecay(L.Callback):
    """Scales every optimizer's lr linearly from 1 at ``start * total`` to ``final`` at ``total``.

    A low final lr stops G jittering around the modes, which sharpens the samples (2-D mixture
    high-quality share). Counts GAN iterations (``GANModule.iteration``), not ``global_step``.
    """

    def __init__(self, total: int, start: float = 0.5, final: float = 0.0) -> None:
        if total <= 0:
            raise ValueError(f"total must be a positive number of iterations, got {total}")
        if not 0.0 <= start < 1.0:
            raise ValueError(f"start must be in [0, 1), got {start}")
        self.total, self.start, self.final = total, start, final
        self.base_lrs: list[list[float]] | None = None

    def factor(self, iteration: int) -> float:
        """The lr multiplier at ``iteration``."""
        begin = self.start * self.total
        progress = min(max((iteration - begin) / (self.total - begin), 0.0), 1.0)
        return 1.0 + (self.final - 1.0) * progress

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:
        optimizers = trainer.optimizers
        if self.base_lrs is None:
            # Read once: the configured lrs (also right after a resume, before any step).
            self.base_lrs = [
                [g.get("initial_lr", g["lr"]) for g in o.param_groups] for o in optimizers
            ]
            for optimizer in optimizers:
                for group in optimizer.param_groups:
                    group.setdefault("initial_lr", group["lr"])
        scale = self.factor(pl_module.iteration)
        for optimizer, base in zip(optimizers, self.base_lrs, strict=True):
            for group, lr in zip(optimizer.param_groups, base, strict=True):
                group["lr"] = lr * scale
