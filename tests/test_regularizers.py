"""Gradient penalty, R1, spectral norm, packing and EMA against closed forms."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gan_lab.build import build_datamodule, build_module, build_trainer
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


class PackedD(nn.Module):
    """D on packed inputs (``pack`` consecutive samples side by side): linear, or a quadratic
    0.5 * ||x||^2 whose input gradient is the packed input itself."""

    def __init__(self, m: int, w: torch.Tensor | None = None) -> None:
        super().__init__()
        self.pack = m
        self.w = None if w is None else nn.Parameter(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        packed = pack(x.flatten(1), self.pack)
        return packed @ self.w if self.w is not None else 0.5 * packed.pow(2).sum(1)


def test_gradient_penalty_with_packing_is_per_packed_input():
    """WGAN-GP on D(packed x): one interpolation coefficient and one gradient norm per packed
    input. D's weight [3, 4, 0, 0] has norm 5 per packed input (per sample: 5 and 0)."""
    m = 2
    real, fake = torch.randn(8, 2), torch.randn(8, 2)
    linear = PackedD(m, torch.tensor([3.0, 4.0, 0.0, 0.0]))
    assert GradientPenalty(weight=10.0)(linear, real, fake).item() == pytest.approx(160.0)

    torch.manual_seed(1)
    penalty = GradientPenalty(weight=10.0)(PackedD(m), real, fake)
    torch.manual_seed(1)
    eps = torch.rand(4, 1)  # one per packed input
    x_hat = eps * pack(real, m) + (1 - eps) * pack(fake, m)
    expected = 10.0 * (x_hat.norm(dim=1) - 1.0).pow(2).mean()
    assert penalty.item() == pytest.approx(expected.item(), rel=1e-5)


def test_r1_with_packing_is_per_packed_input():
    real = torch.randn(8, 2)
    linear = PackedD(2, torch.tensor([3.0, 4.0, 0.0, 0.0]))
    assert R1Penalty(weight=10.0)(linear, real, real).item() == pytest.approx(0.5 * 10.0 * 25.0)
    expected = 0.5 * 10.0 * pack(real, 2).pow(2).sum(1).mean()
    assert R1Penalty(weight=10.0)(PackedD(2), real, real).item() == pytest.approx(expected.item())


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


def _scalar_model(value: float) -> nn.Linear:
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(value)
    return model


def test_ema_without_warmup_matches_closed_form():
    model = _scalar_model(1.0)
    ema, d = EMA(model, decay=0.9, warmup=False), 0.9
    for step, value in enumerate((3.0, 5.0)):
        with torch.no_grad():
            model.weight.fill_(value)
        ema.update(model, step)
    expected = d * d * 1.0 + d * (1 - d) * 3.0 + (1 - d) * 5.0
    assert ema.module.weight.item() == pytest.approx(expected)
    assert not ema.module.weight.requires_grad


@pytest.mark.parametrize("updates", [1, 10, 1000, 20000])
def test_ema_warmup_matches_closed_form_of_the_ramped_decay(updates):
    """decay_t = min(decay, (1 + t) / (10 + t)) for the t-th update (t from 0): with the weights
    held at 1 after an init of 0, the EMA is 1 - prod_t decay_t. After one update the EMA is
    90 % the current weights, not 0.1 % as with a fixed 0.999."""
    decay = 0.999
    ema = EMA(_scalar_model(0.0), decay=decay)
    model = _scalar_model(1.0)
    for step in range(updates):
        ema.update(model, step)
    init_share = math.prod(min(decay, (1 + t) / (10 + t)) for t in range(updates))
    assert ema.module.weight.item() == pytest.approx(1.0 - init_share, rel=1e-5, abs=1e-6)
    if updates == 1:
        assert ema.module.weight.item() == pytest.approx(0.9)
    if updates == 1000:  # the first evaluation of ring_best: no trace of the init left
        assert ema.module.weight.item() == pytest.approx(1.0, abs=1e-6)


def test_ema_copies_buffers_and_averages_parameters():
    """BatchNorm's running statistics are copied from the live G (as StyleGAN2-ADA and EDM do),
    only parameters are averaged."""
    model = nn.BatchNorm1d(3)
    ema = EMA(model, decay=0.5, warmup=False)
    model.train()
    model(torch.randn(16, 3) * 4 + 2)
    with torch.no_grad():
        model.weight.fill_(3.0)
    ema.update(model, 0)
    assert torch.equal(ema.module.running_mean, model.running_mean)
    assert torch.equal(ema.module.running_var, model.running_var)
    assert torch.equal(ema.module.num_batches_tracked, model.num_batches_tracked)
    assert torch.allclose(ema.module.weight, torch.full((3,), 2.0))


@pytest.mark.parametrize("warmup", [True, False])
def test_training_ema_tracks_the_generator_from_the_first_iterations(make_config, warmup):
    """ring_best's decay 0.999, 30 iterations: with the warm-up the averaged G sits near the
    live G; without it (the old behaviour, still selectable) it is still ~99 % the init."""
    cfg = make_config(
        "experiment=ring_mlp",
        "train.iterations=30",
        "train.ema_decay=0.999",
        f"train.ema_warmup={warmup}",
    )
    torch.manual_seed(0)
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule.sample_shape)
    init = torch.cat([p.detach().flatten().clone() for p in module.generator.parameters()])
    build_trainer(cfg).fit(module, datamodule=datamodule)
    live = torch.cat([p.detach().flatten() for p in module.generator.parameters()])
    ema = torch.cat([p.flatten() for p in module.generator_ema.module.parameters()])
    lag = (ema - live).norm() / (init - live).norm()
    if warmup:
        assert lag < 0.5
    else:
        assert lag > 0.9
