"""Fully connected G and D, for toy vectors and flattened images."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as add_spectral_norm

from gan_lab.arguments import Count, Dropout
from gan_lab.nets.packing import pack

ActivationFactory = Callable[[], nn.Module]


def _mlp(
    sizes: Sequence[int], activation: ActivationFactory, dropout: float = 0.0, sn: bool = False
) -> nn.Sequential:
    layers: list[nn.Module] = []
    linears = [nn.Linear(fan_in, fan_out) for fan_in, fan_out in zip(sizes[:-1], sizes[1:])]
    for i, linear in enumerate(linears):
        layers.append(linear)
        if i < len(linears) - 1:
            layers.append(activation())
            if dropout:
                layers.append(nn.Dropout(dropout))
    if sn:
        # Once every layer has its init: SN's power iteration draws from the RNG, so wrapping
        # as we go would give the later layers other weights than the same seed without SN.
        for linear in linears:
            add_spectral_norm(linear)
    return nn.Sequential(*layers)


class MLPGenerator(nn.Module):
    """z (B, latent_dim) -> samples (B, *sample_shape) through hidden ReLU layers.

    ``skip=True`` makes G(z) = z + f(z) with f's last layer zero at init, so G starts as the
    identity: for a prior that already lives in data space (2-D uniform z on a square around
    the 25-Gaussian grid), every mode has its share of z from the first step and G only has to
    contract each share onto its mode, instead of growing the support out from a small blob.
    """

    def __init__(
        self,
        latent_dim: int,
        sample_shape: Sequence[int],
        hidden: Sequence[Count] = (256, 256),
        activation: ActivationFactory = nn.ReLU,
        output_tanh: bool = False,
        skip: bool = False,
    ) -> None:
        super().__init__()
        self.sample_shape = tuple(sample_shape)
        out_features = math.prod(self.sample_shape)
        if skip and latent_dim != out_features:
            raise ValueError(
                f"model.g.skip=true adds z to G's output, so the prior's dim ({latent_dim}) must "
                f"equal the sample size ({out_features}); set prior.dim={out_features} or "
                "model.g.skip=false"
            )
        self.skip = skip
        self.net = _mlp([latent_dim, *hidden, out_features], activation)
        if skip:
            last = self.net[-1]
            assert isinstance(last, nn.Linear)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        # tanh matches image data scaled to [-1, 1]; toy data is unbounded.
        self.output = nn.Tanh() if output_tanh else nn.Identity()

    def forward(self, z: Tensor) -> Tensor:
        x = self.net(z)
        if self.skip:
            x = x + z
        return self.output(x).view(z.shape[0], *self.sample_shape)


class MLPDiscriminator(nn.Module):
    """samples (B, *sample_shape) -> logits (B // pack,)."""

    def __init__(
        self,
        sample_shape: Sequence[int],
        hidden: Sequence[Count] = (256, 256),
        activation: ActivationFactory = lambda: nn.LeakyReLU(0.2),
        pack: Count = 1,
        spectral_norm: bool = False,
        dropout: Dropout = 0.0,
    ) -> None:
        super().__init__()
        self.pack = pack
        in_features = pack * math.prod(sample_shape)
        self.net = _mlp([in_features, *hidden, 1], activation, dropout, spectral_norm)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(pack(x.flatten(1), self.pack)).squeeze(1)
