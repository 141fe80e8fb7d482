"""Non-finite losses: stop keeps the last good checkpoint; skip drops updates and counts them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gan_lab.checkpoint_io import load_checkpoint_file
from gan_lab.losses import NonSaturatingLoss
from gan_lab.nan_guard import NonFiniteGuard
from gan_lab.train import fit

TOY = [
    "experiment=ring_mlp",
    "model.g.hidden=[8]",
    "model.d.hidden=[8]",
    "data.batch_size=8",
    "callbacks=default",
    "logger=csv",
    "train.iterations=20",
    "train.sample_every=1000",
    "train.log_every=1",
]


def nan_d_loss_from(monkeypatch, first_bad_call: int, last_bad_call: int | None = None) -> None:
    """Make the D loss NaN on calls first_bad_call..last_bad_call (1-based; k=1: = iteration)."""
    original = NonSaturatingLoss.d_loss
    calls = {"n": 0}

    def d_loss(self, real_logits, fake_logits):
        calls["n"] += 1
        loss = original(self, real_logits, fake_logits)
        bad = calls["n"] >= first_bad_call and (
            last_bad_call is None or calls["n"] <= last_bad_call
        )
        return loss * float("nan") if bad else loss

    monkeypatch.setattr(NonSaturatingLoss, "d_loss", d_loss)


def test_stop_keeps_last_good_checkpoint(make_config, monkeypatch, capsys):
    nan_d_loss_from(monkeypatch, first_bad_call=7)
    cfg = make_config(*TOY, "train.checkpoint_every=3", "train.nan_check_every=5")
    run = fit(cfg)

    err = capsys.readouterr().err
    assert "non-finite d_loss at iteration 7" in err
    assert run.module.stop_reason == "non-finite"
    # The check before the iteration-9 checkpoint caught it; training stopped there.
    assert run.module.iteration == 9
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    checkpoint = load_checkpoint_file(last)
    assert checkpoint["gan_lab"]["iteration"] == 6
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values())
    assert not (Path(cfg.paths.output_dir) / "checkpoints" / "iter_0000009.ckpt").exists()


def test_stop_at_periodic_check_without_checkpoints(make_config, monkeypatch, capsys):
    nan_d_loss_from(monkeypatch, first_bad_call=3)
    cfg = make_config(*TOY, "train.checkpoint_every=1000", "train.nan_check_every=4")
    run = fit(cfg)
    assert "non-finite d_loss at iteration 3" in capsys.readouterr().err
    assert run.module.iteration == 4
    # No good checkpoint was ever written, and the diverged weights were not saved at the end.
    assert not (Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt").exists()


def test_skip_finishes_and_counts(make_config, monkeypatch):
    nan_d_loss_from(monkeypatch, first_bad_call=5, last_bad_call=7)
    cfg = make_config(*TOY, "train.on_nan=skip", "train.max_skips=10")
    run = fit(cfg)
    assert run.module.stop_reason is None and run.module.iteration == 20
    assert run.metrics["train/skipped"] == 3
    params = torch.cat([p.flatten() for p in run.module.parameters()])
    assert torch.isfinite(params).all()
    checkpoint = load_checkpoint_file(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt")
    assert checkpoint["gan_lab"]["skipped"] == 3


def test_skip_stops_after_max_skips(make_config, monkeypatch, capsys):
    nan_d_loss_from(monkeypatch, first_bad_call=5)
    cfg = make_config(*TOY, "train.on_nan=skip", "train.max_skips=4", "train.nan_check_every=1")
    run = fit(cfg)
    assert "4 non-finite updates skipped" in capsys.readouterr().err
    assert run.module.stop_reason == "max-skips" and run.module.iteration == 8
    # Skipped updates leave the weights finite, so this checkpoint is a good one.
    checkpoint = load_checkpoint_file(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt")
    assert checkpoint["gan_lab"]["iteration"] == 8
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values())


def test_guard_records_without_sync_until_checked():
    guard = NonFiniteGuard("stop", check_every=10, max_skips=10)
    assert guard.allow_step("g_loss", torch.tensor(1.0), 1)
    assert guard.allow_step("g_loss", torch.tensor(float("inf")), 2)
    assert guard.allow_step("d_loss", torch.tensor(float("nan")), 3)
    assert guard.stop_message is None  # nothing read back yet
    assert not guard.check()
    assert "non-finite g_loss at iteration 2" in guard.stop_message


def test_bad_policy_rejected():
    with pytest.raises(ValueError, match="train.on_nan"):
        NonFiniteGuard("ignore", check_every=10, max_skips=10)
