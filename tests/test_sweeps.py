"""Hydra multirun through real launchers and sweepers, and the sweep report."""

from __future__ import annotations

from pathlib import Path

import pytest
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


# ~10 s; in make test the README's first sweep and its report command run the same path, and
# tests/test_report.py checks the report's numbers on a fixture.
@pytest.mark.slow
def test_report_groups_seeds(tmp_path):
    multirun(tmp_path, "loss=minimax,hinge", "seed=0,1")
    table = write_report(tmp_path)
    rows = [line for line in table.splitlines()[2:] if line.startswith("|")]
    assert len(rows) == 2  # two losses, seeds folded into mean ± 95 % CI
    assert all("| 2 |" in row and "±" in row for row in rows)
    assert (tmp_path / "report.csv").is_file() and (tmp_path / "report.png").is_file()


@pytest.mark.slow  # ~14 s; the README's first sweep runs a multirun in make test
def test_submitit_local_runs_both_jobs(tmp_path):
    multirun(tmp_path, "hydra/launcher=submitit_local", "loss=minimax,hinge")
    done = sorted(tmp_path.glob("*/done"))
    assert len(done) == 2
    table = [line for line in write_report(tmp_path).splitlines() if line.startswith("|")]
    assert len(table) == 4  # header, rule, 2 rows


def test_slurm_launcher_preset_composes():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert cfg.hydra.launcher.signal_delay_s == 120
