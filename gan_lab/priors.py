"""Noise priors p_z; the GAN samples z only through ``sample``."""

from __future__ import annotations

import torch
from torch import Tensor

from gan_lab.arguments import Count


class Prior:
    """A distribution over latent vectors of size ``dim``."""

    def __init__(self, dim: Count) -> None:
        if int(dim) != dim or dim <= 0:
            raise ValueError(f"prior.dim must be a positive integer, got {dim}")
        self.dim = int(dim)

    def sample(
        self,
        n: int,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        raise NotImplementedError


class GaussianPrior(Prior):
    """Standard normal N(0, I)."""

    def sample(self, n, device=None, generator=None) -> Tensor:
        return torch.randn(n, self.dim, device=device, generator=generator)


class UniformPrior(Prior):
    """Uniform on [low, high]^dim; the 2014 paper's choice with [-1, 1]."""

    def __init__(self, dim: Count, low: float = -1.0, high: float = 1.0) -> None:
        super().__init__(dim)
        if not low < high:
            raise ValueError(f"prior.low must be < prior.high, got {low} >= {high}")
        self.low, self.high = low, high

    def sample(self, n, device=None, generator=None) -> Tensor:
        u = torch.rand(n, self.dim, device=device, generator=generator)
        return u * (self.high - self.low) + self.low
