"""Resume and run dirs without surprises (issue 31): what a resume may change, who owns a run
dir, extending a finished run, warm starts, and the ``done`` record."""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gan_lab.checkpoint_io import load_checkpoint_file
from gan_lab.errors import UserError
from gan_lab.report import collect
from gan_lab.resume import ConfigDriftError, RunDirTaken, config_digest, may_change, plan
from gan_lab.run_dir import DoneRecord, read_done
from gan_lab.run_lock import LOCK_FILE, RunDirInUse
from gan_lab.train import train
from tests import processes
from tests.conftest import compose_config
from tests.test_resume import TOY

ROOT = Path(__file__).resolve().parents[1]
# TOY trains 20 iterations; runs here first train 10 and then go on to 20.
HALF = [*TOY, "train.iterations=10", "train.checkpoint_every=5"]
FULL = [*TOY, "train.checkpoint_every=5"]


def run(run_dir: Path, *overrides: str) -> dict[str, float]:
    return train(compose_config([*overrides], run_dir))


def steps(run_dir: Path) -> list[int]:
    """The iterations of metrics.csv's training rows (evaluation rows are separate rows)."""
    with open(run_dir / "metrics.csv", newline="") as f:
        return [int(float(row["step"])) for row in csv.DictReader(f) if row["train/d_loss"]]


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint_file(checkpoint)["state_dict"]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=0, msg=key)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run dir that finished 10 iterations; tests copy it before changing it."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    run(run_dir, *HALF)
    return run_dir


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same run trained 20 iterations at once."""
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    run(run_dir, *FULL)
    return run_dir


def copy_of(run_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run_dir, tmp_path / "run"))


# ------------------------------------------------------------------ what a resume may change
@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("loss=hinge", "loss._target_"),
        ("train.k_d_steps=2", "train.k_d_steps"),
        ("data=grid", "data._target_"),
        ("seed=5", "seed"),
        ("prior=uniform", "prior._target_"),
        ("optimizer@optimizer.d=sgd_momentum", "optimizer.d._target_"),
        ("model.d.hidden=[32]", "model.d.hidden"),
        ("train.ema_decay=0.9", "train.ema_decay"),
    ],
)
def test_resume_refuses_a_change_of_what_is_trained(finished, tmp_path, override, key):
    run_dir = copy_of(finished, tmp_path)
    before = (run_dir / "done").read_bytes(), (run_dir / "checkpoints" / "last.ckpt").stat()
    with pytest.raises(ConfigDriftError) as refused:
        run(run_dir, *FULL, "ckpt_path=last", override)
    assert key in refused.value.keys
    message = str(refused.value)
    assert key in message and "resume.allow_changes=true" in message and "\n" not in message
    # Nothing in the run dir changed: it can still be resumed as it was.
    after = (run_dir / "done").read_bytes(), (run_dir / "checkpoints" / "last.ckpt").stat()
    assert after[0] == before[0] and after[1].st_mtime_ns == before[1].st_mtime_ns
    assert not (run_dir / LOCK_FILE).exists()


def test_allowed_changes_are_applied_and_recorded(finished, tmp_path, caplog):
    run_dir = copy_of(finished, tmp_path)
    with caplog.at_level(logging.WARNING, logger="gan_lab.resume"):
        run(run_dir, *FULL, "ckpt_path=last", "optimizer.g.lr=1e-3", "train.log_every=2")
    assert "optimizer.g.lr: 0.0002 -> 0.001" in caplog.text
    assert "train.iterations: 10 -> 20" in caplog.text
    checkpoint = load_checkpoint_file(run_dir / "checkpoints" / "last.ckpt")
    assert checkpoint["gan_lab"]["iteration"] == 20
    # The new learning rate reached G's optimizer (not only the stored config); D's is as it was.
    lr_g, lr_d = (state["param_groups"][0]["lr"] for state in checkpoint["optimizer_states"])
    assert (lr_g, lr_d) == (pytest.approx(1e-3), pytest.approx(2e-4))
    assert checkpoint["gan_lab"]["config"]["optimizer"]["g"]["lr"] == pytest.approx(1e-3)
    done = read_done(run_dir)
    assert done.iterations == 20 and done.started_from is None
    [resume] = done.resumes
    assert resume["iteration"] == 10
    assert resume["changes"]["optimizer.g.lr"] == [pytest.approx(2e-4), pytest.approx(1e-3)]
    assert resume["changes"]["train.log_every"] == [1, 2]
    assert "ckpt_path" not in resume["changes"]
    # Rows 11..20 at the new cadence follow rows 1..10: each step once.
    assert steps(run_dir) == [*range(1, 11), *range(12, 21, 2)]


def test_allow_changes_trains_on_with_another_optimizer(finished, tmp_path, caplog):
    run_dir = copy_of(finished, tmp_path)
    with caplog.at_level(logging.WARNING, logger="gan_lab.resume"):
        run(
            run_dir,
            *FULL,
            "ckpt_path=last",
            "optimizer@optimizer.d=sgd_momentum",
            "resume.allow_changes=true",
        )
    assert "optimizer.d._target_" in caplog.text
    checkpoint = load_checkpoint_file(run_dir / "checkpoints" / "last.ckpt")
    group = checkpoint["optimizer_states"][1]["param_groups"][0]
    assert group["momentum"] == 0.5 and group["lr"] == pytest.approx(0.01) and "betas" not in group
    assert checkpoint["gan_lab"]["iteration"] == 20


def test_allow_changes_with_other_net_sizes_is_one_clear_error(finished, tmp_path):
    run_dir = copy_of(finished, tmp_path)
    with pytest.raises(UserError, match=r"discriminator\..*\(16, 2\).*\(32, 2\)"):
        run(run_dir, *FULL, "ckpt_path=last", "model.d.hidden=[32]", "resume.allow_changes=true")


def test_rules_cover_the_documented_keys():
    for key in (
        "train.iterations",
        "train.sample_every",
        "train.checkpoint_every",
        "train.log_every",
        "optimizer.g.lr",
        "optimizer.d.lr",
        "logger.csv.save_dir",
        "eval.every_n_iterations",
        "callbacks.samples.every_n_iterations",
        "trainer.devices",
        "data.num_workers",
        "data.root",
        "data.bad_files",
    ):
        assert may_change(key), key
    for key in (
        "seed",
        "loss._target_",
        "optimizer.g.betas",
        "model.g.hidden",
        "data.batch_size",
        "train.k_d_steps",
        "prior.dim",
        "regularizer",
        "instance_noise",
    ):
        assert not may_change(key), key


# ------------------------------------------------------------------ run dir ownership
def test_fresh_run_refused_in_the_dir_of_another_run(finished, tmp_path):
    run_dir = copy_of(finished, tmp_path)
    done_before = (run_dir / "done").read_bytes()
    with pytest.raises(RunDirTaken, match="checkpoints/last.ckpt.*done.*overwrite=true"):
        run(run_dir, *HALF, "seed=5")
    assert (run_dir / "done").read_bytes() == done_before
    assert steps(run_dir) == list(range(1, 11))


def test_overwrite_replaces_the_previous_run(finished, tmp_path):
    run_dir = copy_of(finished, tmp_path)
    run(run_dir, *HALF, "seed=5", "overwrite=true")
    assert steps(run_dir) == list(range(1, 11))  # each step once: the old rows are gone
    done = read_done(run_dir)
    assert done.config["seed"] == 5 and done.resumes == []


def test_ckpt_path_last_finding_nothing_warns(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        run(tmp_path / "typo", *TOY, "train.iterations=2", "ckpt_path=last")
    [record] = [r for r in caplog.records if "does not exist" in r.getMessage()]
    assert record.levelno == logging.WARNING and "hydra.run.dir" in record.getMessage()


def test_requeued_slurm_job_resumes_from_lightnings_hpc_checkpoint(finished, tmp_path, monkeypatch):
    """Lightning's SLURM auto-requeue saves hpc_ckpt_<n>.ckpt and relaunches the same command,
    without ckpt_path: that is a resume of the newest one, not a fresh run into a taken dir."""
    run_dir = copy_of(finished, tmp_path)
    (run_dir / "done").unlink()
    for n in (1, 2):
        shutil.copyfile(run_dir / "checkpoints" / "last.ckpt", run_dir / f"hpc_ckpt_{n}.ckpt")
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    start = plan(compose_config(FULL, run_dir))
    assert start.checkpoint == run_dir / "hpc_ckpt_2.ckpt" and not start.warm
    assert start.iteration == 10 and start.changes == {"train.iterations": (10, 20)}
    monkeypatch.delenv("SLURM_NTASKS")  # off SLURM the same command is a fresh run: refused
    with pytest.raises(RunDirTaken):
        plan(compose_config(FULL, run_dir))


def test_requeued_slurm_job_resumes_from_last_checkpoint(finished, tmp_path, monkeypatch):
    """submitit (hydra/launcher=slurm) requeues a job on SIGUSR2 with its own overrides, no
    ckpt_path and no hpc_ckpt: SLURM_RESTART_COUNT says it is a requeue, which resumes from
    checkpoints/last.ckpt instead of being refused as a fresh run into a taken dir."""
    run_dir = copy_of(finished, tmp_path)
    (run_dir / "done").unlink()
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    with pytest.raises(RunDirTaken):  # the first attempt of a job: not a resume
        plan(compose_config(FULL, run_dir))
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    start = plan(compose_config(FULL, run_dir))
    assert start.checkpoint == run_dir / "checkpoints" / "last.ckpt" and not start.warm
    assert start.iteration == 10
    # An hpc_ckpt newer than last.ckpt (Lightning's own requeue) still wins.
    shutil.copyfile(run_dir / "checkpoints" / "last.ckpt", run_dir / "hpc_ckpt_1.ckpt")
    assert plan(compose_config(FULL, run_dir)).checkpoint == run_dir / "hpc_ckpt_1.ckpt"


# ------------------------------------------------------------------ extending, warm starts
def test_finished_run_extends_to_a_larger_budget(finished, straight, tmp_path):
    run_dir = copy_of(finished, tmp_path)
    # The same budget again: finished, nothing to do (a re-launched sweep skips it).
    assert run(run_dir, *HALF, "ckpt_path=last") == read_done(finished).metrics
    assert (
        run(run_dir, *HALF, "ckpt_path=last", "train.iterations=5") == read_done(finished).metrics
    )
    run(run_dir, *FULL, "ckpt_path=last")
    done = read_done(run_dir)
    assert done.iterations == 20 and done.metrics["train/iteration"] == 20
    assert steps(run_dir) == list(range(1, 21))
    # Resumed exactly: the weights of the run that trained 20 iterations at once.
    assert_same_weights(
        run_dir / "checkpoints" / "last.ckpt", straight / "checkpoints" / "last.ckpt"
    )
    assert (
        done.config_digest == read_done(straight).config_digest == read_done(finished).config_digest
    )


def test_warm_start_trains_on_in_a_new_dir_and_records_its_origin(finished, straight, tmp_path):
    origin = finished / "checkpoints" / "last.ckpt"
    stat = origin.stat()
    warm = tmp_path / "warm"
    metrics = run(warm, *FULL, f"ckpt_path={origin}")
    assert metrics["train/iteration"] == 20
    done = read_done(warm)
    assert done.iterations == 20 and done.metrics == metrics
    assert done.started_from["checkpoint"] == str(origin.resolve())
    assert done.started_from["iteration"] == 10
    assert done.started_from["config_digest"] == read_done(finished).config_digest
    assert done.started_from["changes"] == {"train.iterations": [10, 20]}
    assert steps(warm) == list(range(11, 21))
    assert_same_weights(warm / "checkpoints" / "last.ckpt", straight / "checkpoints" / "last.ckpt")
    assert origin.stat().st_mtime_ns == stat.st_mtime_ns  # the other run is only read
    # Not into a run dir that holds another run.
    with pytest.raises(RunDirTaken, match="overwrite=true"):
        run(copy_of(straight, tmp_path), *FULL, f"ckpt_path={origin}")
    # At the checkpoint's own budget there is nothing to train: said, not silently skipped.
    with pytest.raises(UserError, match="iteration 10.*train.iterations=10"):
        run(tmp_path / "nothing", *HALF, f"ckpt_path={origin}")


# ------------------------------------------------------------------ the done record
def test_done_record_schema_and_report(finished, tmp_path):
    done = json.loads((finished / "done").read_text())
    assert done["schema"] == 1
    assert {"iterations", "metrics", "config_digest", "config", "started_from", "resumes"} <= set(
        done
    )
    assert done["iterations"] == 10 and done["started_from"] is None and done["resumes"] == []
    checkpoint = load_checkpoint_file(finished / "checkpoints" / "last.ckpt")
    assert done["config_digest"] == config_digest(checkpoint["gan_lab"]["config"])
    # gan_lab.report reads it, and the metrics-only files of earlier versions too.
    sweep = tmp_path / "sweep"
    for job, text in (
        ("0", (finished / "done").read_text()),
        ("1", json.dumps({"val/primary": 2.0})),
    ):
        (sweep / job / ".hydra").mkdir(parents=True)
        (sweep / job / ".hydra" / "overrides.yaml").write_text(f"- seed={job}\n")
        (sweep / job / "done").write_text(text)
    records = {job["seed"]: job["metrics"] for job in collect(sweep)}
    assert records["0"] == DoneRecord.from_json((finished / "done").read_text()).metrics
    assert records["1"] == {"val/primary": 2.0}


# ------------------------------------------------------------------ two processes, one dir
def launch(run_dir: Path, *overrides: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "gan_lab.train", *overrides, f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # Hydra logs to stdout, errors go to stderr: one stream, in order.
    return processes.spawn(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def test_second_run_into_a_dir_refuses_and_a_killed_runs_lock_is_taken_over(tmp_path, caplog):
    run_dir, progress = tmp_path / "run", tmp_path / "progress"
    budget = [*TOY, "train.iterations=100", "train.checkpoint_every=5"]
    first = launch(
        run_dir,
        *budget,
        "+callbacks.throttle._target_=tests.helpers.Throttle",
        f"+callbacks.throttle.progress_file={progress}",
        "+callbacks.throttle.seconds=0.2",
    )
    try:
        deadline = time.monotonic() + 60
        while not progress.exists() or int(progress.read_text() or 0) < 6:
            assert first.poll() is None and time.monotonic() < deadline, "first run not training"
            time.sleep(0.1)
        # The second run (here in this process) refuses before it reads or writes anything.
        with pytest.raises(RunDirInUse, match=f"in use by pid {first.pid} on host") as refused:
            run(run_dir, *budget, "ckpt_path=last")
        assert str(run_dir / LOCK_FILE) in str(refused.value)
        os.killpg(first.pid, signal.SIGKILL)  # the lock stays behind, its owner dead
        first.wait(timeout=30)
    finally:
        processes.stop(first)
    assert (run_dir / LOCK_FILE).exists()
    with caplog.at_level(logging.WARNING, logger="gan_lab.run_lock"):
        run(run_dir, *budget, "ckpt_path=last")
    assert f"took over the stale lock of pid {first.pid}" in caplog.text
    assert read_done(run_dir).iterations == 100 and not (run_dir / LOCK_FILE).exists()
