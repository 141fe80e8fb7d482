"""D regularizers, composable with any loss: ``reg(D, real, fake) -> weighted penalty``.

A packing D (PacGAN, ``pack = m``) is a function of its packed input, m consecutive samples
side by side, so both penalties treat one packed input as one point: the gradient norm is taken
over the m samples' gradients together, and WGAN-GP interpolates whole packed inputs.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from gan_lab.arguments import Count, NonNegative
from gan_lab.nets.packing import pack, pack_size


def _input_gradients(discriminator: nn.Module, x: Tensor) -> Tensor:
    """Gradient of D's output w.r.t. each input D judged: shape (B / m, m * features)."""
    x = x.detach().requires_grad_(True)
    # Each logit depends only on its own packed input, so the sum gives each its own gradient.
    (grad,) = torch.autograd.grad(discriminator(x).sum(), x, create_graph=True)
    return pack(grad, pack_size(discriminator)).flatten(1)


class Regularizer:
    """A penalty on D, added to D's loss every ``every``-th iteration (scaled by ``every``).

    ``lipschitz`` declares whether the penalty keeps D (about) 1-Lipschitz everywhere, which a
    Wasserstein critic needs (gan_lab.validation); ``scope`` says where it acts.
    """

    lipschitz: ClassVar[bool] = False
    scope: ClassVar[str] = ""

    def __init__(self, weight: NonNegative, every: Count = 1) -> None:
        self.weight, self.every = weight, every

    def __call__(self, discriminator: nn.Module, real: Tensor, fake: Tensor) -> Tensor:
        raise NotImplementedError


class GradientPenalty(Regularizer):
    """WGAN-GP (Gulrajani et al. 2017): weight * E[(||grad D(x_hat)|| - target)^2]."""

    lipschitz = True
    scope = "on interpolates of real and fake samples"

    def __init__(
        self, weight: NonNegative = 10.0, target: NonNegative = 1.0, every: Count = 1
    ) -> None:
        super().__init__(weight, every)
        self.target = target

    def __call__(self, discriminator: nn.Module, real: Tensor, fake: Tensor) -> Tensor:
        m = pack_size(discriminator)
        eps = torch.rand(
            real.shape[0] // m, *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype
        ).repeat_interleave(m, dim=0)
        x_hat = eps * real.detach() + (1 - eps) * fake.detach()
        norms = _input_gradients(discriminator, x_hat).norm(2, dim=1)
        return self.weight * (norms - self.target).pow(2).mean()


class R1Penalty(Regularizer):
    """R1 (Mescheder et al. 2018): weight / 2 * E[||grad D(x)||^2] on real data."""

    scope = "on real data only"

    def __init__(self, weight: NonNegative = 10.0, every: Count = 1) -> None:
        super().__init__(weight, every)

    def __call__(self, discriminator: nn.Module, real: Tensor, fake: Tensor) -> Tensor:
        return 0.5 * self.weight * _input_gradients(discriminator, real).pow(2).sum(1).mean()
