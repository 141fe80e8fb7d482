"""DCGAN (Radford et al. 2016): transposed-conv G, strided-conv D, sized from the data."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as add_spectral_norm

from gan_lab.arguments import Count
from gan_lab.nets.packing import pack

SUPPORTED_RESOLUTIONS = (8, 16, 28, 32, 64)


def _stages(resolution: int) -> tuple[int, int]:
    """(start size, number of x2 stages): 28 starts at 7x7, powers of two at 4x4."""
    if resolution not in SUPPORTED_RESOLUTIONS:
        raise ValueError(
            f"DCGAN does not support resolution {resolution}; supported: {SUPPORTED_RESOLUTIONS} "
            "(resize the data, e.g. data.resolution=32)"
        )
    start = 7 if resolution == 28 else 4
    return start, int(math.log2(resolution // start))


def dcgan_init(module: nn.Module) -> None:
    """Weights N(0, 0.02) for convs, N(1, 0.02) for BatchNorm scales (Radford et al. 2016)."""
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class DCGANGenerator(nn.Module):
    """z (B, latent_dim) -> images (B, C, H, W) in [-1, 1]; BatchNorm + ReLU, tanh output."""

    # Declared for start-up validation: square images (C, R, R) with R one of these.
    resolutions: ClassVar[tuple[int, ...]] = SUPPORTED_RESOLUTIONS

    def __init__(self, latent_dim: int, sample_shape: Sequence[int], base_channels: Count = 64):
        super().__init__()
        channels, height, width = sample_shape
        if height != width:
            raise ValueError(f"DCGAN needs square images, got {height}x{width}")
        start, n = _stages(height)
        widths = [base_channels * 2 ** (n - 1 - i) for i in range(n)]
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim, widths[0], start, 1, 0, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(True),
        ]
        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [
                nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(True),
            ]
        layers += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(dcgan_init)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z[:, :, None, None])


class DCGANDiscriminator(nn.Module):
    """images (B, C, H, W) -> logits (B // pack,); strided convs with LeakyReLU(0.2).

    With ``spectral_norm=True`` BatchNorm is left out (Miyato et al. 2018): SN already bounds
    each layer, and BN's batch statistics would mix the samples that D judges.
    """

    resolutions: ClassVar[tuple[int, ...]] = SUPPORTED_RESOLUTIONS

    def __init__(
        self,
        sample_shape: Sequence[int],
        base_channels: Count = 64,
        pack: Count = 1,
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        channels, height, width = sample_shape
        if height != width:
            raise ValueError(f"DCGAN needs square images, got {height}x{width}")
        start, n = _stages(height)
        self.pack = pack
        widths = [base_channels * 2**i for i in range(n)]
        layers: list[nn.Module] = [
            nn.Conv2d(channels * pack, widths[0], 4, 2, 1),
            nn.LeakyReLU(0.2, True),
        ]
        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
            layers.append(nn.Conv2d(c_in, c_out, 4, 2, 1, bias=spectral_norm))
            if not spectral_norm:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.LeakyReLU(0.2, True))
        layers.append(nn.Conv2d(widths[-1], 1, start, 1, 0))
        self.net = nn.Sequential(*layers)
        self.apply(dcgan_init)
        if spectral_norm:
            # After the init: SN's ``weight`` is computed from the stored one, so writing into
            # it would change nothing, and its power iteration starts from the final weights.
            for layer in self.net:
                if isinstance(layer, nn.Conv2d):
                    add_spectral_norm(layer)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(pack(x, self.pack)).flatten()
