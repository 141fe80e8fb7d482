"""Hydra multirun through real launchers and sweepers, and the sweep report."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from gan_lab.config import CONF_DIR
from gan_lab.report import write_report
from tests.helpers import run_cli

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "experiment=ring_mlp",
    "model.g.hidden=[16]",
    "model.d.hidden=[16]",
    "data.batch_size=32",
    "train.iterations=6",
    "eval.every_n_iterations=3",
    "trainer.enable_progress_bar=false",
]


def multirun(sweep_dir: Path, *overrides: str):
    return run_cli("-m", *TINY, *overrides, f"hydra.sweep.dir={sweep_dir}")


def test_report_groups_seeds(tmp_path):
    multirun(tmp_path, "loss=minimax,hinge", "seed=0,1")
    table = write_report(tmp_path)
    rows = [line for line in table.splitlines()[2:] if line.startswith("|")]
    assert len(rows) == 2  # two losses, seeds folded into mean ± std
    assert all("| 2 |" in row and "±" in row for row in rows)
    assert (tmp_path / "report.csv").is_file() and (tmp_path / "report.png").is_file()


@pytest.mark.slow  # ~14 s; test_report_groups_seeds runs a multirun in make test
def test_submitit_local_runs_both_jobs(tmp_path):
    multirun(tmp_path, "hydra/launcher=submitit_local", "loss=minimax,hinge")
    done = sorted(tmp_path.glob("*/done"))
    assert len(done) == 2
    assert len(write_report(tmp_path).splitlines()) == 4  # header, rule, 2 rows


def test_optuna_finds_best_parameters(tmp_path):
    multirun(tmp_path, "hparams_search=ring_optuna", "hydra.sweeper.n_trials=4")
    results = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert results["name"] == "optuna"
    assert set(results["best_params"]) == {
        "optimizer.g.lr",
        "optimizer.d.lr",
        "optimizer.g.betas",
        "optimizer.d.betas",
        "train.k_d_steps",
        "loss",
    }
    jobs = [yaml.safe_load(p.read_text()) for p in tmp_path.glob("*/.hydra/config.yaml")]
    assert len(jobs) == 4 and all(len(job["optimizer"]["g"]["betas"]) == 2 for job in jobs)
    assert len(list(tmp_path.glob("*/done"))) == 4


def test_slurm_launcher_preset_composes():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert cfg.hydra.launcher.signal_delay_s == 120


def test_wandb_runs_of_a_sweep_share_a_group(tmp_path):
    from wandb.proto import wandb_internal_pb2

    from tests.test_loggers import _wandb_records

    sweep = tmp_path / "study_losses_demo"
    multirun(sweep, "logger=wandb", "loss=minimax,hinge")
    runs = []
    for path in sorted(sweep.glob("*/wandb/offline-run-*/run-*.wandb")):
        for data in _wandb_records(path):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(data)
            if record.WhichOneof("record_type") == "run":
                runs.append(record.run)
                break
    assert len(runs) == 2
    assert {run.run_group for run in runs} == {"study_losses_demo"}
    names = [set(run.display_name.split(",")) for run in runs]  # Hydra's override_dirname
    assert {"loss=minimax" in n for n in names} == {True, False}
    assert all("data:ring" in run.tags and "model:mlp" in run.tags for run in runs)
