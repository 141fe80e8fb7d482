"""Lightning trainer flags that count steps, batches or epochs are refused at start-up (gan_lab
counts iterations: k_d_steps + 1 optimizer steps each), and the ``debug=`` presets run a whole
run, every callback and a real evaluation included, in seconds.

Before the refusal, on ring_mlp with ``train.iterations=40``: ``+trainer.limit_train_batches=20``
trained all 40 iterations (build_trainer's own ``limit_train_batches`` won), and
``+trainer.max_steps=20`` stopped at iteration 10 (global_step 20) without its final evaluation
or best.ckpt, and marked the run done.
"""

from __future__ import annotations

import csv
import inspect
import logging
import sys
from pathlib import Path

import lightning as L
import pytest
from omegaconf import OmegaConf

from gan_lab import build
from gan_lab.checkpoint_io import load_checkpoint_file
from gan_lab.config import CONF_DIR
from gan_lab.evaluate import evaluate
from gan_lab.gan_module import GANModule
from gan_lab.train import fit, train
from gan_lab.validation import REFUSED_TRAINER_FLAGS, ConfigError, validate
from tests import processes
from tests.conftest import ROOT
from tests.helpers import run_cli, write_fake_fashion

TOY = ["experiment=ring_mlp", "model.g.hidden=[8]", "model.d.hidden=[8]", "data.batch_size=8"]
SMALL_DIGITS = ["experiment=digits_dcgan", "model.g.base_channels=4", "model.d.base_channels=4"]
DEBUG_PRESETS = sorted(path.stem for path in (CONF_DIR / "debug").glob("*.yaml"))
EXPERIMENTS = sorted(path.stem for path in (CONF_DIR / "experiment").glob("*.yaml"))
# Full runs as the CLI makes them: the default loggers and callbacks, no progress bar.
RUN = ["trainer.enable_progress_bar=false"]

# (override, the gan_lab setting the one-line message must point to instead)
REFUSED = [
    ("+trainer.max_steps=20", "train.iterations"),
    ("+trainer.min_steps=20", "train.iterations"),
    ("+trainer.max_epochs=2", "train.iterations"),
    ("+trainer.min_epochs=1", "train.iterations"),
    ("+trainer.limit_train_batches=20", "train.iterations"),
    ("+trainer.overfit_batches=2", "train.iterations"),
    ("+trainer.max_time=00:00:01:00", "train.iterations"),
    ("+trainer.fast_dev_run=true", "debug=fdr"),
    ("+trainer.accumulate_grad_batches=2", "data.batch_size"),
    ("+trainer.val_check_interval=10", "eval.every_n_iterations"),
    ("+trainer.check_val_every_n_epoch=2", "eval.every_n_iterations"),
    ("+trainer.limit_val_batches=5", "eval.evaluator.num_real"),
    ("+trainer.num_sanity_val_steps=2", "debug=fdr"),
    ("+trainer.log_every_n_steps=5", "train.log_every"),
    ("+trainer.enable_checkpointing=false", "callbacks.checkpoint=null"),
    ("+trainer.logger=false", "logger=csv|tensorboard|wandb|many|none"),
]


def _rows(run_dir: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((run_dir / "metrics.csv").open()))


def _evaluated_at(run_dir: Path) -> list[int]:
    return [int(float(r["step"])) for r in _rows(run_dir) if r.get("val/primary")]


@pytest.mark.parametrize(("override", "instead"), REFUSED, ids=[r[0] for r in REFUSED])
def test_step_counting_flag_fails_before_training(
    make_config, monkeypatch, override, instead
) -> None:
    def no_training(*args, **kwargs):
        raise AssertionError("training started although a refused trainer flag is set")

    monkeypatch.setattr(GANModule, "training_step", no_training)
    cfg = make_config(*TOY, "train.iterations=40", override, "logger=csv", "callbacks=default")
    with pytest.raises(ConfigError) as error:
        fit(cfg)
    message = str(error.value)
    flag = override.removeprefix("+").split("=", 1)[0]
    assert error.value.key == flag
    assert message.startswith(f"{flag}="), message
    assert instead in message and "\n" not in message
    written = {p.name for p in Path(cfg.paths.output_dir).rglob("*")}
    assert not written & {"metrics.csv", "last.ckpt"}, written


def test_max_steps_message_counts_the_steps_of_this_run(make_config) -> None:
    with pytest.raises(ConfigError) as error:
        validate(make_config(*TOY, "train.k_d_steps=3", "+trainer.max_steps=20"))
    assert "k_d_steps + 1 = 4 per iteration" in str(error.value)


def test_refused_flags_are_trainer_arguments() -> None:
    """A typo in the table would refuse nothing."""
    arguments = inspect.signature(L.Trainer.__init__).parameters
    assert set(REFUSED_TRAINER_FLAGS) <= set(arguments), set(REFUSED_TRAINER_FLAGS) - set(arguments)
    assert {o.removeprefix("+trainer.").split("=")[0] for o, _ in REFUSED} <= set(
        REFUSED_TRAINER_FLAGS
    )


def test_null_flag_passes(make_config) -> None:
    """``trainer.<flag>=null`` is Lightning's default, and how ``gan_lab.evaluate`` reads a
    checkpoint whose stored config still sets a flag."""
    validate(make_config(*TOY, "+trainer.max_steps=null", "+trainer.max_time=null"))


@pytest.mark.slow  # a process start (~8 s); the refusal itself is checked in-process above
def test_cli_refuses_max_steps_in_one_line(tmp_path) -> None:
    result = processes.run(
        [
            *(sys.executable, "-m", "gan_lab.train", "experiment=ring_mlp", "train.iterations=40"),
            *("+trainer.max_steps=20", "trainer.enable_progress_bar=false"),
            f"hydra.run.dir={tmp_path}/run",
        ],
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("gan_lab.train: ")]
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert len(errors) == 1 and errors[0].startswith(
        "gan_lab.train: error: trainer.max_steps=20: Lightning counts optimizer steps, "
        "k_d_steps + 1 = 2 per iteration"
    ), errors
    assert "train.iterations" in errors[0]
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_max_time_would_skip_the_final_evaluation(make_config, tmp_path) -> None:
    """Why ``trainer.max_time`` is refused: Lightning's Timer stops the run between two
    iterations, but before the last one of the budget, so the final evaluation never runs and
    the module reports no stop reason (``train`` would mark the run done). If this fails,
    time budgets work: drop max_time from REFUSED_TRAINER_FLAGS."""
    cfg = make_config(
        *TOY,
        *RUN,
        "train.iterations=1000",
        "eval.every_n_iterations=1000",
        "callbacks=default",
        "+trainer.max_time=00:00:00:01",
        "+callbacks.throttle._target_=tests.helpers.Throttle",
        f"+callbacks.throttle.progress_file={tmp_path}/progress",
        "+callbacks.throttle.seconds=0.01",
        quick=False,
    )
    # Built by hand: validate would refuse the flag.
    datamodule = build.build_datamodule(cfg)
    module = build.build_module(cfg, datamodule.sample_shape)
    trainer = build.build_trainer(cfg)
    trainer.fit(module, datamodule=datamodule)
    assert 0 < module.iteration < 1000
    assert module.stop_reason is None
    assert "val/primary" not in trainer.callback_metrics
    stored = load_checkpoint_file(tmp_path / "checkpoints" / "last.ckpt")["gan_lab"]
    assert stored["iteration"] == module.iteration


def test_eval_max_samples_must_be_a_count(make_config) -> None:
    with pytest.raises(ConfigError) as error:
        validate(make_config(*TOY, "eval=none", "+eval.max_samples=0"))
    assert str(error.value) == "eval.max_samples=0: must be an integer >= 1"


# ------------------------------------------------------------------ debug presets
def test_debug_presets_are_global_and_say_what_they_are() -> None:
    assert {"fdr", "limit", "profiler"} <= set(DEBUG_PRESETS)
    for name in DEBUG_PRESETS:
        lines = (CONF_DIR / "debug" / f"{name}.yaml").read_text().splitlines()
        assert lines[0] == "# @package _global_", name
        assert lines[1].startswith("# "), name


@pytest.mark.parametrize("name", DEBUG_PRESETS)
def test_debug_preset_wins_over_every_experiment(make_config, name) -> None:
    """Last in train.yaml's defaults list: a preset's budget and cadences replace those of any
    experiment, and the result passes start-up validation."""
    alone = make_config(f"debug={name}", quick=False)
    for experiment in EXPERIMENTS:
        cfg = make_config(f"experiment={experiment}", f"debug={name}", quick=False)
        assert cfg.train.iterations == alone.train.iterations, experiment
        for key in ("log_every", "sample_every", "checkpoint_every"):
            assert cfg.train[key] == alone.train[key], (experiment, key)
        assert cfg.eval.every_n_iterations == alone.eval.every_n_iterations, experiment
        assert cfg.eval.max_samples == alone.eval.max_samples, experiment
        validate(cfg)


def _fake_fashion(tmp_path: Path) -> str:
    root = tmp_path / "fashion"
    root.mkdir()
    write_fake_fashion(root, n=128)
    return f"data.root={root}"


# name -> overrides; the default config (Fashion-MNIST) reads fake files of 128 images.
FDR_RUNS = {
    "default": [],
    "ring_mlp": ["experiment=ring_mlp"],
    "digits_dcgan": ["experiment=digits_dcgan"],
    "eval=none": ["eval=none"],
}


@pytest.mark.parametrize("name", list(FDR_RUNS))
def test_fdr_runs_every_callback_once(make_config, tmp_path, name) -> None:
    overrides = FDR_RUNS[name]
    if not any(o.startswith("experiment=") for o in overrides):
        overrides = [*overrides, _fake_fashion(tmp_path)]
    cfg = make_config(*overrides, "debug=fdr", *RUN, quick=False)
    assert cfg.train.iterations == 1  # also where the experiment sets its own budget
    metrics = train(cfg)
    assert metrics["train/iteration"] == 1
    assert {p.name for p in (tmp_path / "samples").glob("iter_*.png")} == {
        "iter_0000000.png",
        "iter_0000001.png",
    }
    checkpoints = {p.name for p in (tmp_path / "checkpoints").glob("*.ckpt")}
    assert {"last.ckpt", "iter_0000001.ckpt"} <= checkpoints
    assert (tmp_path / "done").is_file()
    if cfg.eval.evaluator is None:
        assert _evaluated_at(tmp_path) == [] and "best.ckpt" not in checkpoints
        return
    assert _evaluated_at(tmp_path) == [1]
    assert "best.ckpt" in checkpoints
    stored = load_checkpoint_file(tmp_path / "checkpoints" / "last.ckpt")["gan_lab"]["config"]
    assert stored["eval"]["evaluator"]["num_fake"] == 256  # the cap, recorded with the run


def test_fdr_cap_is_noted_and_evaluate_reproduces_the_run(make_config, tmp_path, caplog) -> None:
    """The capped counts ride in the checkpoint, so evaluate computes the logged numbers; and
    evaluate refuses a step-counting trainer flag as training does."""
    cfg = make_config(*SMALL_DIGITS, "debug=fdr", *RUN, quick=False)
    with caplog.at_level(logging.INFO, logger="gan_lab.validation"):
        logged = train(cfg)
    notes = [r.getMessage() for r in caplog.records if "eval.max_samples" in r.getMessage()]
    assert len(notes) == 1 and notes[0].startswith(
        "eval.max_samples=256: eval.evaluator.num_real=10000 -> 256, "
        "eval.evaluator.num_fake=10000 -> 256"
    ), notes
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    again = evaluate(ckpt)
    assert again["val/primary"] == pytest.approx(logged["val/primary"], rel=1e-6)
    with pytest.raises(ConfigError) as error:
        evaluate(ckpt, ["+trainer.max_steps=20"])
    assert error.value.key == "trainer.max_steps"


@pytest.mark.parametrize("name", ["limit", "profiler"])
def test_limit_and_profiler_evaluate_mid_run_and_at_the_end(make_config, tmp_path, caplog, name):
    cfg = make_config(*TOY, f"debug={name}", *RUN, quick=False)
    with caplog.at_level(logging.INFO):
        train(cfg)
    assert _evaluated_at(tmp_path) == [10, 20]
    assert {p.name for p in (tmp_path / "checkpoints").glob("iter_*.ckpt")} == {
        "iter_0000010.ckpt",
        "iter_0000020.ckpt",
    }
    printed = caplog.text  # Lightning logs the report when the run ends
    profiled = OmegaConf.select(cfg, "trainer.profiler") is not None
    assert ("Profiler Report" in printed) == profiled
    # The report times each callback: the evaluation's share of a run is what it is for.
    assert ("[Callback]Evaluation.on_train_batch_end" in printed) == profiled


@pytest.mark.slow  # a process (~7 s); make test runs the README's `debug=fdr` process instead
def test_cli_fdr_on_ring(tmp_path) -> None:
    run_dir = tmp_path / "run"
    result = run_cli(
        "experiment=ring_mlp", "debug=fdr", *RUN, f"hydra.run.dir={run_dir}", timeout=60
    )
    assert "final metrics" in result.stdout + result.stderr
    assert (run_dir / "samples" / "iter_0000001.png").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert _evaluated_at(run_dir) == [1]
