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
from gan_lab.errors import MissingFileError, UserError, reported_as_one_line
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


# (overrides of `python -m gan_lab.train`, exit status, what the one line must name)
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


@pytest.mark.parametrize("case", list(TRAIN_ERRORS))
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
