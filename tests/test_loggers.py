"""Loggers write what dashboards read: W&B offline summary, TensorBoard scalars and images."""

from __future__ import annotations

import json

from gan_lab.train import train

TOY = ["experiment=ring_mlp", "data.batch_size=16", "train.iterations=6", "train.log_every=2"]


def test_wandb_offline_run_has_training_metrics(make_config, tmp_path):
    cfg = make_config(*TOY, "logger=wandb", "callbacks=default", "train.sample_every=3")
    train(cfg)
    summaries = list(tmp_path.glob("wandb/offline-run-*/files/wandb-summary.json"))
    assert len(summaries) == 1, list(tmp_path.rglob("*"))
    summary = json.loads(summaries[0].read_text())
    for key in ("train/d_loss", "train/g_loss", "train/d_real", "train/d_fake"):
        assert key in summary, summary.keys()


def test_tensorboard_writes_scalars_and_images(make_config, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = make_config(*TOY, "logger=tensorboard", "callbacks=default", "train.sample_every=3")
    train(cfg)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    tags = events.Tags()
    assert "train/d_loss" in tags["scalars"] and "train/g_loss" in tags["scalars"]
    assert "samples" in tags["images"]
    steps = [event.step for event in events.Scalars("train/g_loss")]
    assert steps == sorted(steps) and max(steps) <= 6  # the x-axis is the GAN iteration


def test_csv_metrics_and_samples_and_checkpoint(make_config, tmp_path):
    cfg = make_config(*TOY, "logger=csv", "callbacks=default", "train.sample_every=3",
                      "train.checkpoint_every=3")
    train(cfg)
    assert (tmp_path / "metrics.csv").is_file()
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "checkpoints" / "iter_0000003.ckpt").is_file()
    assert sorted(p.name for p in (tmp_path / "samples").glob("*.png")) == [
        "iter_0000000.png", "iter_0000003.png", "iter_0000006.png"
    ]
