"""Gradient penalty, R1, spectral norm, packing and EMA against closed forms."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gan_lab.ema import EMA
from gan_lab.nets.dcgan import DCGANDiscriminator
from gan_lab.nets.mlp import MLPDiscriminator
from gan_lab.nets.packing import pack
from gan_lab.regularizers import GradientPenalty, R1Penalty


class LinearD(nn.Module):
    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w


W = torch.tensor([3.0, 4.0])  # ||w|| = 5


def test_gradient_penalty_on_linear_d_matches_hand_value():
    real, fake = torch.randn(16, 2), torch.randn(16, 2)
    penalty = GradientPenalty(weight=10.0)(LinearD(W), real, fake)
    assert penalty.item() == pytest.approx(10.0 * (5.0 - 1.0) ** 2)
    penalty.backward()  # differentiable w.r.t. D's parameters (create_graph)


def test_r1_is_zero_for_constant_d_and_closed_form_for_linear_d():
    class ConstantD(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Parameter(torch.tensor(1.0))

        def forward(self, x):
            return self.c + 0 * x.sum(1)

    real = torch.randn(8, 2)
    assert R1Penalty(weight=10.0)(ConstantD(), real, real).item() == 0.0
    assert R1Penalty(weight=10.0)(LinearD(W), real, real).item() == pytest.approx(0.5 * 10.0 * 25.0)


def test_spectral_norm_keeps_largest_singular_value_near_one():
    torch.manual_seed(0)
    disc = MLPDiscriminator((2,), hidden=(64, 64), spectral_norm=True)
    for _ in range(20):  # power iteration runs in train-mode forwards
        disc(torch.randn(32, 2))
    disc.eval()
    for layer in (m for m in disc.modules() if isinstance(m, nn.Linear)):
        sigma = torch.linalg.matrix_norm(layer.weight.detach(), ord=2).item()
        assert sigma == pytest.approx(1.0, abs=0.05)


def test_packing_groups_consecutive_samples_and_rejects_bad_batches():
    x = torch.arange(12.0).reshape(6, 2)
    packed = pack(x, 3)
    assert packed.shape == (2, 6)
    assert torch.equal(packed[1], torch.cat([x[3], x[4], x[5]]))
    images = torch.randn(4, 1, 8, 8)
    assert torch.equal(pack(images, 2)[1, 1], images[3, 0])
    with pytest.raises(ValueError, match="batch of 10 is not divisible by pack=4"):
        pack(torch.randn(10, 2), 4)
    assert MLPDiscriminator((2,), hidden=(8,), pack=4)(torch.randn(8, 2)).shape == (2,)
    assert DCGANDiscriminator((1, 8, 8), base_channels=4, pack=2)(images).shape == (2,)


def test_ema_matches_closed_form():
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema, d = EMA(model, decay=0.9), 0.9
    for value in (3.0, 5.0):
        with torch.no_grad():
            model.weight.fill_(value)
        ema.update(model)
    expected = d * d * 1.0 + d * (1 - d) * 3.0 + (1 - d) * 5.0
    assert ema.module.weight.item() == pytest.approx(expected)
    assert not ema.module.weight.requires_grad
