"""Start-up checks of a composed run config: impossible values fail before any training.

Hydra already rejects unknown group options (listing the valid ones) and unknown or mistyped
keys of the ``RunConfig`` schema. ``validate`` checks every node against what the code it
configures declares (gan_lab.config_nodes.check_nodes: parameter names, type hints and the
ranges declared in them), so a new option needs no rule here; this module holds only the rules
between keys and against the data. Each failure is one line ``<key>=<value>: <rule>``. It also
fits the evaluation sample counts to ``eval.max_samples`` and to the data
(``limit_eval_samples``, ``fit_eval_to_data``), the only changes it makes to the config.
"""

from __future__ import annotations

import inspect
import logging
import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from gan_lab.config import RunConfig
from gan_lab.config_nodes import check_nodes, target_of
from gan_lab.data.base import METRIC_SUITES, GANDataModule, batch_shortfall
from gan_lab.errors import ConfigError
from gan_lab.nan_guard import POLICIES

log = logging.getLogger(__name__)


def _declared(target: Any, name: str) -> Any:
    """What ``target`` declares as its attribute ``name`` (None if nothing). A factory
    classmethod (``_target_: pkg.Class.for_data``) declares through its class."""
    owner = target.__self__ if inspect.ismethod(target) else target
    return getattr(owner, name, None)


def _d_setting(cfg: DictConfig, key: str) -> Any:
    """``model.d.<key>`` when the model config has a D node with that key, else None."""
    d = cfg.model.get("d")
    return d.get(key) if isinstance(d, DictConfig) else None


def _integer(key: str, value: Any, minimum: int) -> None:
    # bool is an int to Python, not a count to a user; "abc" and 2.5 come from untyped groups.
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(key, value, f"must be an integer >= {minimum}")


def _at_least(cfg: DictConfig, key: str, minimum: int) -> None:
    """``key`` must be an integer >= ``minimum``; an absent key (an older stored config) or
    null passes."""
    value = OmegaConf.select(cfg, key)
    if value is not None:
        _integer(key, value, minimum)


def _check_train(cfg: DictConfig) -> None:
    # The ranges of train.* are declared in the schema (gan_lab.config.TrainSettings).
    if cfg.train.on_nan not in POLICIES:
        raise ConfigError("train.on_nan", cfg.train.on_nan, f"must be one of {', '.join(POLICIES)}")


# Trainer flags a run config may not set: flag -> (why, what to set instead; ``{steps}`` is the
# run's k_d_steps + 1). Lightning counts optimizer steps (``trainer.global_step``, k_d_steps + 1
# per iteration), batches and epochs where gan_lab counts iterations, and
# gan_lab.build.build_trainer passes some flags itself, which win over a config value without a
# word: such a run ignored the flag or stopped short of its final evaluation and was marked done
# (tests/test_trainer_flags.py).
_BUDGET = "set train.iterations (the budget, counted in iterations)"
_CADENCE = "set eval.every_n_iterations (the metric cadence, counted in iterations)"
_SAMPLES = "set eval.evaluator.num_real and num_fake (samples per evaluation)"
_NO_LOOP = (
    "gan_lab runs no Lightning validation, test or predict loop (metrics come from its "
    "Evaluation callback), so this flag does nothing"
)
REFUSED_TRAINER_FLAGS: dict[str, tuple[str, str]] = {
    "max_steps": (
        "Lightning counts optimizer steps, k_d_steps + 1 = {steps} per iteration, so the run "
        "stops part-way through its budget without its final evaluation",
        _BUDGET,
    ),
    "min_steps": (
        "Lightning counts optimizer steps, k_d_steps + 1 = {steps} per iteration",
        _BUDGET,
    ),
    "max_epochs": (
        "gan_lab sets max_epochs=1 itself: one Lightning epoch is the whole budget (the "
        "training stream is endless)",
        _BUDGET,
    ),
    "min_epochs": (
        "one Lightning epoch is the whole budget (the training stream is endless)",
        _BUDGET,
    ),
    "limit_train_batches": (
        "gan_lab sets it to train.iterations itself (one batch is one iteration), so this value "
        "would be ignored",
        _BUDGET,
    ),
    "overfit_batches": ("it replaces the number of training batches, i.e. the budget", _BUDGET),
    "fast_dev_run": (
        "it counts Lightning steps and replaces the loggers with a dummy",
        "use debug=fdr (one iteration through every callback, real metrics on a few samples)",
    ),
    "max_time": (
        "a time limit stops the run between two iterations but skips the final evaluation and "
        "marks the run done, so ckpt_path=last would not resume it",
        _BUDGET,
    ),
    "accumulate_grad_batches": (
        "gan_lab optimizes by hand: each iteration is k_d_steps D updates and one G update",
        "set data.batch_size or train.k_d_steps",
    ),
    "val_check_interval": (_NO_LOOP, _CADENCE),
    "check_val_every_n_epoch": (_NO_LOOP, _CADENCE),
    "limit_val_batches": (_NO_LOOP, _SAMPLES),
    "limit_test_batches": (_NO_LOOP, _SAMPLES),
    "limit_predict_batches": (_NO_LOOP, "generate samples with python -m gan_lab.evaluate"),
    "num_sanity_val_steps": (
        _NO_LOOP + " (gan_lab sets it to 0 itself)",
        "use debug=fdr for a quick check of the whole run",
    ),
    "log_every_n_steps": (
        "gan_lab sets it to train.log_every itself, so this value would be ignored",
        "set train.log_every (counted in iterations)",
    ),
    "enable_checkpointing": (
        "gan_lab sets it itself, on when the callbacks group has a checkpoint callback (which "
        "counts iterations; Lightning's own counts optimizer steps)",
        "set train.checkpoint_every, or callbacks.checkpoint=null for no checkpoints",
    ),
    "logger": (
        "gan_lab passes the logger group's loggers itself, so this value would be ignored",
        "choose logger=csv|tensorboard|wandb|many|none",
    ),
    "callbacks": (
        "gan_lab passes the callbacks group's callbacks itself, so this value would be ignored",
        "add one with +callbacks.<name>._target_=module.Class",
    ),
    "plugins": (
        "gan_lab passes its own plugins (atomic checkpoint writes) itself, so this value would "
        "be ignored",
        "set trainer.precision for mixed precision",
    ),
}


def _check_trainer(cfg: DictConfig) -> None:
    # Absent or null passes: `trainer.max_steps=null` lets gan_lab.evaluate read a checkpoint
    # whose stored config still has a flag (evaluate builds no Trainer).
    steps = (OmegaConf.select(cfg, "train.k_d_steps") or 1) + 1
    for flag, (why, instead) in REFUSED_TRAINER_FLAGS.items():
        value = OmegaConf.select(cfg, f"trainer.{flag}")
        if value is not None:
            raise ConfigError(f"trainer.{flag}", value, f"{why.format(steps=steps)}; {instead}")


def _check_optimizers(cfg: DictConfig) -> None:
    # torch's optimizers declare types but no ranges, and check theirs only when built with
    # the nets' parameters (gan_lab.build builds them once at start-up to run those checks).
    for net in ("g", "d"):
        lr = cfg.optimizer[net].get("lr")
        if lr is not None and not (lr > 0 and math.isfinite(lr)):
            raise ConfigError(f"optimizer.{net}.lr", lr, "must be > 0")


def _check_loss(cfg: DictConfig) -> None:
    if getattr(target_of(cfg, "loss"), "needs_lipschitz_critic", False):
        _check_lipschitz_critic(cfg)


def _check_lipschitz_critic(cfg: DictConfig) -> None:
    # The critic must be (about) 1-Lipschitz everywhere for its scores to estimate W1:
    # weight clipping, WGAN-GP on interpolates or spectral norm do that; R1 (on real data only)
    # does not.
    clip = cfg.loss.get("clip")
    spectral_norm = bool(_d_setting(cfg, "spectral_norm"))
    if clip is not None:
        if spectral_norm:
            # SN divides the stored weight by its norm: clipping that weight bounds nothing,
            # and shrinking it scales the gradient SN passes back by 1 / norm (runs went NaN).
            raise ConfigError(
                "loss.clip",
                clip,
                "spectral norm already makes the critic Lipschitz and clipping the weights it "
                "rescales only inflates their steps: set loss.clip=null with "
                "model.d.spectral_norm=true",
            )
        return
    regularizer = target_of(cfg, "regularizer")
    if getattr(regularizer, "lipschitz", False) or spectral_norm:
        return
    rule = "the wasserstein loss needs a Lipschitz critic: "
    if regularizer is not None:
        scope = getattr(regularizer, "scope", "")
        rule += f"{regularizer.__name__} does not make the critic Lipschitz"
        rule += f" (it acts {scope}); " if scope else "; "
    raise ConfigError(
        "loss.clip",
        None,
        rule + "set loss.clip > 0, regularizer=gradient_penalty or model.d.spectral_norm=true",
    )


def _check_batch(cfg: DictConfig, datamodule: GANDataModule | None) -> None:
    batch_size = cfg.data.get("batch_size")
    if batch_size is None:
        return
    pack = _d_setting(cfg, "pack")
    if pack is not None:
        if batch_size % pack:
            raise ConfigError("model.d.pack", pack, f"must divide data.batch_size={batch_size}")
    size = datamodule.num_samples("train") if datamodule is not None else None
    if size is not None and (rule := batch_shortfall(size, batch_size, cfg.train.k_d_steps)):
        raise ConfigError("data.batch_size", batch_size, rule)


def _check_model(cfg: DictConfig, datamodule: GANDataModule | None) -> None:
    shape = tuple(datamodule.sample_shape) if datamodule is not None else None
    for key in ("model.g", "model.d"):
        # A net that declares ``resolutions`` takes square images (C, R, R) at one of them.
        net = target_of(cfg, key)
        resolutions = getattr(net, "resolutions", None)
        if resolutions is None:
            continue
        if shape is not None and len(shape) != 3:
            raise ConfigError(
                f"{key}._target_",
                OmegaConf.select(cfg, key)._target_,
                f"needs image data (C, H, W), got shape {shape}",
            )
        resolution = shape[-1] if shape is not None else cfg.data.get("resolution")
        if resolution is not None and resolution not in resolutions:
            raise ConfigError(
                "data.resolution",
                resolution,
                f"{net.__name__} supports resolutions {', '.join(map(str, resolutions))}",
            )


def _check_eval(cfg: DictConfig, datamodule: GANDataModule | None) -> None:
    # eval.every_n_iterations and the evaluator's counts are declared by the classes they
    # configure (the Evaluation callback, gan_lab.metrics.evaluation.Evaluator); max_samples is
    # read here alone.
    _at_least(cfg, "eval.max_samples", 1)
    if OmegaConf.select(cfg, "eval.evaluator") is None or datamodule is None:
        return
    _note_eval_cadence(cfg)  # once per run: validate is called without, then with, the data
    if datamodule.metrics not in METRIC_SUITES:
        raise ConfigError(
            "eval.evaluator",
            OmegaConf.select(cfg, "eval.evaluator._target_"),
            f"{type(datamodule).__name__} declares no metrics (its class attribute `metrics` is "
            f"{datamodule.metrics!r}, not one of {', '.join(METRIC_SUITES)}): declare one, or "
            "train with eval=none",
        )
    _check_extractor(cfg, datamodule)


def _note_eval_cadence(cfg: DictConfig) -> None:
    # The Evaluation callback runs every n iterations and at the last one; n = 0 turns it off.
    every = OmegaConf.select(cfg, "eval.every_n_iterations")
    iterations = OmegaConf.select(cfg, "train.iterations")
    if every is None or iterations is None:
        return
    if every == 0:
        log.info(
            "eval.every_n_iterations=0: no evaluation runs, so no val/primary and no best.ckpt "
            "(say eval=none to mean that, or set a cadence > 0)"
        )
    elif every > iterations:
        log.info(
            "eval.every_n_iterations=%d is more than train.iterations=%d: only the final "
            "evaluation (iteration %d) runs",
            every,
            iterations,
            iterations,
        )


def _check_extractor(cfg: DictConfig, datamodule: GANDataModule) -> None:
    # An extractor that reads the classifier the data declares (``needs_data_classifier``)
    # has no features for data that declares none, unless it is given weights of its own.
    # Only the "features" suite (image data) runs the extractor; toy suites leave it unused.
    key = "eval.evaluator.extractor"
    needs_classifier = _declared(target_of(cfg, key), "needs_data_classifier")
    if not needs_classifier or datamodule.metrics != "features":
        return
    weights = OmegaConf.select(cfg, f"{key}.weights")
    if weights is not None and not Path(weights).is_file():  # else found at the first evaluation
        raise ConfigError(
            f"{key}.weights",
            weights,
            "file not found: give the .pt file `python -m gan_lab.metrics.train_classifier` "
            "wrote, or null for the committed weights of the data",
        )
    if datamodule.classifier is not None or weights is not None:
        return
    raise ConfigError(
        key,
        OmegaConf.select(cfg, key)._target_,
        f"{type(datamodule).__name__} declares no classifier (its class attribute `classifier` "
        "is None), so there are no classifier features for FID/KID and no val/primary: use "
        "eval=inception (or eval=none), or give eval.evaluator.extractor.weights=FILE",
    )


def _check_neighbours(cfg: DictConfig, datamodule: GANDataModule) -> None:
    # After the counts are capped and clamped: the k-NN metrics need k other samples on the
    # side whose balls they draw (precision/recall: both; density/coverage: the real side), and
    # the Inception Score at least one sample per split.
    evaluator = OmegaConf.select(cfg, "eval.evaluator")
    if datamodule.metrics != "features" or evaluator is None:
        return
    num_real, num_fake = evaluator.get("num_real"), evaluator.get("num_fake")
    if num_real is None or num_fake is None:
        return
    limits = {
        "precision_recall_k": (min(num_real, num_fake) - 1, "num_real and num_fake"),
        "density_coverage_k": (num_real - 1, "num_real"),
        "is_splits": (num_fake, "num_fake"),
    }
    for key, (limit, counts) in limits.items():
        value = evaluator.get(key)
        if value is not None and value > limit:
            raise ConfigError(
                f"eval.evaluator.{key}",
                value,
                f"must be at most {limit} with {counts} of this run ({num_real} real, "
                f"{num_fake} generated samples): lower it or raise the sample counts",
            )


def limit_eval_samples(cfg: DictConfig, datamodule: GANDataModule) -> None:
    """Cap ``eval.evaluator.num_real`` and ``num_fake`` at ``eval.max_samples`` where both are
    set, with one logged note where they count: the "features" suite (image data; the toy
    suites draw a fixed number of samples).

    The debug presets (gan_lab/conf/debug/) set ``eval.max_samples`` beside whichever eval group
    is chosen: a value under ``eval.evaluator`` would turn ``evaluator: null`` (eval=none) into
    an evaluator without a ``_target_``. Absent or null: the evaluator's own counts."""
    limit = OmegaConf.select(cfg, "eval.max_samples")
    evaluator = OmegaConf.select(cfg, "eval.evaluator")
    if limit is None or evaluator is None:
        return
    capped = {
        key: evaluator[key]
        for key in ("num_real", "num_fake")
        if evaluator.get(key) is not None and evaluator[key] > limit
    }
    for key in capped:
        evaluator[key] = limit
    if not capped or datamodule.metrics != "features":
        return
    log.info(
        "eval.max_samples=%d: %s (FID reads higher on fewer samples: compare runs at equal "
        "counts; eval.max_samples=null lifts the cap)",
        limit,
        ", ".join(f"eval.evaluator.{key}={value} -> {limit}" for key, value in capped.items()),
    )


def fit_eval_to_data(cfg: DictConfig, datamodule: GANDataModule) -> None:
    """Clamp ``eval.evaluator.num_real`` to the size of the split the evaluator draws real
    samples from (its declared ``real_split``), with one logged note, so that a small set
    (digits: 1438 training images) works with the default eval group. The clamped value is in
    ``cfg``, hence in the run's checkpoints: ``gan_lab.evaluate`` computes the same numbers."""
    evaluator = OmegaConf.select(cfg, "eval.evaluator")
    if evaluator is None or evaluator.get("num_real") is None:
        return
    split = _declared(target_of(cfg, "eval.evaluator"), "real_split")
    size = datamodule.num_samples(split) if split is not None else None
    num_real = evaluator.num_real
    if size is None or num_real <= size:
        return
    log.warning(
        "eval.evaluator.num_real=%d: the %r split of %s has %d samples, so num_real is clamped "
        "to %d (FID reads higher on fewer real samples: compare runs at equal num_real)",
        num_real,
        split,
        type(datamodule).__name__,
        size,
        size,
    )
    evaluator.num_real = size


def check_optimized_metric(cfg: DictConfig) -> None:
    """Raise ``ConfigError`` unless a run of ``cfg`` logs ``optimized_metric``, the value a
    sweeper optimises: read from what the data and the evaluator declare, nothing built.

    Sweepers call it before their first trial (a run that logs no such key returns nothing, and
    the sweep would fail only after that trial). Any ``train/`` key passes: every run logs its
    losses, plus diagnostics its loss picks. Nothing is checked when the evaluator or the data
    declares nothing (a custom evaluator).
    """
    metric = cfg.get("optimized_metric")
    evaluated = _evaluated_keys(cfg)
    if evaluated is None or (isinstance(metric, str) and metric.startswith("train/")):
        return
    if metric in evaluated:
        return
    head = (
        "a sweep optimises a logged metric" if metric is None else "no run of this config logs it"
    )
    train = "train/ keys (train/d_loss, train/g_loss, the loss's diagnostics)"
    if evaluated:
        rule = (
            f"{head}; runs log {', '.join(sorted(evaluated))} and "
            f"{train}: set optimized_metric to one of them"
        )
    else:
        rule = (
            f"{head}; no evaluation runs (eval.evaluator is null, eval.every_n_iterations=0 "
            f"or callbacks=none), so runs log only {train}: choose an eval group with a "
            "cadence > 0 and the default callbacks, or set optimized_metric to a train/ key"
        )
    raise ConfigError("optimized_metric", metric, rule)


def _evaluated_keys(cfg: DictConfig) -> frozenset[str] | None:
    """The keys a run's evaluations log (empty: no evaluation runs); None when the evaluator or
    the data does not declare them."""
    from gan_lab.callbacks.checkpoint import IterationCheckpoint
    from gan_lab.callbacks.evaluation import Evaluation

    every = OmegaConf.select(cfg, "eval.every_n_iterations")
    no_evaluator = OmegaConf.select(cfg, "eval.evaluator") is None or every == 0
    if no_evaluator or not _callbacks_of(cfg, Evaluation):
        return frozenset()
    logged_keys = _declared(target_of(cfg, "eval.evaluator"), "logged_keys")
    suite = _declared(target_of(cfg, "data"), "metrics")
    if logged_keys is None or suite is None:
        return None
    keys = logged_keys(suite, OmegaConf.select(cfg, "eval.evaluator.extractor_name"))
    # The checkpoint callback logs the best value of the metric it monitors, and its iteration.
    for key in _callbacks_of(cfg, IterationCheckpoint):
        if (monitor := OmegaConf.select(cfg, f"{key}.monitor")) in keys:
            keys |= {f"best/{monitor}", "best/iteration"}
    return keys


def _callbacks_of(cfg: DictConfig, kind: type) -> list[str]:
    """The keys of the ``callbacks`` nodes whose ``_target_`` is a ``kind``."""
    keys = [f"callbacks.{name}" for name in cfg.get("callbacks") or {}]
    return [
        key for key in keys if isinstance(t := target_of(cfg, key), type) and issubclass(t, kind)
    ]


def validate(cfg: DictConfig, datamodule: GANDataModule | None = None) -> None:
    """Raise ``ConfigError`` on the first rule ``cfg`` breaks.

    With ``datamodule`` (built but not yet fitted) the checks that need the data run too:
    batch size against the training set size, the nets' declared input shapes, the eval
    group's metric suite and feature extractor against what the data declares. Then
    ``limit_eval_samples`` caps the evaluator's sample counts at ``eval.max_samples`` and
    ``fit_eval_to_data`` clamps ``eval.evaluator.num_real`` to the evaluator's real split: the
    only changes ``validate`` makes to ``cfg``, made before the module stores its config.
    """
    check_nodes(cfg, RunConfig)
    _check_train(cfg)
    _check_trainer(cfg)
    _check_optimizers(cfg)
    _check_loss(cfg)
    _check_model(cfg, datamodule)
    # Before the batch check, which loads the data: a config that cannot work says so even
    # where the data is not there yet.
    _check_eval(cfg, datamodule)
    _check_batch(cfg, datamodule)
    if datamodule is not None:
        limit_eval_samples(cfg, datamodule)
        fit_eval_to_data(cfg, datamodule)
        _check_neighbours(cfg, datamodule)
