"""User errors at every entry point: one line naming the key or file and the fix, a non-zero
exit status (2 for usage), no traceback; ``HYDRA_FULL_ERROR=1`` shows the traceback.

Each row is a mistake a user makes. The training CLI runs as a real process (Hydra's own
error handling is part of what is tested); ``evaluate`` and ``report`` run their ``main`` in
this process, one row of each also as a real process.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from gan_lab import evaluate, report
from gan_lab.errors import MissingFileError, UserError, one_line, reported_as_one_line
from gan_lab.gan_module import GANModule
from gan_lab.train import train
from tests import processes

ROOT = Path(__file__).resolve().parents[1]


def _cli(module: str, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = processes.run(
        [sys.executable, "-m", module, *args],
        timeout=90,
        check=False,
        cwd=ROOT,
        env={**os.environ, "WANDB_MODE": "offline", **(env or {})},
    )
    return result.returncode, result.stderr


def _assert_one_line(stderr: str, program: str, *names: str) -> None:
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith(f"{program}: error: ")]
    assert len(errors) == 1, stderr[-3000:]
    for name in names:
        assert name in errors[0], errors[0]


# Bad values for `python -m gan_lab.train experiment=ring_mlp ...`, one or more per numeric key
# of every config group: (overrides, what the one line must name). Each must end the run before
# training with exit status 1 and one line naming the key, through gan_lab.errors.UserError. The
# ranges come from what each class declares (gan_lab.arguments); the rows marked "built" come
# from a constructor's own check (torch, Lightning, a rule between arguments), reported under
# its node's key by gan_lab.build.
LR_DECAY = "+callbacks.lr_decay._target_=gan_lab.callbacks.lr_decay.LinearLRDecay"
DIGITS = ["experiment=digits_dcgan", "model.g.base_channels=4", "model.d.base_channels=4"]
BAD_VALUES: dict[str, tuple[list[str], list[str]]] = {
    # train (the schema, gan_lab.config.TrainSettings) and the root
    "train.iterations": (["train.iterations=0"], ["train.iterations=0", "integer >= 1"]),
    "train.k_d_steps": (["train.k_d_steps=0"], ["train.k_d_steps=0", "integer >= 1"]),
    "train.log_every": (["train.log_every=0"], ["train.log_every=0"]),
    "train.sample_every": (["train.sample_every=0"], ["train.sample_every=0"]),
    "train.checkpoint_every": (["train.checkpoint_every=-5"], ["train.checkpoint_every=-5"]),
    "train.ema_decay": (["train.ema_decay=1.5"], ["train.ema_decay=1.5", "in (0, 1)"]),
    "train.num_fixed_samples": (["train.num_fixed_samples=0"], ["train.num_fixed_samples=0"]),
    "train.nan_check_every": (["train.nan_check_every=0"], ["train.nan_check_every=0"]),
    "train.max_skips": (["train.max_skips=0"], ["train.max_skips=0"]),
    "train.on_nan": (["train.on_nan=ignore"], ["train.on_nan=ignore", "stop, skip"]),
    "seed": (["seed=-1"], ["seed=-1", "integer in [0, 4294967295]"]),
    # data
    "data.n_modes": (["data.n_modes=0"], ["data.n_modes=0", "integer >= 1"]),
    "data.radius": (["data.radius=0"], ["data.radius=0", "number > 0"]),
    "data.std": (["data.std=-1"], ["data.std=-1", "number > 0"]),
    "data.batch_size": (["data.batch_size=0"], ["data.batch_size=0", "integer >= 1"]),
    "data.batch_size word": (["data.batch_size=abc"], ["data.batch_size=abc", "integer"]),
    "data.batch_size fraction": (["data.batch_size=7.5"], ["data.batch_size=7.5", "integer"]),
    "data.batch_size too big": (
        [*DIGITS, "data.batch_size=1000", "train.k_d_steps=2"],
        ["data.batch_size=1000", "1438 training samples"],
    ),
    "gaussian_1d data.std": (["data=gaussian_1d", "prior.dim=1", "data.std=0"], ["data.std=0"]),
    "grid data.n": (["data=grid", "data.n=0"], ["data.n=0", "integer >= 1"]),
    "grid data.spacing": (["data=grid", "data.spacing=-2"], ["data.spacing=-2"]),
    "digits data.resolution": ([*DIGITS, "data.resolution=24"], ["data.resolution=24"]),
    "fashion_mnist data.root": (
        ["data=fashion_mnist", "model.g.output_tanh=true", "data.root={tmp}/nonexistent"],
        ["data.root", "nonexistent"],
    ),
    "image_folder data.root unset": (["data=image_folder", "model=dcgan"], ["data.root=???"]),
    # model
    "model.g.hidden": (["model.g.hidden=[-4]"], ["model.g.hidden=[-4]", "integer >= 1"]),
    "model.d.hidden": (["model.d.hidden=[16,0]"], ["model.d.hidden=[16, 0]"]),
    "model.d.dropout": (["model.d.dropout=1.5"], ["model.d.dropout=1.5", "in [0, 1)"]),
    "model.d.pack": (["model.d.pack=0"], ["model.d.pack=0", "integer >= 1"]),
    "model.d.pack divides": (["model.d.pack=3", "data.batch_size=8"], ["model.d.pack=3"]),
    "model.g.skip": (["model.g.skip=true", "prior.dim=3"], ["model.g", "skip"]),  # built
    "model.g.base_channels": ([*DIGITS, "model.g.base_channels=0"], ["model.g.base_channels=0"]),
    "model.d.base_channels": ([*DIGITS, "model.d.base_channels=-1"], ["model.d.base_channels=-1"]),
    "model.g unknown key": (["+model.g.channels=3"], ["model.g.channels=3", "takes no argument"]),
    # loss and prior
    "loss.clip": (["loss=wasserstein", "loss.clip=-1"], ["loss.clip=-1", "null or a number > 0"]),
    "loss unknown key": (["+loss.margin=1"], ["loss.margin=1", "takes no argument"]),
    "prior.dim": (["prior.dim=0"], ["prior.dim=0", "integer >= 1"]),
    "prior.low": (["prior=uniform", "prior.low=2"], ["prior=", "prior.low must be < prior.high"]),
    # optimizers
    "optimizer.g.lr word": (["optimizer.g.lr=abc"], ["optimizer.g.lr=abc", "must be a number"]),
    "optimizer.d.lr": (["optimizer.d.lr=-0.001"], ["optimizer.d.lr=-0.001", "must be > 0"]),
    "optimizer.g.betas": (["optimizer.g.betas=[1.5,0.999]"], ["optimizer.g", "beta"]),  # built
    "optimizer.d.weight_decay": (["+optimizer.d.weight_decay=-1"], ["optimizer.d", "weight_decay"]),
    "optimizer.d.momentum": (
        ["optimizer@optimizer.d=sgd_momentum", "optimizer.d.momentum=-1"],
        ["optimizer.d", "momentum"],  # built
    ),
    # regularizer and instance noise
    "regularizer.weight": (["regularizer=r1", "regularizer.weight=-1"], ["regularizer.weight=-1"]),
    "regularizer.every": (["regularizer=r1", "regularizer.every=0"], ["regularizer.every=0"]),
    "regularizer.target": (
        ["regularizer=gradient_penalty", "regularizer.target=-1"],
        ["regularizer.target=-1", "number >= 0"],
    ),
    "instance_noise.std": (["instance_noise=gaussian", "instance_noise.std=-1"], ["noise.std=-1"]),
    "instance_noise.until": (
        ["instance_noise=gaussian", "instance_noise.until=2"],
        ["instance_noise.until=2", "in (0, 1]"],
    ),
    # eval
    "eval.every_n_iterations": (["eval.every_n_iterations=-1"], ["eval.every_n_iterations=-1"]),
    "eval.max_samples": (["+eval.max_samples=0"], ["eval.max_samples=0"]),
    "eval.evaluator.num_real": (["eval.evaluator.num_real=0"], ["eval.evaluator.num_real=0"]),
    "eval.evaluator.num_fake": (["eval.evaluator.num_fake=-3"], ["eval.evaluator.num_fake=-3"]),
    "eval.evaluator.batch_size": (["eval.evaluator.batch_size=0"], ["evaluator.batch_size=0"]),
    "eval.evaluator.kid_subset_size": (
        ["eval.evaluator.kid_subset_size=0"],
        ["eval.evaluator.kid_subset_size=0"],
    ),
    # callbacks
    "callbacks.samples.num_toy_samples": (
        ["+callbacks.samples.num_toy_samples=0"],
        ["callbacks.samples.num_toy_samples=0"],
    ),
    "callbacks.checkpoint.mode": (
        ["callbacks.checkpoint.mode=maximum"],
        ["callbacks.checkpoint.mode=maximum", "one of min, max"],
    ),
    "lr_decay final": (
        [LR_DECAY, "+callbacks.lr_decay.total=300", "+callbacks.lr_decay.final=1e9"],
        ["callbacks.lr_decay.final=1000000000.0", "in [0, 1]"],
    ),
    "lr_decay start": (
        [LR_DECAY, "+callbacks.lr_decay.total=300", "+callbacks.lr_decay.start=1"],
        ["callbacks.lr_decay.start=1", "in [0, 1)"],
    ),
    "lr_decay total": ([LR_DECAY, "+callbacks.lr_decay.total=0"], ["callbacks.lr_decay.total=0"]),
    # trainer
    "trainer.precision": (["trainer.precision=99"], ["trainer.precision=99", "32-true"]),
    "trainer.devices": (["trainer.devices=0"], ["trainer=", "devices"]),  # built
    "trainer.max_steps": (["+trainer.max_steps=100"], ["trainer.max_steps=100"]),
}


def _train_main(args: list[str], run_dir: Path, capsys) -> tuple[int | str | None, str]:
    """``python -m gan_lab.train ARGS`` in this process (Hydra's CLI handling included): its
    exit status and stderr."""
    from hydra.core.global_hydra import GlobalHydra

    from gan_lab import train as train_module

    GlobalHydra.instance().clear()
    argv = ["gan_lab.train", *args, "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}"]
    capsys.readouterr()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", argv)
        try:
            train_module.main()
            code = 0
        except SystemExit as exit_info:
            code = exit_info.code
    return code, capsys.readouterr().err


@pytest.fixture
def no_training(monkeypatch):
    def training_step(*args, **kwargs):
        raise AssertionError("training started although the config is invalid")

    monkeypatch.setattr(GANModule, "training_step", training_step)


def test_table_has_a_bad_value_per_numeric_key():
    assert len(BAD_VALUES) >= 40


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_bad_value_is_one_line_before_training(case, tmp_path, capsys, monkeypatch, no_training):
    overrides, names = BAD_VALUES[case]
    args = ["experiment=ring_mlp", *[o.format(tmp=tmp_path) for o in overrides]]
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    code, stderr = _train_main(args, tmp_path / "run", capsys)
    assert code == 1, stderr[-3000:]
    _assert_one_line(stderr, "gan_lab.train", *names)
    written = {p.name for p in (tmp_path / "run").rglob("*")}
    assert not written & {"metrics.csv", "last.ckpt", "done"}, written
    # HYDRA_FULL_ERROR=1: the same error, raised with its traceback.
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(UserError) as error:
        _train_main(args, tmp_path / "run_full", capsys)
    assert one_line(error.value) in stderr


# Rows that run `python -m gan_lab.train` as a real process: (overrides, exit status, names).
TRAIN_ERRORS = {
    "impossible value": (["train.k_d_steps=0"], 1, ["train.k_d_steps=0", ">= 1"]),
    "not a number": (["data.batch_size=abc"], 1, ["data.batch_size=abc", "integer"]),
    "inception weights offline": (
        ["experiment=digits_dcgan", "eval=inception"],
        1,
        ["eval.evaluator.extractor.weights_path", "eval.evaluator.extractor.allow_download"],
    ),
    "download offline": (
        ["data=cifar10", "eval=none", "data.download=true", "data.root={tmp}/cifar"],
        1,
        ["data.download=true", "CIFAR10", "data.root"],
    ),
}


# Each row pays a process start (~6 s on 2 cores); make test keeps the two whose errors arise
# after the config checks (missing weights, a failed download). The two config rows are
# checked in-process (tests/test_validation.py), and k_d_steps=0 also as a process by
# test_hydra_full_error_shows_the_traceback.
SLOW_TRAIN_ERRORS = ("impossible value", "not a number")


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(case, marks=pytest.mark.slow) if case in SLOW_TRAIN_ERRORS else case
        for case in TRAIN_ERRORS
    ],
)
def test_train_user_error_is_one_line(case, tmp_path):
    overrides, status, names = TRAIN_ERRORS[case]
    overrides = [o.format(tmp=tmp_path) for o in overrides]
    # A proxy on a closed port: "offline" even on a machine with internet, and fast.
    env = {"https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"}
    code, stderr = _cli(
        "gan_lab.train",
        "experiment=ring_mlp",
        *overrides,
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={tmp_path}/run",
        env=env,
    )
    assert code == status, stderr[-3000:]
    _assert_one_line(stderr, "gan_lab.train", *names)


def test_hydra_full_error_shows_the_traceback(tmp_path):
    code, stderr = _cli(
        "gan_lab.train",
        "experiment=ring_mlp",
        "train.k_d_steps=0",
        f"hydra.run.dir={tmp_path}",
        env={"HYDRA_FULL_ERROR": "1"},
    )
    assert code == 1
    assert "Traceback" in stderr and "train.k_d_steps=0: must be" in stderr


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """last.ckpt (and best.ckpt) of a 4-iteration ring run."""
    from tests.conftest import QUICK, compose_config

    run_dir = tmp_path_factory.mktemp("run")
    quick = [o for o in QUICK if not o.startswith("callbacks")]
    train(compose_config([*quick, "experiment=ring_mlp", "train.iterations=4"], run_dir))
    return run_dir / "checkpoints" / "last.ckpt"


def _evaluate_errors(checkpoint: Path) -> dict[str, tuple[list[str], int, list[str]]]:
    ckpt = f"ckpt={checkpoint}"
    missing = checkpoint.parent / "nope.ckpt"
    return {
        "no ckpt": ([], 2, ["ckpt=PATH"]),
        "bare word": ([ckpt, "inception"], 2, ["'inception'", "key=value"]),
        "missing checkpoint": ([f"ckpt={missing}"], 1, [str(missing)]),
        "not a checkpoint": ([f"ckpt={checkpoint.parent.parent / 'done'}"], 1, ["done"]),
        "typo in a key": ([ckpt, "eval.evaluator.num_rael=5"], 2, ["eval.evaluator.num_rael"]),
        "unknown option": ([ckpt, "eval=inceptoin"], 2, ["eval/inceptoin", "inception"]),
        "impossible value": ([ckpt, "train.k_d_steps=0"], 1, ["train.k_d_steps=0"]),
        "bad count": ([ckpt, "save_images=many"], 2, ["save_images=many"]),
        "images of toy data": ([ckpt, "save_images=4"], 2, ["save_images=4", "save_samples"]),
        "no gpu": ([ckpt, "device=cuda:7"], 1, ["device=cuda:7"]),
        "not a device": ([ckpt, "device=tpu9"], 2, ["device=tpu9"]),
    }


def test_evaluate_user_errors_are_one_line_and_load_no_data(checkpoint, capsys, monkeypatch):
    def no_data(*args, **kwargs):
        raise AssertionError("data built before the arguments were checked")

    for case, (args, status, names) in _evaluate_errors(checkpoint).items():
        if case != "images of toy data":  # only known once the data module says what it is
            monkeypatch.setattr(evaluate, "build_datamodule", no_data)
        else:
            monkeypatch.undo()
        with pytest.raises(SystemExit) as exit_info:
            evaluate.main(args)
        stderr = capsys.readouterr().err
        assert exit_info.value.code == status, (case, stderr)
        _assert_one_line(stderr, "gan_lab.evaluate", *names)
    assert not list(checkpoint.parent.glob("*.metrics.json"))  # nothing half-written


def test_report_user_errors_are_one_line(tmp_path, capsys):
    rows = {
        "no argument": ([], 2, ["MULTIRUN_DIR"]),
        "two arguments": (["a", "b"], 2, ["unrecognized arguments: b"]),
        "no such dir": ([str(tmp_path / "nope")], 1, [str(tmp_path / "nope")]),
        "no finished job": ([str(tmp_path)], 1, [str(tmp_path), "done"]),
    }
    for case, (args, status, names) in rows.items():
        with pytest.raises(SystemExit) as exit_info:
            report.main(args)
        stderr = capsys.readouterr().err
        assert exit_info.value.code == status, (case, stderr)
        _assert_one_line(stderr, "gan_lab.report", *names)


@pytest.mark.parametrize(
    ("module", "argument"), [("gan_lab.evaluate", "ckpt=PATH"), ("gan_lab.report", "MULTIRUN_DIR")]
)
def test_tools_have_help(module, argument):
    result = processes.run([sys.executable, "-m", module, "--help"], timeout=60, cwd=ROOT)
    assert "usage" in result.stdout.lower() and argument in result.stdout
    assert "Traceback" not in result.stderr


def test_evaluate_cli_missing_checkpoint_is_one_line(tmp_path):
    code, stderr = _cli("gan_lab.evaluate", f"ckpt={tmp_path}/last.ckpt")
    assert code == 1
    _assert_one_line(stderr, "gan_lab.evaluate", f"{tmp_path}/last.ckpt")


def test_only_an_explicit_cause_counts_as_a_user_error(capsys):
    """``raise Wrapper(...) from user_error`` (Hydra's instantiate) is reported in one line; a
    bug raised while an ``except UserError`` block runs keeps its own traceback."""
    with pytest.raises(SystemExit) as exit_info, reported_as_one_line("prog"):
        try:
            raise MissingFileError("weights.pt: not found")
        except UserError as error:
            raise RuntimeError("wrapped") from error
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == "prog: error: weights.pt: not found\n"

    with pytest.raises(KeyError), reported_as_one_line("prog"):
        try:
            raise MissingFileError("weights.pt: not found")
        except UserError:
            {}["a bug in the handler"]
    assert capsys.readouterr().err == ""
