"""Priors p_z: shapes, support and moments."""

from __future__ import annotations

import pytest
import torch

from gan_lab.priors import GaussianPrior, UniformPrior


def test_gaussian_prior_moments():
    z = GaussianPrior(dim=3).sample(50_000, generator=torch.Generator().manual_seed(0))
    assert z.shape == (50_000, 3)
    assert z.mean(0).abs().max() < 0.02 and (z.std(0) - 1).abs().max() < 0.02


def test_uniform_prior_support_and_moments():
    z = UniformPrior(dim=2).sample(50_000, generator=torch.Generator().manual_seed(0))
    assert z.min() >= -1 and z.max() <= 1
    assert (z.var(0) - 1 / 3).abs().max() < 0.01  # Var U[-1, 1] = 1/3


@pytest.mark.parametrize("dim", [0, -3])
def test_prior_rejects_bad_dim(dim):
    with pytest.raises(ValueError, match="prior.dim"):
        GaussianPrior(dim=dim)
