"""Interruptions you can trust: honest exit statuses, and a resumed run that is the run it would
have been.

Each matrix case trains a small run straight through, then the same run stopped by a signal at a
seeded random iteration and resumed with ``ckpt_path=last``: the final weights must be
``torch.equal`` and ``metrics.csv`` byte-identical (it has no wall-clock column). Signals go to
the whole process group, as a terminal's Ctrl+C and a scheduler's SIGTERM do, so DataLoader
workers get them too. A few cases run in ``make test``; the whole matrix in ``make test-full``.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gan_lab.checkpoint_io import load_checkpoint_file
from gan_lab.stopping import EXIT_DIVERGED, EXIT_SIGINT, EXIT_SIGTERM, Diverged, Interrupted
from tests import processes
from tests.helpers import image_folder_overrides, write_image_folder
from tests.test_resume import assert_same_checkpoint

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["logger=csv", "callbacks=default", "trainer.enable_progress_bar=false"]
RING = [
    "experiment=ring_mlp",
    "model.g.hidden=[16]",
    "model.d.hidden=[16]",
    "data.batch_size=16",
    "train.iterations=40",
    "train.log_every=5",  # most interruptions fall between logging iterations
    "train.checkpoint_every=10",
    "train.sample_every=1000",
    *QUIET,
]
# A classifier FID/KID evaluation at 10, 20, 30; interruptions come after the first.
DIGITS_EVAL = [
    "experiment=digits_dcgan",
    "model.g.base_channels=8",
    "model.d.base_channels=8",
    "data.batch_size=32",
    "train.iterations=30",
    "train.log_every=5",
    "train.checkpoint_every=10",
    "train.sample_every=1000",
    "eval.every_n_iterations=10",
    "eval.evaluator.num_real=300",
    "eval.evaluator.num_fake=300",
    "eval.evaluator.kid_subset_size=100",
    *QUIET,
]
K2_EMA_R1 = [
    *RING,
    "train.k_d_steps=2",
    "train.ema_decay=0.99",
    "regularizer=r1",
    "regularizer.every=4",
]


def case_overrides(name: str, tmp_path: Path) -> list[str]:
    if name == "ring":
        return RING
    if name == "digits_eval":
        return DIGITS_EVAL
    if name == "k2_ema_r1":
        return K2_EMA_R1
    # 24 images, k=2 minibatches of 4: 3 iterations per epoch, so epochs wrap often.
    root = write_image_folder(tmp_path / "images", n=24)
    workers = int(name.removeprefix("image_folder_w"))
    budget = ["train.iterations=24", "train.log_every=2", "train.checkpoint_every=6"]
    return image_folder_overrides(root, workers, *budget, "trainer.enable_progress_bar=false")


# Where a signal may land: iterations after the first checkpoint (and evaluation), before the end.
WINDOW = {
    "ring": (11, 37),
    "digits_eval": (11, 28),
    "k2_ema_r1": (11, 37),
    "image_folder_w0": (7, 22),
    "image_folder_w2": (7, 22),
}
EXIT = {signal.SIGINT: EXIT_SIGINT, signal.SIGTERM: EXIT_SIGTERM, signal.SIGKILL: -signal.SIGKILL}


def launch(
    run_dir: Path, overrides: list[str], seconds: float = 0.0, at_start: bool = False
) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "gan_lab.train",
        *overrides,
        "+callbacks.throttle._target_=tests.helpers.Throttle",
        f"+callbacks.throttle.progress_file={run_dir}.progress",
        f"+callbacks.throttle.seconds={seconds}",
        f"+callbacks.throttle.at_start={at_start}",
        f"hydra.run.dir={run_dir}",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return processes.spawn(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(process: subprocess.Popen, expected: int) -> str:
    out, err = processes.communicate(process, timeout=100)
    assert process.returncode == expected, (out + err)[-4000:]
    return out + err


def wait_for(process: subprocess.Popen, progress: Path, iteration: int) -> None:
    deadline = time.monotonic() + 90
    while not (progress.is_file() and (text := progress.read_text()) and int(text) >= iteration):
        assert process.poll() is None, "the run ended before it could be interrupted"
        assert time.monotonic() < deadline, f"the run did not reach iteration {iteration}"
        time.sleep(0.01)


def interrupt(
    run_dir: Path, overrides: list[str], sig: int, at: int, at_start: bool = False
) -> str:
    """Start the run, send ``sig`` to its process group once iteration ``at`` is done, and
    return what it printed; it must exit with the status the signal stands for."""
    process = launch(run_dir, overrides, seconds=0.05, at_start=at_start)
    wait_for(process, Path(f"{run_dir}.progress"), at)
    os.killpg(process.pid, sig)
    output = finish(process, EXIT[sig])
    assert "final metrics" not in output  # only a finished run reports final metrics
    assert not (run_dir / "done").exists()
    return output


def assert_same_run(resumed: Path, straight: Path, iterations: int) -> None:
    assert (resumed / "metrics.csv").read_bytes() == (straight / "metrics.csv").read_bytes()
    assert_same_checkpoint(
        resumed / "checkpoints" / "last.ckpt", straight / "checkpoints" / "last.ckpt", iterations
    )


def straight_run(tmp_path: Path, overrides: list[str]) -> Path:
    run_dir = tmp_path / "straight"
    finish(launch(run_dir, overrides), 0)
    return run_dir


def resume(run_dir: Path, overrides: list[str]) -> str:
    output = finish(launch(run_dir, [*overrides, "ckpt_path=last"]), 0)
    assert (run_dir / "done").exists()
    return output


def interrupt_and_resume(tmp_path: Path, case: str, sig: int, seed: int, at_start: bool) -> None:
    overrides = case_overrides(case, tmp_path)
    iterations = int(next(o for o in overrides if o.startswith("train.iterations=")).split("=")[1])
    at = random.Random(f"{case}/{sig}/{seed}").randint(*WINDOW[case])
    straight = straight_run(tmp_path, overrides)
    stopped = tmp_path / "stopped"
    output = interrupt(stopped, overrides, sig, at, at_start)
    saved = load_checkpoint_file(stopped / "checkpoints" / "last.ckpt")["gan_lab"]["iteration"]
    resume(stopped, overrides)
    assert_same_run(stopped, straight, iterations)
    if sig != signal.SIGKILL:
        assert saved >= at
        name = signal.Signals(sig).name
        assert f"stopped: {name} at iteration {saved}: saved" in output


# ------------------------------------------------------------------ make test: representatives
# Slow: the SIGINT sweep test (slow too) interrupts and resumes the same ring run, CSVs compared;
# make test keeps the image-folder case below.
@pytest.mark.slow
@pytest.mark.timeout(200)  # three runs of about 5 s, each started as a fresh process
def test_ring_sigint_then_resume_equals_straight_run(tmp_path):
    interrupt_and_resume(tmp_path, "ring", signal.SIGINT, seed=0, at_start=True)


@pytest.mark.timeout(200)
def test_image_folder_workers_sigterm_then_resume_equals_straight_run(tmp_path):
    interrupt_and_resume(tmp_path, "image_folder_w2", signal.SIGTERM, seed=0, at_start=True)


# ------------------------------------------------------------------ make test-full: the matrix
MATRIX = [
    (case, sig, at_start)
    for case in WINDOW
    for sig, at_start in (
        (signal.SIGINT, True),
        (signal.SIGINT, False),
        (signal.SIGTERM, True),
        (signal.SIGTERM, False),
        (signal.SIGKILL, True),
    )
]


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("case", "sig", "at_start"),
    MATRIX,
    ids=[f"{c}-{signal.Signals(s).name}-{'start' if a else 'end'}" for c, s, a in MATRIX],
)
def test_interrupted_then_resumed_equals_straight_run(tmp_path, case, sig, at_start):
    interrupt_and_resume(tmp_path, case, sig, seed=1, at_start=at_start)


# ------------------------------------------------------------------ exit statuses
NAN_FROM_14 = ["+callbacks.nan._target_=tests.helpers.NaNBatches", "+callbacks.nan.first=14"]


def test_divergence_exits_with_status_3_and_keeps_last_good_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    output = finish(launch(run_dir, [*RING, *NAN_FROM_14]), EXIT_DIVERGED)
    # Found by the check before the iteration-20 checkpoint, which is not written.
    assert "gan_lab.train: stopped: stopping: non-finite d_loss at iteration 14" in output
    assert "final metrics" not in output and not (run_dir / "done").exists()
    assert load_checkpoint_file(run_dir / "checkpoints" / "last.ckpt")["gan_lab"]["iteration"] == 10


def test_max_skips_stops_at_exactly_max_skips_with_status_3(tmp_path):
    """k=1: one D update skipped per NaN batch, from iteration 14; the fifth (iteration 18)
    stops the run there, though the periodic check would come only at 20. In-process: the CLI
    turns the same ``Diverged`` into status 3 (test_divergence_exits_with_status_3_...)."""
    import gan_lab

    overrides = [*RING, *NAN_FROM_14, "train.on_nan=skip", "train.max_skips=5"]
    with pytest.raises(
        Diverged, match=r"5 non-finite updates skipped \(train.max_skips=5\)"
    ) as stop:
        gan_lab.train([*overrides, "train.nan_check_every=10"], output_dir=tmp_path / "run")
    assert (stop.value.exit_status, stop.value.iteration) == (EXIT_DIVERGED, 18)
    assert not (tmp_path / "run" / "done").exists()
    # Skipped updates leave the weights finite: the stop saves them.
    saved = load_checkpoint_file(tmp_path / "run" / "checkpoints" / "last.ckpt")["gan_lab"]
    assert (saved["iteration"], saved["skipped"]) == (18, 5)


# ------------------------------------------------------------------ sweeps
SWEEP = [*RING, "loss=non_saturating,hinge"]


def launch_sweep(sweep_dir: Path, *extra: str) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "gan_lab.train",
        "-m",
        *SWEEP,
        "+callbacks.throttle._target_=tests.helpers.Throttle",
        f"+callbacks.throttle.progress_file={sweep_dir}.progress" + "${hydra:job.num}",
        "+callbacks.throttle.seconds=0.05",
        "+callbacks.throttle.at_start=true",
        f"hydra.sweep.dir={sweep_dir}",
        *extra,
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return processes.spawn(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


# Slow (~31 s each): in make test, Ctrl+C in a sweep's job and its re-launch resuming the cut
# job are tests/test_optuna_study.py's kill test (SIGINT, exit 130, the cut trial resumed from
# its checkpoint), the README's `<same sweep overrides> ... ckpt_path=last` command (a basic
# sweep re-launched mid-run) and tests/test_gpu_slots.py's SIGTERM to a launcher.
@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_a_sweep_and_relaunch_finishes_it(tmp_path, sig):
    """Ctrl+C (or SIGTERM) in the first of two jobs: exit 130 (143) and no second job; the
    same sweep re-launched with ckpt_path=last resumes the first, runs the second, and each
    job's metrics.csv equals an uninterrupted sweep's. (Skipping finished jobs on re-launch:
    test_resume.test_finished_run_is_skipped_on_relaunch.)"""
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    finish(launch_sweep(straight), 0)

    process = launch_sweep(stopped)
    wait_for(process, Path(f"{stopped}.progress0"), 17)
    os.killpg(process.pid, sig)
    output = finish(process, EXIT[sig])
    assert f"stopped: {signal.Signals(sig).name} at iteration" in output
    assert not (stopped / "0" / "done").exists()
    assert not (stopped / "1").exists()  # the sweep stopped; the next job never started

    finish(launch_sweep(stopped, "ckpt_path=last"), 0)
    for job in ("0", "1"):
        assert (stopped / job / "done").exists()
        csv = (stopped / job / "metrics.csv").read_bytes()
        assert csv == (straight / job / "metrics.csv").read_bytes(), job


@pytest.mark.slow  # ~11 s; the exit-status tests of make test cover the single-run path
@pytest.mark.timeout(200)
def test_diverged_job_does_not_stop_its_sweep(tmp_path):
    """In a multirun a diverged job is a result: reported, no ``done``, and the next job runs."""
    command = [
        sys.executable,
        "-m",
        "gan_lab.train",
        "-m",
        *RING,
        "+callbacks.nan._target_=tests.helpers.NaNBatches",
        "+callbacks.nan.first=14,1000",  # job 0 diverges at 14; job 1 never sees a NaN
        f"hydra.sweep.dir={tmp_path}",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = processes.run(command, timeout=150, check=False, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "gan_lab.train: stopped: stopping: non-finite d_loss at iteration 14" in result.stderr
    assert not (tmp_path / "0" / "done").exists()
    assert (tmp_path / "1" / "done").exists()


def test_python_api_raises_diverged(tmp_path):
    """``gan_lab.train`` from Python raises the stop (with the CLI's exit status on it) instead
    of returning metrics as if the run had finished."""
    import gan_lab

    with pytest.raises(Diverged, match="non-finite d_loss at iteration 14") as stop:
        gan_lab.train([*RING, *NAN_FROM_14], output_dir=tmp_path / "run")
    assert stop.value.exit_status == EXIT_DIVERGED and stop.value.iteration == 20
    assert not (tmp_path / "run" / "done").exists()


def signal_at(iteration: int, name: str, times: int = 1) -> list[str]:
    return [
        "+callbacks.signal._target_=tests.helpers.SignalAt",
        f"+callbacks.signal.iteration={iteration}",
        f"+callbacks.signal.signal_name={name}",
        f"+callbacks.signal.times={times}",
    ]


# SignalAt runs after the Interruption callback: a SIGINT that arrives then is seen at the end
# of the next iteration; Lightning acts on a SIGTERM at the end of the same one.
@pytest.mark.parametrize(
    ("name", "status", "stop"), [("SIGINT", EXIT_SIGINT, 13), ("SIGTERM", EXIT_SIGTERM, 12)]
)
def test_python_api_raises_interrupted_after_saving(tmp_path, name, status, stop):
    import gan_lab

    with pytest.raises(Interrupted, match=f"{name} at iteration {stop}: saved") as error:
        gan_lab.train([*RING, *signal_at(12, name)], output_dir=tmp_path / "run")
    assert (error.value.exit_status, error.value.iteration) == (status, stop)
    saved = load_checkpoint_file(tmp_path / "run" / "checkpoints" / "last.ckpt")["gan_lab"]
    assert saved["iteration"] == stop and not (tmp_path / "run" / "done").exists()


def test_second_ctrl_c_stops_at_once_saving_nothing(tmp_path):
    import gan_lab

    with pytest.raises(Interrupted, match="SIGINT at iteration 12: stopped at once") as stop:
        gan_lab.train([*RING, *signal_at(12, "SIGINT", times=2)], output_dir=tmp_path / "run")
    assert stop.value.exit_status == EXIT_SIGINT
    saved = load_checkpoint_file(tmp_path / "run" / "checkpoints" / "last.ckpt")["gan_lab"]
    assert saved["iteration"] == 10  # the periodic one; iteration 12 was not saved
