"""Instance noise: Gaussian noise on D's inputs, real and fake alike, annealed to zero."""

from __future__ import annotations

from typing import Annotated

import torch
from torch import Tensor

from gan_lab.arguments import Count, Interval, NonNegative

# The fraction of the run over which the noise falls to 0.
Until = Annotated[float, Interval(gt=0, le=1)]


class InstanceNoise:
    """Adds N(0, std_t^2) to every input D judges, with std_t falling linearly to 0.

    Sønderby et al. (2017) and Arjovsky & Bottou (2017): blurring both distributions makes
    their supports overlap, so D's gradient reaches G's samples from every data mode, also
    from modes G has not reached yet. (On the 25-Gaussian grid it did not stop G from losing
    an edge row of modes once the noise was gone; ``model.g.skip`` did, see grid_best.)
    ``std_t = std * (1 - t / (until * total))`` for iteration t, 0 from ``until * total`` on,
    so the rest of the run is the clean game and the modes sharpen.

    D's inputs are noised in the D step and the G step; regularizers see the clean samples.
    """

    def __init__(self, std: NonNegative, total: Count, until: Until = 0.25) -> None:
        if std < 0:
            raise ValueError(f"instance_noise.std must be >= 0, got {std}")
        if total <= 0:
            raise ValueError(
                f"instance_noise.total must be a positive iteration count, got {total}"
            )
        if not 0.0 < until <= 1.0:
            raise ValueError(
                f"instance_noise.until is a fraction of the run in (0, 1], got {until}"
            )
        self.std, self.total, self.until = std, total, until

    def std_at(self, iteration: int) -> float:
        """The noise standard deviation at ``iteration`` (counted in GAN iterations)."""
        return self.std * max(0.0, 1.0 - iteration / (self.until * self.total))

    def __call__(self, x: Tensor, iteration: int) -> Tensor:
        std = self.std_at(iteration)
        if std == 0.0:
            return x
        return x + std * torch.randn_like(x)
