"""Exact resume: after SIGTERM or a crash, ``ckpt_path=last`` continues the very same run."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gan_lab import train as train_module
from gan_lab.checkpoint_io import load_checkpoint_file
from gan_lab.gan_module import GANModule
from gan_lab.loggers import wandb_logger
from gan_lab.stopping import EXIT_SIGTERM
from gan_lab.train import fit, train
from tests import processes

ROOT = Path(__file__).resolve().parents[1]
TOY = [
    "experiment=ring_mlp",
    "model.g.hidden=[16]",
    "model.d.hidden=[16]",
    "data.batch_size=16",
    "train.iterations=20",
    "train.log_every=1",
    "train.sample_every=1000",
    "logger=csv",
    "trainer.enable_progress_bar=false",
]


def read_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def assert_same_checkpoint(a: Path, b: Path, iteration: int = 20) -> None:
    ca, cb = load_checkpoint_file(a), load_checkpoint_file(b)
    assert ca["gan_lab"]["iteration"] == cb["gan_lab"]["iteration"] == iteration
    assert ca["state_dict"].keys() == cb["state_dict"].keys()
    for key, value in ca["state_dict"].items():
        assert torch.equal(value, cb["state_dict"][key]), key
    for opt_a, opt_b in zip(ca["optimizer_states"], cb["optimizer_states"], strict=True):
        for pa, pb in zip(opt_a["state"].values(), opt_b["state"].values(), strict=True):
            assert all(torch.equal(pa[k], pb[k]) for k in pa)


def launch(run_dir: Path, *overrides: str, seconds: float = 0.0) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "gan_lab.train",
        *TOY,
        "train.checkpoint_every=1000",  # only the interruption and the end write last.ckpt
        "+callbacks.throttle._target_=tests.helpers.Throttle",
        f"+callbacks.throttle.progress_file={run_dir}/progress",
        f"+callbacks.throttle.seconds={seconds}",
        f"hydra.run.dir={run_dir}",
        *overrides,
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return processes.spawn(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen, expected: int) -> str:
    _, err = processes.communicate(process, timeout=90)
    assert process.returncode == expected, err[-3000:]
    return err


@pytest.mark.slow  # ~15 s; make test has tests/test_interruptions.py's SIGINT and SIGTERM cases
def test_sigterm_then_resume_matches_uninterrupted_run(tmp_path):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    reference = launch(straight)
    process = launch(interrupted, seconds=0.3)
    progress = interrupted / "progress"
    deadline = time.monotonic() + 180
    while not (progress.is_file() and progress.read_text() and int(progress.read_text()) >= 10):
        assert process.poll() is None, "run ended before it could be interrupted"
        assert time.monotonic() < deadline, "run did not reach iteration 10"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    err = finish(process, EXIT_SIGTERM)
    finish(reference, 0)

    stopped_at = load_checkpoint_file(interrupted / "checkpoints" / "last.ckpt")["gan_lab"]
    assert 10 <= stopped_at["iteration"] < 20, stopped_at["iteration"]
    assert f"SIGTERM at iteration {stopped_at['iteration']}" in err
    assert not (interrupted / "done").exists()
    assert len(read_rows(interrupted)) == stopped_at["iteration"]

    finish(launch(interrupted, "ckpt_path=last"), 0)
    assert (interrupted / "done").exists()
    assert read_rows(interrupted) == read_rows(straight)
    assert len([row for row in read_rows(straight) if row["train/d_loss"]]) == 20  # + 1 eval row
    assert_same_checkpoint(
        interrupted / "checkpoints" / "last.ckpt", straight / "checkpoints" / "last.ckpt"
    )


def crash_then_resume(make_config, monkeypatch, common: list[str], tmp_path: Path) -> Path:
    """Fit ``common`` straight into tmp_path/straight; then into tmp_path/crashed with a crash in
    iteration 5 (after an iteration-3 checkpoint: ``train.checkpoint_every=3``), and resume it.
    Returns the crashed run's dir, checked against the straight one."""
    straight, crashed = tmp_path / "straight", tmp_path / "crashed"
    fit(make_config(*common, f"paths.output_dir={straight}"))
    original = GANModule.training_step

    def crash_at_5(self, batch, batch_idx):
        if self.iteration == 4:
            raise RuntimeError("simulated crash")
        return original(self, batch, batch_idx)

    monkeypatch.setattr(GANModule, "training_step", crash_at_5)
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(make_config(*common, f"paths.output_dir={crashed}"))
    monkeypatch.setattr(GANModule, "training_step", original)
    fit(make_config(*common, f"paths.output_dir={crashed}", "ckpt_path=last"))
    assert_same_checkpoint(
        crashed / "checkpoints" / "last.ckpt", straight / "checkpoints" / "last.ckpt", 6
    )
    return crashed


def test_crash_then_resume_appends_to_same_csv(make_config, monkeypatch, tmp_path):
    """A crash after the iteration-3 checkpoint; the resumed run re-runs iteration 4 and drops
    the row the crashed run had logged for it, so metrics.csv equals an uninterrupted run's."""
    common = [*TOY, "callbacks=default", "train.iterations=6", "train.checkpoint_every=3"]
    crashed = crash_then_resume(make_config, monkeypatch, common, tmp_path)
    assert read_rows(crashed) == read_rows(tmp_path / "straight")


def test_finished_run_is_skipped_on_relaunch(make_config, monkeypatch):
    cfg = make_config(*TOY, "callbacks=default", "train.iterations=3")
    metrics = train(cfg)
    assert (Path(cfg.paths.output_dir) / "done").is_file()

    def no_fit(cfg):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(train_module, "fit", no_fit)
    again = train(make_config(*TOY, "callbacks=default", "train.iterations=3", "ckpt_path=last"))
    assert again == pytest.approx(metrics)


def test_wandb_run_id_persists_in_run_dir(tmp_path):
    first = wandb_logger(str(tmp_path), mode="offline")
    second = wandb_logger(str(tmp_path), mode="offline")
    assert first._wandb_init["id"] == second._wandb_init["id"]
    assert first._wandb_init["resume"] == "allow"
    assert (tmp_path / "wandb_run_id.txt").read_text().strip() == first._wandb_init["id"]
    other = wandb_logger(str(tmp_path / "other"), mode="offline")
    assert other._wandb_init["id"] != first._wandb_init["id"]


def test_same_seed_same_metrics(make_config, tmp_path):
    """trainer.deterministic=true; two runs with one seed log identical metrics.csv files."""
    common = [*TOY, "train.iterations=8", "trainer.deterministic=true"]
    runs = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        cfg = make_config(*common, f"seed={seed}", f"paths.output_dir={tmp_path / name}")
        fit(cfg)
        runs.append(read_rows(Path(cfg.paths.output_dir)))
    assert len(runs[0]) == 8
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
