"""Losses pinned to hand-computed values of the paper's formulas."""

from __future__ import annotations

import math

import pytest
import torch

from gan_lab.losses import (
    HingeLoss,
    LeastSquaresLoss,
    MinimaxLoss,
    NonSaturatingLoss,
    WassersteinLoss,
    value_function,
)


def logit(p: float) -> torch.Tensor:
    return torch.tensor([math.log(p / (1 - p))], dtype=torch.float64)


D_REAL, D_FAKE = 0.8, 0.3  # D(x) and D(G(z))


def test_minimax_matches_the_paper():
    loss = MinimaxLoss()
    # D ascends V = log D(x) + log(1 - D(G(z))), so it minimises -V.
    expected_v = math.log(D_REAL) + math.log(1 - D_FAKE)
    assert loss.d_loss(logit(D_REAL), logit(D_FAKE)).item() == pytest.approx(-expected_v, abs=1e-12)
    assert value_function(logit(D_REAL), logit(D_FAKE)).item() == pytest.approx(
        expected_v, abs=1e-12
    )
    # G descends log(1 - D(G(z))).
    assert loss.g_loss(logit(D_FAKE)).item() == pytest.approx(math.log(1 - D_FAKE), abs=1e-12)


def test_non_saturating_generator_maximises_log_d():
    loss = NonSaturatingLoss()
    assert loss.g_loss(logit(D_FAKE)).item() == pytest.approx(-math.log(D_FAKE), abs=1e-12)
    assert loss.d_loss(logit(D_REAL), logit(D_FAKE)).item() == pytest.approx(
        -(math.log(D_REAL) + math.log(1 - D_FAKE)), abs=1e-12
    )


def test_least_squares_hinge_wasserstein_values():
    real, fake = torch.tensor([0.5, 1.5]), torch.tensor([-2.0, 0.5])
    ls = LeastSquaresLoss()
    assert ls.d_loss(real, fake).item() == pytest.approx(0.5 * ((0.25 + 0.25) / 2 + (4 + 0.25) / 2))
    assert ls.g_loss(fake).item() == pytest.approx(0.5 * (9 + 0.25) / 2)
    hinge = HingeLoss()
    assert hinge.d_loss(real, fake).item() == pytest.approx((0.5 + 0) / 2 + (0 + 1.5) / 2)
    assert hinge.g_loss(fake).item() == pytest.approx(0.75)
    wgan = WassersteinLoss()
    assert wgan.d_loss(real, fake).item() == pytest.approx(-0.75 - 1.0)
    assert wgan.g_loss(fake).item() == pytest.approx(0.75)


def _g_grad(loss, fake_logit: float) -> float:
    logits = torch.tensor([fake_logit], requires_grad=True)
    loss.g_loss(logits).backward()
    return logits.grad.abs().item()


def test_minimax_generator_gradient_saturates_non_saturating_does_not():
    # D(G(z)) = sigmoid(-10) ~ 4.5e-5: D confidently rejects the fakes (early training).
    assert _g_grad(MinimaxLoss(), -10.0) < 1e-4
    assert _g_grad(NonSaturatingLoss(), -10.0) > 0.99


@pytest.mark.parametrize(
    "loss", [MinimaxLoss(), NonSaturatingLoss(), LeastSquaresLoss(), HingeLoss()]
)
def test_losses_are_finite_at_extreme_logits(loss):
    big = torch.tensor([100.0, -100.0], requires_grad=True)
    values = [loss.d_loss(big, big), loss.g_loss(big)]
    for value in values:
        assert torch.isfinite(value)
        (grad,) = torch.autograd.grad(value, big)
        assert torch.isfinite(grad).all()


def test_wasserstein_clips_critic_weights():
    critic = torch.nn.Linear(4, 1)
    with torch.no_grad():
        critic.weight.fill_(0.5)
    WassersteinLoss(clip=0.01).after_d_step(critic)
    assert critic.weight.abs().max().item() == pytest.approx(0.01)
    with pytest.raises(ValueError, match="loss.clip"):
        WassersteinLoss(clip=-1.0)
