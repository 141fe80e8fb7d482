"""DDP with manual optimization: 2 CPU processes (gloo) train one GAN in one run directory."""

from __future__ import annotations

import csv

import pytest
import torch

import gan_lab
from tests.helpers import run_cli


def test_ddp_cpu_two_ranks_stay_in_sync(tmp_path):
    run_dir, dumps = tmp_path / "run", tmp_path / "dumps"
    result = run_cli(
        "experiment=ring_mlp",
        "trainer=ddp_cpu",
        "model.g.hidden=[16]",
        "model.d.hidden=[16]",
        "data.batch_size=32",
        "train.iterations=10",
        "train.log_every=5",
        "train.sample_every=5",
        "eval.every_n_iterations=10",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={run_dir}",
        "+callbacks.dump._target_=tests.helpers.DumpRank",
        f"+callbacks.dump.dirpath={dumps}",
        timeout=300,
    )
    assert "not used in producing the loss" not in result.stderr

    rank0, rank1 = (torch.load(dumps / f"rank{r}.pt") for r in (0, 1))
    for key, value in rank0["state_dict"].items():  # gradients were all-reduced every step
        assert torch.equal(value, rank1["state_dict"][key]), key
    # Ranks saw different data and noise, and the logged loss is their mean.
    assert rank0["g_losses"] != rank1["g_losses"]
    rows = [r for r in csv.DictReader((run_dir / "metrics.csv").open()) if r.get("train/g_loss")]
    logged = {int(r["step"]): float(r["train/g_loss"]) for r in rows}
    for iteration in (5, 10):
        mean = (rank0["g_losses"][iteration - 1] + rank1["g_losses"][iteration - 1]) / 2
        assert logged[iteration] == pytest.approx(mean, abs=1e-5)
    # One run directory for both ranks; images written once, by rank 0.
    assert sorted(p.name for p in (run_dir / "samples").glob("*.png")) == [
        "iter_0000000.png",
        "iter_0000005.png",
        "iter_0000010.png",
    ]
    assert not list(tmp_path.glob("outputs")) and (run_dir / "done").is_file()
    # DDP's checkpoints open safely (weights_only=True) like any other.
    for path in (run_dir / "checkpoints").glob("*.ckpt"):
        assert gan_lab.load(path).iteration == 10, path
