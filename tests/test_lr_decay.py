"""Linear lr decay counts GAN iterations and scales G's and D's lr alike."""

from __future__ import annotations

import pytest

from gan_lab.callbacks.lr_decay import LinearLRDecay
from gan_lab.train import fit


def test_factor_schedule():
    decay = LinearLRDecay(total=100, start=0.5, final=0.1)
    assert decay.factor(0) == 1.0
    assert decay.factor(50) == 1.0
    assert decay.factor(75) == pytest.approx(0.55)
    assert decay.factor(100) == pytest.approx(0.1)


def test_rejects_bad_start_and_total():
    with pytest.raises(ValueError, match="start"):
        LinearLRDecay(total=10, start=1.0)
    with pytest.raises(ValueError, match="total"):
        LinearLRDecay(total=0)


def test_decays_both_optimizers_during_fit(make_config):
    cfg = make_config(
        "experiment=ring_mlp",
        "model.g.hidden=[4]",
        "model.d.hidden=[4]",
        "data.batch_size=8",
        "train.iterations=4",
        "optimizer.g.lr=1e-3",
        "optimizer.d.lr=4e-3",
        "+callbacks.lr_decay._target_=gan_lab.callbacks.lr_decay.LinearLRDecay",
        "+callbacks.lr_decay.total=${train.iterations}",
        "+callbacks.lr_decay.start=0.0",
    )
    run = fit(cfg)
    optimizer_g, optimizer_d = run.trainer.optimizers
    # The last iteration (index 3 of 4) ran at 1 - 3/4 of the configured lr: TTUR ratio kept.
    assert optimizer_g.param_groups[0]["lr"] == pytest.approx(0.25e-3)
    assert optimizer_d.param_groups[0]["lr"] == pytest.approx(1e-3)


@pytest.mark.parametrize(("experiment", "lr_g"), [("ring_best", 5e-4), ("grid_best", 1e-3)])
def test_best_presets_decay_even_with_callbacks_none(make_config, experiment, lr_g):
    # The presets add the decay under callbacks:, which `callbacks=none` (as toy_bench and the
    # quick test configs pass) must not drop: the shipped numbers depend on it.
    cfg = make_config(
        f"experiment={experiment}",
        "train.iterations=4",
        "data.batch_size=8",
        "model.g.hidden=[4]",
        "model.d.hidden=[4]",
    )
    optimizer_g, _ = fit(cfg).trainer.optimizers
    # Decay over iterations 2..4: the last iteration (index 3) ran at half the configured lr.
    assert optimizer_g.param_groups[0]["lr"] == pytest.approx(0.5 * lr_g)
