"""Exponential moving average of the generator's weights (not D's)."""

from __future__ import annotations

import copy

import torch
from torch import nn

# decay_t = min(decay, (1 + t) / (10 + t)) for the t-th update, t from 0 (the ramp of
# TensorFlow's ExponentialMovingAverage with num_updates).
WARMUP_OFFSET = 10


class EMA(nn.Module):
    """Keeps ``module`` = EMA of a model's parameters; buffers (BatchNorm stats) are copied.

    p_ema <- d_t * p_ema + (1 - d_t) * p after each generator step (Karras et al. 2018), with
    d_t = min(decay, (1 + t) / (10 + t)) at the t-th update when ``warmup`` is on: a fixed
    0.999 would still hold 37 % of the random init after 1,000 updates, and early metrics (and
    the best checkpoint picked from them) would score that mixture. The ramp reaches ``decay``
    after (10 * decay - 1) / (1 - decay) updates (8,990 for 0.999).

    Buffers are copied from the live model, as StyleGAN2-ADA and EDM do: BatchNorm's running
    statistics describe activations, not weights, and its integer counters cannot be averaged.
    An nn.Module so the average is saved and restored inside the LightningModule's checkpoint;
    ``t`` is the caller's update count (GANModule's iteration), which its checkpoint restores.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True) -> None:
        super().__init__()
        if not 0.0 < decay < 1.0:
            raise ValueError(f"train.ema_decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    def decay_at(self, step: int) -> float:
        """The decay of update number ``step`` (0 for the first)."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + step) / (WARMUP_OFFSET + step))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Average ``model``'s parameters in, as update number ``step`` (0 for the first)."""
        ema_params = list(self.module.parameters())
        weight = 1.0 - self.decay_at(step)
        torch._foreach_lerp_(ema_params, [p.detach() for p in model.parameters()], weight)
        for ema_buffer, buffer in zip(self.module.buffers(), model.buffers(), strict=True):
            ema_buffer.copy_(buffer)

    def train(self, mode: bool = True) -> EMA:
        # The averaged copy always stays in eval mode; Lightning calls .train() on every child.
        super().train(mode)
        self.module.eval()
        return self
