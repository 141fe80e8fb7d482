"""The paper's theory, numerically: D -> D*, V(D*, G) = 2 JSD - log 4, minimum at p_g = p_data."""

from __future__ import annotations

import math

import pytest
import torch

from gan_lab.losses import NonSaturatingLoss
from gan_lab.metrics.theory import gaussian_density, kde_density, theory_report
from gan_lab.nets.mlp import MLPDiscriminator

DATA_MEAN, DATA_STD = 4.0, 1.25
GRID = torch.linspace(-4.0, 12.0, 4001)


def train_discriminator(g_mean: float, g_std: float, steps: int = 1500) -> MLPDiscriminator:
    """Fit D for a fixed affine G(z) = g_mean + g_std * z, z ~ N(0, 1), on fresh minibatches."""
    torch.manual_seed(0)
    discriminator = MLPDiscriminator((1,), hidden=(64, 64))
    optimizer = torch.optim.Adam(discriminator.parameters(), lr=2e-3)
    loss = NonSaturatingLoss()
    for _ in range(steps):
        real = DATA_MEAN + DATA_STD * torch.randn(1024, 1)
        fake = g_mean + g_std * torch.randn(1024, 1)
        optimizer.zero_grad()
        loss.d_loss(discriminator(real), discriminator(fake)).backward()
        optimizer.step()
    return discriminator


def d_prob(discriminator):
    return lambda x: torch.sigmoid(discriminator(x.float()[:, None])).detach().double()


def test_value_identity_for_known_densities():
    report = theory_report(gaussian_density(DATA_MEAN, DATA_STD), gaussian_density(2.0, 1.0), GRID)
    assert report.value_d_star == pytest.approx(2 * report.jsd - math.log(4), abs=1e-6)
    same = theory_report(
        gaussian_density(DATA_MEAN, DATA_STD), gaussian_density(DATA_MEAN, DATA_STD), GRID
    )
    assert same.jsd == pytest.approx(0.0, abs=1e-9)
    assert same.value_d_star == pytest.approx(-math.log(4), abs=1e-6)


def test_trained_discriminator_approaches_d_star():
    discriminator = train_discriminator(g_mean=2.5, g_std=1.0)
    report = theory_report(
        gaussian_density(DATA_MEAN, DATA_STD),
        gaussian_density(2.5, 1.0),
        GRID,
        d_prob(discriminator),
    )
    assert report.d_vs_dstar_max_err <= 0.05
    assert report.value_d == pytest.approx(2 * report.jsd - math.log(4), abs=0.02)


def test_discriminator_is_one_half_when_p_g_equals_p_data():
    discriminator = train_discriminator(g_mean=DATA_MEAN, g_std=DATA_STD, steps=600)
    report = theory_report(
        gaussian_density(DATA_MEAN, DATA_STD),
        gaussian_density(DATA_MEAN, DATA_STD),
        GRID,
        d_prob(discriminator),
    )
    assert report.d_vs_dstar_max_err <= 0.05  # D* = 1/2 everywhere
    assert report.value_d == pytest.approx(-math.log(4), abs=0.02)


def test_kde_recovers_a_gaussian():
    samples = 1.0 + 2.0 * torch.randn(20_000, generator=torch.Generator().manual_seed(0))
    x = torch.linspace(-6, 8, 200)
    err = (kde_density(samples)(x) - gaussian_density(1.0, 2.0)(x.double())).abs().max()
    assert err < 0.01
