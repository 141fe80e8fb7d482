"""Metrics during training and `gan_lab.evaluate` on the checkpoints it leaves."""

from __future__ import annotations

import csv
import json

import numpy as np
import torch
from torchvision.io import read_image

from gan_lab.evaluate import evaluate
from gan_lab.train import train

DIGITS = [
    "experiment=digits_dcgan",
    "model.g.base_channels=8",
    "model.d.base_channels=8",
    "prior.dim=16",
    "train.iterations=20",
    "eval.every_n_iterations=10",
    "eval.evaluator.num_real=500",
    "eval.evaluator.num_fake=500",
    "eval.evaluator.kid_subset_size=100",
    "train.checkpoint_every=10",
    "callbacks=default",
    "logger=csv",
]


def test_image_run_logs_classifier_fid_and_evaluate_recomputes_it(make_config, tmp_path):
    metrics = train(make_config(*DIGITS))
    assert metrics["val/fid_classifier"] > 0 and "val/kid_classifier" in metrics
    assert "val/fid_inception" not in metrics  # classifier features are never called Inception
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    assert (tmp_path / "checkpoints" / "best.ckpt").is_file()
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    fid_rows = [row for row in rows if row.get("val/fid_classifier")]
    assert len(fid_rows) == 2  # iterations 10 and 20, each logged once

    result = evaluate(ckpt, ["eval.evaluator.num_fake=300"], save_samples=64)
    written = json.loads((tmp_path / "checkpoints" / "last.metrics.json").read_text())
    assert written["val/fid_classifier"] == result["val/fid_classifier"] > 0
    assert written["iteration"] == 20
    samples = np.load(tmp_path / "checkpoints" / "last.samples.npz")["samples"]
    assert samples.shape == (64, 1, 8, 8) and samples.min() >= -1 and samples.max() <= 1
    assert (tmp_path / "checkpoints" / "last.samples.png").is_file()


def test_toy_run_logs_mode_metrics_and_1d_run_logs_theory(make_config, tmp_path):
    ring = train(
        make_config(
            "experiment=ring_mlp",
            f"paths.output_dir={tmp_path / 'ring'}",  # a run dir per run
            "train.iterations=20",
            "eval.every_n_iterations=10",
            "callbacks=default",
        )
    )
    assert 0 <= ring["toy/modes"] <= 8 and "toy/reverse_kl" in ring
    assert ring["val/primary"] == ring["toy/reverse_kl"]
    gauss = train(
        make_config(
            "experiment=gaussian1d_mlp",
            "train.iterations=20",
            "eval.every_n_iterations=10",
            "callbacks=default",
        )
    )
    for key in ("theory/jsd", "theory/value", "theory/d_vs_dstar_max_err", "toy/wasserstein"):
        assert key in gauss
    assert gauss["theory/value"] <= gauss["theory/value_d_star"] + 1e-6  # D* maximises V
    assert (tmp_path / "theory" / "iter_0000020.png").is_file()


def test_evaluate_reproduces_the_metrics_logged_in_training(make_config, tmp_path):
    """Evaluation noise is seeded by the run, not drawn from the training stream: evaluate on
    last.ckpt gives exactly the numbers logged at that iteration."""
    logged = train(make_config(*DIGITS))
    again = evaluate(tmp_path / "checkpoints" / "last.ckpt")
    for key in ("val/fid_classifier", "val/kid_classifier", "val/primary"):
        assert again[key] == logged[key], key


def test_evaluate_a_run_trained_without_metrics(make_config, tmp_path):
    """eval=none in training: evaluate computes the default metrics, or the group it is given."""
    train(
        make_config("experiment=ring_mlp", "train.iterations=4", "callbacks=default", "eval=none")
    )
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    default = evaluate(ckpt)
    assert 0 <= default["toy/modes"] <= 8 and "toy/reverse_kl" in default
    assert (tmp_path / "checkpoints" / "last.samples.png").is_file()
    none = evaluate(ckpt, ["eval=none"])
    assert not any(key.startswith(("toy/", "val/")) for key in none)


def test_evaluate_overrides_switch_config_groups(make_config, tmp_path):
    """``eval=<option>`` replaces the stored group (here: a run trained with eval=none gets the
    classifier FID); ``key=value`` overrides still apply on top."""
    train(make_config(*[o for o in DIGITS if not o.startswith("eval.")], "eval=none"))
    result = evaluate(
        tmp_path / "checkpoints" / "last.ckpt",
        ["eval=classifier", "eval.evaluator.num_real=500", "eval.evaluator.num_fake=200"],
    )
    assert result["val/fid_classifier"] > 0


def test_evaluating_best_and_last_keeps_both_results(make_config, tmp_path):
    """Outputs are named after the checkpoint: evaluating best.ckpt after last.ckpt (or the
    other way round) overwrites neither."""
    train(make_config(*DIGITS))
    folder = tmp_path / "checkpoints"
    best = evaluate(folder / "best.ckpt", save_images=5, device="cpu")
    last = evaluate(folder / "last.ckpt", save_images=5, device="cpu")
    assert json.loads((folder / "best.metrics.json").read_text()) == best
    assert json.loads((folder / "last.metrics.json").read_text()) == last
    assert best["checkpoint"].endswith("best.ckpt") and last["checkpoint"].endswith("last.ckpt")
    for stem in ("best", "last"):
        assert (folder / f"{stem}.samples.png").is_file()
        pngs = sorted((folder / f"{stem}.images").glob("*.png"))
        assert [p.name for p in pngs] == [f"{i:06d}.png" for i in range(5)]
    image = read_image(str(folder / "last.images" / "000000.png"))
    assert image.dtype == torch.uint8 and tuple(image.shape) == (1, 8, 8)  # data resolution
