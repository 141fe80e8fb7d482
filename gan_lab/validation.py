"""Start-up checks of a composed run config: impossible values fail before any training.

Hydra already rejects unknown group options (listing the valid ones) and unknown or mistyped
keys of the ``RunConfig`` schema. ``validate`` adds the rules a schema cannot express, each
failing with one line ``<key>=<value>: <rule>``.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from gan_lab.data.base import METRIC_SUITES, GANDataModule, batch_shortfall
from gan_lab.nan_guard import POLICIES


class ConfigError(ValueError):
    """A config value breaks a rule; the message is ``key=value: rule``."""

    def __init__(self, key: str, value: Any, rule: str) -> None:
        super().__init__(f"{key}={value}: {rule}")
        self.key, self.value, self.rule = key, value, rule


# Config nodes whose keys are constructor arguments of their ``_target_`` (the nets also get
# their sizes from the prior and the data when built, gan_lab.build).
ARGUMENT_NODES = ("model.g", "model.d", "loss", "prior", "regularizer", "instance_noise")


def _target(cfg: DictConfig, key: str) -> Any | None:
    """The class (or function) the ``_target_`` of node ``key`` names; None for an empty node.

    Rules read what a part declares about itself (class attributes), never its name.
    """
    node = OmegaConf.select(cfg, key)
    if not isinstance(node, DictConfig) or not node.get("_target_"):
        return None
    try:
        return get_object(node._target_)
    except Exception as err:  # hydra's message spans lines and embeds a traceback
        raise ConfigError(
            f"{key}._target_", node._target_, "cannot be imported: give a module.Class path"
        ) from err


def _check_arguments(cfg: DictConfig, key: str) -> None:
    """Every key of node ``key`` must be an argument its ``_target_`` accepts."""
    target = _target(cfg, key)
    if target is None:
        return
    try:
        parameters = inspect.signature(target).parameters
    except (TypeError, ValueError):  # a builtin without a signature: nothing to check
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    node = OmegaConf.select(cfg, key)
    for name in node:
        if not (name.startswith("_") and name.endswith("_")) and name not in parameters:
            raise ConfigError(
                f"{key}.{name}",
                node[name],
                f"{target.__name__} takes no argument {name!r}; it takes {', '.join(parameters)}",
            )


def _d_setting(cfg: DictConfig, key: str) -> Any:
    """``model.d.<key>`` when the model config has a D node with that key, else None."""
    d = cfg.model.get("d")
    return d.get(key) if isinstance(d, DictConfig) else None


def _at_least(cfg: DictConfig, key: str, minimum: int) -> None:
    value = cfg
    for part in key.split("."):
        value = value[part]
    if value < minimum:
        raise ConfigError(key, value, f"must be >= {minimum}")


def _check_train(cfg: DictConfig) -> None:
    for key in ("k_d_steps", "iterations", "log_every", "sample_every", "checkpoint_every"):
        _at_least(cfg, f"train.{key}", 1)
    _at_least(cfg, "train.nan_check_every", 1)
    _at_least(cfg, "train.max_skips", 1)
    _at_least(cfg, "train.num_fixed_samples", 1)
    train = cfg.train
    if train.on_nan not in POLICIES:
        raise ConfigError("train.on_nan", train.on_nan, f"must be one of {', '.join(POLICIES)}")
    decay = train.ema_decay
    if decay is not None and not 0.0 < decay < 1.0:
        raise ConfigError("train.ema_decay", decay, "must be in (0, 1) or null")


def _check_optimizers(cfg: DictConfig) -> None:
    for net in ("g", "d"):
        lr = cfg.optimizer[net].get("lr")
        if lr is not None and not (lr > 0 and math.isfinite(lr)):
            raise ConfigError(f"optimizer.{net}.lr", lr, "must be > 0")


def _check_prior_and_loss(cfg: DictConfig) -> None:
    dim = cfg.prior.get("dim")
    if dim is not None and (not isinstance(dim, int) or dim <= 0):
        raise ConfigError("prior.dim", dim, "latent dimension must be an integer > 0")
    if getattr(_target(cfg, "loss"), "needs_lipschitz_critic", False):
        _check_lipschitz_critic(cfg)


def _check_lipschitz_critic(cfg: DictConfig) -> None:
    # The critic must be (about) 1-Lipschitz everywhere for its scores to estimate W1:
    # weight clipping, WGAN-GP on interpolates or spectral norm do that; R1 (on real data only)
    # does not.
    clip = cfg.loss.get("clip")
    spectral_norm = bool(_d_setting(cfg, "spectral_norm"))
    if clip is not None:
        if not clip > 0:
            raise ConfigError("loss.clip", clip, "must be > 0 or null")
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
    regularizer = _target(cfg, "regularizer")
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
    _at_least(cfg, "data.batch_size", 1)
    pack = _d_setting(cfg, "pack")
    if pack is not None and (pack < 1 or batch_size % pack):
        raise ConfigError(
            "model.d.pack", pack, f"must be >= 1 and divide data.batch_size={batch_size}"
        )
    size = datamodule.num_samples("train") if datamodule is not None else None
    if size is not None and (rule := batch_shortfall(size, batch_size, cfg.train.k_d_steps)):
        raise ConfigError("data.batch_size", batch_size, rule)


def _check_model(cfg: DictConfig, datamodule: GANDataModule | None) -> None:
    shape = tuple(datamodule.sample_shape) if datamodule is not None else None
    for key in ("model.g", "model.d"):
        # A net that declares ``resolutions`` takes square images (C, R, R) at one of them.
        net = _target(cfg, key)
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
    for key in ARGUMENT_NODES:
        _check_arguments(cfg, key)


def _check_eval(cfg: DictConfig, datamodule: GANDataModule | None) -> None:
    if datamodule is None or OmegaConf.select(cfg, "eval.evaluator") is None:
        return
    if datamodule.metrics not in METRIC_SUITES:
        raise ConfigError(
            "eval.evaluator",
            OmegaConf.select(cfg, "eval.evaluator._target_"),
            f"{type(datamodule).__name__} declares no metrics (its class attribute `metrics` is "
            f"{datamodule.metrics!r}, not one of {', '.join(METRIC_SUITES)}): declare one, or "
            "train with eval=none",
        )


def validate(cfg: DictConfig, datamodule: GANDataModule | None = None) -> None:
    """Raise ``ConfigError`` on the first rule ``cfg`` breaks.

    With ``datamodule`` (built but not yet fitted) the checks that need the data run too:
    batch size against the training set size, the nets' declared input shapes.
    """
    _check_train(cfg)
    _check_optimizers(cfg)
    _check_prior_and_loss(cfg)
    _check_batch(cfg, datamodule)
    _check_model(cfg, datamodule)
    _check_eval(cfg, datamodule)
