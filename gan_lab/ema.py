"""Exponential moving average of the generator's weights (not D's)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA(nn.Module):
    """Keeps ``module`` = EMA of a model's parameters; buffers (BatchNorm stats) are copied.

    p_ema <- decay * p_ema + (1 - decay) * p after each generator step (Karras et al. 2018).
    An nn.Module so the average is saved and restored inside the LightningModule's checkpoint.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__()
        if not 0.0 < decay < 1.0:
            raise ValueError(f"train.ema_decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        ema_params = list(self.module.parameters())
        torch._foreach_lerp_(ema_params, [p.detach() for p in model.parameters()], 1.0 - self.decay)
        for ema_buffer, buffer in zip(self.module.buffers(), model.buffers(), strict=True):
            ema_buffer.copy_(buffer)

    def train(self, mode: bool = True) -> EMA:
        # The averaged copy always stays in eval mode; Lightning calls .train() on every child.
        super().train(mode)
        self.module.eval()
        return self
