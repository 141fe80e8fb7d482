"""Instance noise: the annealing schedule, its statistics, and that D (only D) sees it in a run."""

from __future__ import annotations

import pytest
import torch

from gan_lab.gan_module import GANModule
from gan_lab.instance_noise import InstanceNoise
from gan_lab.train import fit


def test_std_falls_linearly_to_zero_at_until():
    noise = InstanceNoise(std=0.4, total=100, until=0.25)
    assert noise.std_at(0) == pytest.approx(0.4)
    assert noise.std_at(10) == pytest.approx(0.4 * (1 - 10 / 25))
    assert noise.std_at(25) == 0.0
    assert noise.std_at(99) == 0.0


def test_noise_has_the_scheduled_std_and_is_off_after_until():
    torch.manual_seed(0)
    noise = InstanceNoise(std=0.3, total=10, until=0.5)
    x = torch.ones(200_000, 2)
    assert (noise(x, 0) - x).std().item() == pytest.approx(0.3, rel=0.01)
    assert (noise(x, 4) - x).std().item() == pytest.approx(0.3 * (1 - 4 / 5), rel=0.01)
    assert noise(x, 5) is x


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"std": -0.1}, "std"),
        ({"total": 0}, "total"),
        ({"until": 0.0}, "until"),
        ({"until": 1.5}, "until"),
    ],
)
def test_rejects_bad_settings(kwargs, match):
    settings = {"std": 0.1, "total": 10, "until": 0.5, **kwargs}
    with pytest.raises(ValueError, match=match):
        InstanceNoise(**settings)


def test_discriminator_sees_noisy_inputs_only_while_the_noise_lasts(make_config, monkeypatch):
    cfg = make_config(
        "experiment=ring_mlp",
        "instance_noise=gaussian",
        "instance_noise.std=0.3",
        "instance_noise.until=0.5",
        "train.iterations=4",
        "data.batch_size=64",
        "model.g.hidden=[8]",
        "model.d.hidden=[8]",
    )
    seen: list[torch.Tensor] = []

    def record(module, args):
        seen.append(args[0].detach().clone())

    # fit builds the module itself; hook D when training starts.
    start = GANModule.on_fit_start

    def start_and_hook(module):
        start(module)
        module.discriminator.register_forward_pre_hook(record)

    monkeypatch.setattr(GANModule, "on_fit_start", start_and_hook)
    fit(cfg)
    # Per iteration D judges real, then fake (D step), then fake (G step).
    assert len(seen) == 3 * 4
    radius_error = [(batch.norm(dim=1) - 1.0).abs().max().item() for batch in seen[0::3]]
    # Ring data lie within a few sigma = 0.01 of radius 1; std 0.3 noise moves them far off it.
    assert radius_error[0] > 0.2 and radius_error[1] > 0.1
    assert radius_error[2] < 0.06 and radius_error[3] < 0.06
