"""Start-up checks of a composed run config: impossible values fail before any training.

Hydra already rejects unknown group options (listing the valid ones) and unknown or mistyped
keys of the ``RunConfig`` schema. ``validate`` adds the rules a schema cannot express, each
failing with one line ``<key>=<value>: <rule>``.
"""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig

from gan_lab.nets.dcgan import SUPPORTED_RESOLUTIONS

NAN_POLICIES = ("stop", "skip")


class ConfigError(ValueError):
    """A config value breaks a rule; the message is ``key=value: rule``."""

    def __init__(self, key: str, value: Any, rule: str) -> None:
        super().__init__(f"{key}={value}: {rule}")
        self.key, self.value, self.rule = key, value, rule


def _target(node: Any) -> str:
    """Class name of a ``_target_`` node ('' when absent)."""
    if not isinstance(node, DictConfig):
        return ""
    return str(node.get("_target_") or "").rsplit(".", 1)[-1]


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
    if train.on_nan not in NAN_POLICIES:
        raise ConfigError("train.on_nan", train.on_nan, f"must be one of {', '.join(NAN_POLICIES)}")
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
    if _target(cfg.loss) == "WassersteinLoss":
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
    regularizer = _target(cfg.regularizer)
    if regularizer == "GradientPenalty" or spectral_norm:
        return
    rule = "the wasserstein loss needs a Lipschitz critic: "
    if regularizer == "R1Penalty":
        rule += "R1 does not make the critic Lipschitz (it penalises real data only); "
    raise ConfigError(
        "loss.clip",
        None,
        rule + "set loss.clip > 0, regularizer=gradient_penalty or model.d.spectral_norm=true",
    )


def _check_batch(cfg: DictConfig, datamodule: Any | None) -> None:
    batch_size = cfg.data.get("batch_size")
    if batch_size is None:
        return
    _at_least(cfg, "data.batch_size", 1)
    pack = _d_setting(cfg, "pack")
    if pack is not None and (pack < 1 or batch_size % pack):
        raise ConfigError(
            "model.d.pack", pack, f"must be >= 1 and divide data.batch_size={batch_size}"
        )
    if datamodule is not None and getattr(datamodule, "kind", "") == "image":
        size = datamodule.num_samples("train")
        per_iteration = cfg.train.k_d_steps * batch_size
        if per_iteration > size:
            raise ConfigError(
                "data.batch_size",
                batch_size,
                f"train.k_d_steps * data.batch_size = {per_iteration} must be <= the "
                f"{size} training images",
            )


def _check_model(cfg: DictConfig, datamodule: Any | None) -> None:
    shape = tuple(datamodule.sample_shape) if datamodule is not None else None
    if _target(cfg.model.get("g")) == "DCGANGenerator":
        if shape is not None and len(shape) != 3:
            raise ConfigError("model", "dcgan", f"needs image data (C, H, W), got shape {shape}")
        resolution = shape[-1] if shape is not None else cfg.data.get("resolution")
        if resolution is not None and resolution not in SUPPORTED_RESOLUTIONS:
            raise ConfigError(
                "data.resolution",
                resolution,
                f"DCGAN supports resolutions {', '.join(map(str, SUPPORTED_RESOLUTIONS))}",
            )
    # A model config that names its channel count must agree with the data.
    if shape is not None and len(shape) == 3:
        for key in ("channels", "g.channels", "d.channels", "g.out_channels", "d.in_channels"):
            node, *rest = key.split(".")
            value = cfg.model.get(node)
            if rest and isinstance(value, DictConfig):
                value = value.get(rest[0])
            if isinstance(value, int) and value != shape[0]:
                raise ConfigError(
                    f"model.{key}", value, f"must match the data's {shape[0]} channels"
                )


def validate(cfg: DictConfig, datamodule: Any | None = None) -> None:
    """Raise ``ConfigError`` on the first rule ``cfg`` breaks.

    With ``datamodule`` (built but not yet fitted) the checks that need the data run too:
    batch size against the training set size, DCGAN resolution and channel counts.
    """
    _check_train(cfg)
    _check_optimizers(cfg)
    _check_prior_and_loss(cfg)
    _check_batch(cfg, datamodule)
    _check_model(cfg, datamodule)
