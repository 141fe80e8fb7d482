"""Opening a checkpoint never runs code from it: every load path is ``weights_only=True``.

A crafted ``.ckpt`` whose pickle would call ``os.system`` is refused, with one line naming the
file and the offending global, by ``gan_lab.evaluate``, by a resume (``ckpt_path=``) and by
``gan_lab.load``; the marker file the payload would create never appears. The explicit opt-in
``trust_checkpoint=true`` loads it the unsafe way (and so runs the payload: that is what the
opt-in means).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

import gan_lab
from gan_lab.checkpoint_io import load_checkpoint_file
from gan_lab.errors import BadFileError
from gan_lab.train import fit, train
from tests import processes
from tests.conftest import QUICK, compose_config

ROOT = Path(__file__).resolve().parents[1]
TOY = ["experiment=ring_mlp", "model.g.hidden=[8]", "model.d.hidden=[8]"]


class Payload:
    """Unpickling this calls ``os.system("touch <marker>")``: what a malicious file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A finished 4-iteration ring run (last.ckpt, best.ckpt)."""
    run_dir = tmp_path_factory.mktemp("run")
    quick = [o for o in QUICK if not o.startswith("callbacks")]
    train(compose_config([*quick, *TOY, "train.iterations=4"], run_dir))
    return run_dir


@pytest.fixture
def evil(run_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    """(a copy of last.ckpt carrying the payload, the marker the payload would create)."""
    marker = tmp_path / "marker"
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    checkpoint["gan_lab"]["note"] = Payload(marker)
    path = tmp_path / "evil.ckpt"
    torch.save(checkpoint, path)
    return path, marker


def _assert_refused(message: str, path: Path) -> None:
    assert str(path) in message and "posix.system" in message, message
    assert "trust_checkpoint=true" in message, message


def test_load_refuses_code_in_a_checkpoint(evil):
    path, marker = evil
    with pytest.raises(BadFileError) as error:
        load_checkpoint_file(path)
    _assert_refused(str(error.value), path)
    with pytest.raises(BadFileError) as error:
        gan_lab.load(path)
    _assert_refused(str(error.value), path)
    assert not marker.exists()


def test_evaluate_cli_refuses_code_in_a_checkpoint(evil):
    path, marker = evil
    result = processes.run(
        [sys.executable, "-m", "gan_lab.evaluate", f"ckpt={path}"],
        timeout=90,
        check=False,
        cwd=ROOT,
        env={**os.environ, "WANDB_MODE": "offline"},
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    [line] = [x for x in result.stderr.splitlines() if x.startswith("gan_lab.evaluate: error: ")]
    _assert_refused(line, path)
    assert not marker.exists()


def test_resume_refuses_code_in_a_checkpoint(evil, make_config):
    path, marker = evil
    with pytest.raises(BadFileError) as error:
        fit(make_config(*TOY, "train.iterations=6", f"ckpt_path={path}"))
    _assert_refused(str(error.value), path)
    assert not marker.exists()


def test_trust_checkpoint_is_the_explicit_unsafe_opt_in(evil, make_config):
    path, marker = evil
    module = gan_lab.load(path, trust_checkpoint=True)
    assert marker.exists()  # the opt-in unpickles everything, payload included
    assert module.generate(3).shape == (3, 2)
    marker.unlink()
    # The checkpoint is of a finished 4-iteration run: resuming it trains on from iteration 4.
    run = fit(make_config(*TOY, "train.iterations=6", f"ckpt_path={path}", "trust_checkpoint=true"))
    assert marker.exists() and run.module.iteration == 6


# Runs whose checkpoints hold every kind of state gan_lab writes: EMA weights, lr-decay and
# evaluation callback state, a regularizer, instance noise, skip counts, an image evaluator.
# (Every preset's own checkpoints are loaded by tests/test_presets.py, DDP's by test_ddp.py,
# all through the same safe load_checkpoint_file.)
STATEFUL_RUNS = {
    "ema, lr decay, skip": [
        "experiment=ring_best",
        "train.ema_decay=0.9",
        "train.on_nan=skip",
        "instance_noise=gaussian",
        "logger=many",
    ],
    "dcgan, classifier eval": [
        "experiment=digits_dcgan",
        "model.g.base_channels=8",
        "model.d.base_channels=8",
        "eval.evaluator.num_real=64",
        "eval.evaluator.num_fake=64",
        "eval.evaluator.kid_subset_size=32",
    ],
}


@pytest.mark.parametrize("overrides", STATEFUL_RUNS.values(), ids=STATEFUL_RUNS.keys())
def test_every_checkpoint_gan_lab_writes_loads_safely(overrides, make_config, tmp_path):
    settings = ["train.iterations=3", "train.checkpoint_every=2", "eval.every_n_iterations=2"]
    fit(make_config(*overrides, *settings, "callbacks=default"))
    written = sorted((tmp_path / "checkpoints").glob("*.ckpt"))
    assert {p.name for p in written} >= {"last.ckpt", "best.ckpt", "iter_0000002.ckpt"}
    for path in written:
        assert torch.serialization.get_unsafe_globals_in_checkpoint(str(path)) == [], path
        assert gan_lab.load(path).iteration in (2, 3)
