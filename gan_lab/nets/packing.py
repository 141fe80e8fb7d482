"""PacGAN packing (Lin et al. 2018): D judges m samples at once; the one place that reshapes."""

from __future__ import annotations

from torch import Tensor, nn


def pack(x: Tensor, m: int) -> Tensor:
    """(B, D) -> (B/m, m*D) for vectors; (B, C, H, W) -> (B/m, m*C, H, W) for images."""
    if m == 1:
        return x
    if x.shape[0] % m:
        raise ValueError(
            f"batch of {x.shape[0]} is not divisible by pack={m}; "
            "choose data.batch_size as a multiple of model.d.pack"
        )
    # Consecutive samples are grouped: reshape merges them along the first feature axis.
    return x.reshape(x.shape[0] // m, m * x.shape[1], *x.shape[2:])


def pack_size(discriminator: nn.Module) -> int:
    """How many samples ``discriminator`` judges at once: its declared ``pack``, else 1."""
    return int(getattr(discriminator, "pack", 1))
