"""GAN losses, each computed from D's raw logits in a numerically stable form.

Every loss has the same interface: ``d_loss(real_logits, fake_logits)`` (minimised by D),
``g_loss(fake_logits)`` (minimised by G) and ``after_d_step(discriminator)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# log D(x) = -softplus(-l) and log(1 - D(x)) = -softplus(l) for D(x) = sigmoid(l): exact and
# finite for any logit, unlike log(sigmoid(l)).


def value_function(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """The paper's V(D, G) = E[log D(x)] + E[log(1 - D(G(z)))] estimated on a minibatch."""
    return -F.softplus(-real_logits).mean() - F.softplus(fake_logits).mean()


class GANLoss:
    """Interface of every loss; subclasses override the two losses."""

    def d_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        raise NotImplementedError

    def g_loss(self, fake_logits: Tensor) -> Tensor:
        raise NotImplementedError

    def after_d_step(self, discriminator: nn.Module) -> None:
        """Constraint applied after each D update (weight clipping for WGAN); none by default."""


class MinimaxLoss(GANLoss):
    """The minimax game of Goodfellow et al. 2014: G minimises E[log(1 - D(G(z)))] (saturates)."""

    def d_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        return -value_function(real_logits, fake_logits)

    def g_loss(self, fake_logits: Tensor) -> Tensor:
        return -F.softplus(fake_logits).mean()


class NonSaturatingLoss(MinimaxLoss):
    """Goodfellow et al. 2014, Sec. 3: G maximises E[log D(G(z))] for strong early gradients."""

    def g_loss(self, fake_logits: Tensor) -> Tensor:
        return F.softplus(-fake_logits).mean()


class LeastSquaresLoss(GANLoss):
    """LSGAN (Mao et al. 2017), targets a=0 (fake), b=1 (real), c=1 (G), on raw D outputs."""

    def d_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        return 0.5 * ((real_logits - 1).pow(2).mean() + fake_logits.pow(2).mean())

    def g_loss(self, fake_logits: Tensor) -> Tensor:
        return 0.5 * (fake_logits - 1).pow(2).mean()


class HingeLoss(GANLoss):
    """Hinge loss (Lim & Ye 2017; Miyato et al. 2018)."""

    def d_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()

    def g_loss(self, fake_logits: Tensor) -> Tensor:
        return -fake_logits.mean()


class WassersteinLoss(GANLoss):
    """WGAN critic loss (Arjovsky et al. 2017) with weight clipping to [-clip, clip].

    ``clip=None`` turns clipping off, for use with a gradient penalty (Gulrajani et al. 2017).
    """

    def __init__(self, clip: float | None = 0.01) -> None:
        if clip is not None and not (clip > 0 and math.isfinite(clip)):
            raise ValueError(f"loss.clip must be a positive number or null, got {clip}")
        self.clip = clip

    def d_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        return fake_logits.mean() - real_logits.mean()

    def g_loss(self, fake_logits: Tensor) -> Tensor:
        return -fake_logits.mean()

    @torch.no_grad()
    def after_d_step(self, discriminator: nn.Module) -> None:
        if self.clip is not None:
            for parameter in discriminator.parameters():
                parameter.clamp_(-self.clip, self.clip)
