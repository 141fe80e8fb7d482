"""Every experiment preset starts up with its own settings and runs through its own evaluation.

The presets are globbed, so a new ``gan_lab/conf/experiment/*.yaml`` is covered without touching
this file. A run is shortened only in its budget and eval cadence (``SHORT``); data, nets, loss,
evaluator, logger and callbacks stay the preset's own. The fast tier runs end to end every toy
preset and, per image data set, one preset whose evaluation is cheap on CPU (digits: ~10 s for
its two evaluations, most of it KID's 100 subsets); the others (the other digits preset, whose
evaluation is the same; 10k + 10k Fashion-MNIST images per evaluation) run under ``slow``.
"""

from __future__ import annotations

import csv
import functools
import math
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from gan_lab.build import build_datamodule
from gan_lab.checkpoint_io import load_checkpoint_file
from gan_lab.config import CONF_DIR
from gan_lab.data.base import GANDataModule
from gan_lab.metrics.evaluation import Evaluator
from gan_lab.train import train
from gan_lab.validation import validate
from tests.conftest import compose_config

PRESETS = sorted(path.stem for path in (CONF_DIR / "experiment").glob("*.yaml"))
# Shortened in budget and metric cadence only: an evaluation mid-run (2) and at the end (4).
# The presets' sample and checkpoint cadences (>= 250) need no override: sample grids are drawn
# at the start and the end, last.ckpt at the end and best.ckpt at each better val/primary.
SHORT = ["train.iterations=4", "eval.every_n_iterations=2", "trainer.enable_progress_bar=false"]
# Values fed to the feature extractor per evaluation (images x pixels) above which a preset runs
# end to end only under `slow`: digits (8x8, 1.3M) take seconds, Fashion-MNIST (28x28 or 32x32,
# 16-20M) tens of seconds on 2 CPU cores.
FAST_EVAL_VALUES = 2_000_000


def _preset(make_config, name: str, *overrides: str) -> DictConfig:
    return make_config(f"experiment={name}", *overrides, quick=False)


def _datamodule_or_skip(cfg: DictConfig) -> GANDataModule:
    """The preset's DataModule with its training set loaded; skip when the files are absent
    (Fashion-MNIST: apt-get install dataset-fashion-mnist, or data.root=DIR)."""
    datamodule = build_datamodule(cfg)
    try:
        datamodule.num_samples("train")
    except FileNotFoundError as err:
        pytest.skip(f"{cfg.name}: its data is not installed here ({err})")
    return datamodule


def _eval_values(cfg: DictConfig, datamodule: GANDataModule) -> int:
    """How many values one evaluation feeds the feature extractor; 0 for toy suites."""
    evaluator = cfg.eval.evaluator
    if datamodule.metrics != "features":
        return 0
    return (evaluator.num_real + evaluator.num_fake) * math.prod(datamodule.sample_shape)


@functools.cache
def _evaluation(name: str) -> tuple[type, int]:
    """The preset's DataModule class and the size of one evaluation (nothing is loaded)."""
    cfg = compose_config([f"experiment={name}"], Path("/nonexistent/presets"))
    datamodule = build_datamodule(cfg)
    return type(datamodule), _eval_values(cfg, datamodule)


def _in_fast_tier(name: str) -> bool:
    """Toy presets; of the image presets with a cheap evaluation, the first per data set (the
    others evaluate the same way, and each image evaluation costs seconds on CPU)."""
    data, values = _evaluation(name)
    if values == 0:
        return True
    cheap_alike = [
        p
        for p in PRESETS
        if _evaluation(p)[0] is data and 0 < _evaluation(p)[1] <= FAST_EVAL_VALUES
    ]
    return bool(cheap_alike) and name == cheap_alike[0]


@pytest.mark.parametrize("name", PRESETS)
def test_preset_cadence_fits_its_budget(make_config, name):
    """The preset's own budget: metrics, checkpoints and sample grids mid-run and at the end."""
    cfg = _preset(make_config, name)
    train_cfg, iterations = cfg.train, cfg.train.iterations
    assert cfg.eval.evaluator is not None, f"{name} trains without metrics: no best.ckpt"
    assert cfg.callbacks.checkpoint.monitor == "val/primary"
    every = cfg.eval.every_n_iterations
    # Evaluated more than once, and the last periodic evaluation is the final one.
    assert 0 < every < iterations and iterations % every == 0, (every, iterations)
    assert 0 < train_cfg.checkpoint_every <= iterations
    assert iterations % train_cfg.checkpoint_every == 0, (train_cfg.checkpoint_every, iterations)
    assert 0 < train_cfg.sample_every < iterations
    assert train_cfg.log_every <= every


@pytest.mark.parametrize("name", PRESETS)
def test_preset_starts_up_with_its_own_data(make_config, name):
    """Start-up validation with the preset's own data and evaluator: it passes, and the real
    samples FID asks for fit in the split the evaluator reads them from."""
    cfg = _preset(make_config, name)
    datamodule = _datamodule_or_skip(cfg)
    validate(cfg, datamodule)
    num_real = cfg.eval.evaluator.num_real
    size = datamodule.num_samples(Evaluator.real_split)
    assert size is None or num_real <= size, (num_real, size)


def _run_end_to_end(make_config, tmp_path: Path, name: str) -> None:
    cfg = _preset(make_config, name, *SHORT)
    preset_num_real = cfg.eval.evaluator.num_real
    train(cfg)
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    evaluated = {int(float(r["step"])): r["val/primary"] for r in rows if r.get("val/primary")}
    assert list(evaluated) == [2, 4], evaluated  # mid-run and final, each logged once
    scores = [float(value) for value in evaluated.values()]
    assert not any(math.isnan(score) for score in scores), scores
    # Also when an untrained G puts no sample near a mode (reverse KL = inf at both).
    assert (tmp_path / "checkpoints" / "best.ckpt").is_file()
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "done").is_file()
    # The run records the num_real it evaluated with (clamped to the set where it is smaller),
    # so gan_lab.evaluate on its checkpoints computes the same numbers.
    stored = load_checkpoint_file(tmp_path / "checkpoints" / "last.ckpt")["gan_lab"]["config"]
    size = build_datamodule(cfg).num_samples(Evaluator.real_split)
    expected = preset_num_real if size is None else min(preset_num_real, size)
    assert OmegaConf.select(OmegaConf.create(stored), "eval.evaluator.num_real") == expected


def _tiers(names: list[str]) -> list:
    """Each preset once: in the fast tier, or under ``slow`` with room for two Fashion-MNIST
    evaluations on 2 CPU cores, plus loading the data."""
    slow = (pytest.mark.slow, pytest.mark.timeout(600))
    return [pytest.param(n, marks=() if _in_fast_tier(n) else slow) for n in names]


@pytest.mark.parametrize("name", _tiers(PRESETS))
def test_preset_runs_end_to_end(make_config, tmp_path, name):
    _datamodule_or_skip(_preset(make_config, name))
    _run_end_to_end(make_config, tmp_path, name)
