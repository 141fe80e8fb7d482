"""Toy distributions sampled on the fly: a 1-D Gaussian, the ring and grid mixtures.

Ring and Grid follow the PacGAN protocol (Lin et al. 2018): 8 modes on a circle of radius 1
with std 0.01, and 25 modes at (-4 + 2i, -4 + 2j) with std 0.05.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from gan_lab.arguments import Count, Positive
from gan_lab.data.base import GANDataModule
from gan_lab.data.streams import SamplerStream


class ToyDataModule(GANDataModule):
    """Base for toy data: samples come from ``sample(n, generator)``, nothing is stored.

    Subclasses pass ``batch_size``, ``seed`` and ``batches_per_step`` through ``**kwargs``.
    """

    kind = "toy"

    def __init__(self, batch_size: Count = 256, seed: int = 0, batches_per_step: Count = 1) -> None:
        # Sampled data has no loader workers and a stateful stream: it behaves like in-memory.
        super().__init__(batch_size, seed, batches_per_step, in_memory=True)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError

    def train_dataloader(self) -> SamplerStream:
        return SamplerStream(
            self.sample, self.batch_size, self.batches_per_step, self.stream_seed()
        )

    def real_samples(self, n: int, split: str = "train") -> Tensor:
        """Fresh samples from a generator seeded by ``seed`` and ``split`` (never exhausted)."""
        generator = torch.Generator().manual_seed(self._split_seed(split))
        return self.sample(n, generator)


class Gaussian1D(ToyDataModule):
    """N(mean, std^2) in one dimension; ``log_prob`` gives the exact density for theory checks."""

    metrics = "gaussian_1d"

    def __init__(self, mean: float = 4.0, std: Positive = 1.25, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mean = mean
        self.std = std
        self.sample_shape = (1,)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.mean + self.std * torch.randn(n, 1, generator=generator)

    def log_prob(self, x: Tensor) -> Tensor:
        """Log density of ``x`` (any shape) under N(mean, std^2)."""
        z = (x - self.mean) / self.std
        return -0.5 * z**2 - math.log(self.std) - 0.5 * math.log(2 * math.pi)


class MixtureDataModule(ToyDataModule):
    """Equal-weight isotropic Gaussian mixture on ``modes`` (M, D) with common ``std``."""

    metrics = "modes"

    def __init__(self, modes: Tensor, std: Positive, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.modes = modes
        self.std = std
        self.sample_shape = (modes.shape[1],)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        which = torch.randint(len(self.modes), (n,), generator=generator)
        noise = torch.randn(n, self.modes.shape[1], generator=generator)
        return self.modes[which] + self.std * noise


class Ring(MixtureDataModule):
    """``n_modes`` Gaussians evenly spaced on a circle of ``radius`` (PacGAN: 8, 1.0, 0.01)."""

    def __init__(
        self, n_modes: Count = 8, radius: Positive = 1.0, std: Positive = 0.01, **kwargs: Any
    ) -> None:
        angles = torch.arange(n_modes, dtype=torch.float64) * (2 * math.pi / n_modes)
        modes = radius * torch.stack([angles.cos(), angles.sin()], dim=1)
        super().__init__(modes.float(), std, **kwargs)


class Grid(MixtureDataModule):
    """``n x n`` Gaussians on a square grid centred at 0 (PacGAN: 5x5, spacing 2, std 0.05)."""

    def __init__(
        self, n: Count = 5, spacing: Positive = 2.0, std: Positive = 0.05, **kwargs: Any
    ) -> None:
        coords = (torch.arange(n, dtype=torch.float32) - (n - 1) / 2) * spacing
        modes = torch.cartesian_prod(coords, coords)
        super().__init__(modes, std, **kwargs)
