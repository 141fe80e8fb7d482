"""Shapes of every net at every supported size, and DCGAN's initialisation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gan_lab.nets.dcgan import SUPPORTED_RESOLUTIONS, DCGANDiscriminator, DCGANGenerator
from gan_lab.nets.mlp import MLPDiscriminator, MLPGenerator


@pytest.mark.parametrize("resolution", SUPPORTED_RESOLUTIONS)
@pytest.mark.parametrize("channels", [1, 3])
def test_dcgan_shapes(resolution, channels):
    shape = (channels, resolution, resolution)
    generator = DCGANGenerator(latent_dim=8, sample_shape=shape, base_channels=4)
    images = generator(torch.randn(3, 8))
    assert images.shape == (3, *shape) and images.abs().max() <= 1
    assert DCGANDiscriminator(shape, base_channels=4)(images).shape == (3,)


def test_dcgan_rejects_unsupported_resolution():
    with pytest.raises(ValueError, match="resolution 20"):
        DCGANGenerator(8, (1, 20, 20))


def test_dcgan_init_follows_radford():
    generator = DCGANGenerator(latent_dim=64, sample_shape=(1, 64, 64), base_channels=32)
    conv_weights = torch.cat(
        [m.weight.flatten() for m in generator.modules() if isinstance(m, nn.ConvTranspose2d)]
    )
    assert conv_weights.std().item() == pytest.approx(0.02, abs=0.002)


@pytest.mark.parametrize("shape", [(2,), (1, 8, 8)])
def test_mlp_shapes(shape):
    generator = MLPGenerator(latent_dim=4, sample_shape=shape, hidden=(8,), output_tanh=True)
    x = generator(torch.randn(5, 4))
    assert x.shape == (5, *shape)
    assert MLPDiscriminator(shape, hidden=(8,))(x).shape == (5,)


def test_mlp_generator_with_skip_starts_as_the_identity_and_learns():
    generator = MLPGenerator(latent_dim=2, sample_shape=(2,), hidden=(16, 16), skip=True)
    z = torch.rand(32, 2) * 10 - 5
    assert torch.equal(generator(z), z)
    # The zeroed last layer still gets a gradient, so f(z) moves off zero after one step.
    optimizer = torch.optim.SGD(generator.parameters(), lr=0.1)
    generator(z).pow(2).sum().backward()
    optimizer.step()
    assert not torch.allclose(generator(z), z)


def test_mlp_generator_skip_needs_a_prior_of_the_sample_size():
    with pytest.raises(ValueError, match=r"prior.dim=2"):
        MLPGenerator(latent_dim=8, sample_shape=(2,), skip=True)


def _convs(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize("spectral_norm", [False, True])
def test_dcgan_discriminator_init_survives_spectral_norm(spectral_norm):
    """The stored conv weights are N(0, 0.02) with or without spectral norm (SN wraps the
    initialised weight); with SN the weight D uses is that one divided by its spectral norm,
    as power iteration estimates it (from below, so the used weight's norm is >= 1)."""
    torch.manual_seed(0)
    disc = DCGANDiscriminator((1, 32, 32), base_channels=32, spectral_norm=spectral_norm)
    for conv in _convs(disc):
        raw = conv.parametrizations.weight.original if spectral_norm else conv.weight
        assert raw.std().item() == pytest.approx(0.02, rel=0.1), conv
        if spectral_norm:
            used = conv.weight.detach()
            scale = used / raw.detach()
            assert torch.allclose(scale, scale.mean(), rtol=1e-4), conv
            assert 1.0 - 1e-4 <= torch.linalg.matrix_norm(used.flatten(1), ord=2) < 1.05, conv


def test_mlp_discriminator_spectral_norm_keeps_the_default_init():
    """SN wraps nn.Linear's own init: same raw weights as without SN, for the same seed."""
    torch.manual_seed(0)
    plain = MLPDiscriminator((2,), hidden=(64, 64))
    torch.manual_seed(0)
    normed = MLPDiscriminator((2,), hidden=(64, 64), spectral_norm=True)
    linears = [m for m in normed.modules() if isinstance(m, nn.Linear)]
    for a, b in zip([m for m in plain.modules() if isinstance(m, nn.Linear)], linears):
        assert torch.equal(a.weight, b.parametrizations.weight.original)
        assert 1.0 - 1e-4 <= torch.linalg.matrix_norm(b.weight.detach(), ord=2) < 1.05
