"""GAN losses, each computed from D's raw logits in a numerically stable form.

Every loss has the same interface: ``d_loss(real_logits, fake_logits)`` (minimised by D),
``g_loss(fake_logits)`` (minimised by G), ``after_d_step(discriminator)``, and two that say what
D's raw outputs mean under this loss: ``diagnostics`` (what training logs about D) and
``d_star_estimate`` (D's estimate of the paper's D*, where it has one).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gan_lab.arguments import Positive

# log D(x) = -softplus(-l) and log(1 - D(x)) = -softplus(l) for D(x) = sigmoid(l): exact and
# finite for any logit, unlike log(sigmoid(l)).


def value_function(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """The paper's V(D, G) = E[log D(x)] + E[log(1 - D(G(z)))] estimated on a minibatch."""
    return -F.softplus(-real_logits).mean() - F.softplus(fake_logits).mean()


class GANLoss:
    """Interface of every loss; subclasses override the two losses.

    ``needs_lipschitz_critic`` declares that D's scores mean something only for a (about)
    1-Lipschitz D, which start-up validation then requires of the config.
    """

    needs_lipschitz_critic: ClassVar[bool] = False

    def d_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        raise NotImplementedError

    def g_loss(self, fake_logits: Tensor) -> Tensor:
        raise NotImplementedError

    def after_d_step(self, discriminator: nn.Module) -> None:
        """Constraint applied after each D update (weight clipping for WGAN); none by default."""

    def diagnostics(self, real_out: Tensor, fake_out: Tensor) -> dict[str, Tensor]:
        """What to log about D on a minibatch; by default its mean raw outputs (scores, which a
        sigmoid would not turn into probabilities)."""
        return {"d_real_output": real_out.mean(), "d_fake_output": fake_out.mean()}

    def d_star_estimate(self, outputs: Tensor) -> Tensor | None:
        """D's estimate of D*(x) = p_data / (p_data + p_g) from its raw outputs, or None when
        this loss's D does not estimate it (then the 1-D theory skips V(D, G) and |D - D*|)."""
        return None


class MinimaxLoss(GANLoss):
    """The minimax game of Goodfellow et al. 2014: G minimises E[log(1 - D(G(z)))] (saturates)."""

    def d_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        return -value_function(real_logits, fake_logits)

    def g_loss(self, fake_logits: Tensor) -> Tensor:
        return -F.softplus(fake_logits).mean()

    def diagnostics(self, real_out: Tensor, fake_out: Tensor) -> dict[str, Tensor]:
        """D(x) and D(G(z)) as the paper's probabilities, and V(D, G) on the minibatch."""
        return {
            "d_real": torch.sigmoid(real_out).mean(),
            "d_fake": torch.sigmoid(fake_out).mean(),
            "value": value_function(real_out, fake_out),
        }

    def d_star_estimate(self, outputs: Tensor) -> Tensor:
        return torch.sigmoid(outputs)


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

    def d_star_estimate(self, outputs: Tensor) -> Tensor:
        # Mao et al. 2017, Prop. 1: the optimal D is (b p_data + a p_g) / (p_data + p_g), which
        # with a=0, b=1 is the paper's D*, on the raw output.
        return outputs


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

    needs_lipschitz_critic = True

    def __init__(self, clip: Positive | None = 0.01) -> None:
        if clip is not None and not (clip > 0 and math.isfinite(clip)):
            raise ValueError(f"loss.clip must be a positive number or null, got {clip}")
        self.clip = clip

    def d_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        return fake_logits.mean() - real_logits.mean()

    def diagnostics(self, real_out: Tensor, fake_out: Tensor) -> dict[str, Tensor]:
        """Mean scores and their gap E[D(x)] - E[D(G(z))]: the critic's estimate of the
        Wasserstein-1 distance, up to its Lipschitz constant (the curve WGAN papers plot)."""
        gap = real_out.mean() - fake_out.mean()
        return {**super().diagnostics(real_out, fake_out), "critic_gap": gap}

    def g_loss(self, fake_logits: Tensor) -> Tensor:
        return -fake_logits.mean()

    @torch.no_grad()
    def after_d_step(self, discriminator: nn.Module) -> None:
        if self.clip is not None:
            for parameter in discriminator.parameters():
                parameter.clamp_(-self.clip, self.clip)
