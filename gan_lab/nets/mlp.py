"""Fully connected G and D, for toy vectors and flattened images."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as add_spectral_norm

from gan_lab.nets.packing import pack

ActivationFactory = Callable[[], nn.Module]


def _mlp(
    sizes: Sequence[int], activation: ActivationFactory, dropout: float = 0.0, sn: bool = False
) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        linear = nn.Linear(fan_in, fan_out)
        layers.append(add_spectral_norm(linear) if sn else linear)
        if i < len(sizes) - 2:
            layers.append(activation())
            if dropout:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class MLPGenerator(nn.Module):
    """z (B, latent_dim) -> samples (B, *sample_shape) through hidden ReLU layers."""

    def __init__(
        self,
        latent_dim: int,
        sample_shape: Sequence[int],
        hidden: Sequence[int] = (256, 256),
        activation: ActivationFactory = nn.ReLU,
        output_tanh: bool = False,
    ) -> None:
        super().__init__()
        self.sample_shape = tuple(sample_shape)
        self.net = _mlp([latent_dim, *hidden, math.prod(self.sample_shape)], activation)
        # tanh matches image data scaled to [-1, 1]; toy data is unbounded.
        self.output = nn.Tanh() if output_tanh else nn.Identity()

    def forward(self, z: Tensor) -> Tensor:
        return self.output(self.net(z)).view(z.shape[0], *self.sample_shape)


class MLPDiscriminator(nn.Module):
    """samples (B, *sample_shape) -> logits (B // pack,)."""

    def __init__(
        self,
        sample_shape: Sequence[int],
        hidden: Sequence[int] = (256, 256),
        activation: ActivationFactory = lambda: nn.LeakyReLU(0.2),
        pack: int = 1,
        spectral_norm: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.pack = pack
        in_features = pack * math.prod(sample_shape)
        self.net = _mlp([in_features, *hidden, 1], activation, dropout, spectral_norm)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(pack(x.flatten(1), self.pack)).squeeze(1)
