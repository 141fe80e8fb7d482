"""Builders: a composed run config becomes a DataModule, a GANModule and a Trainer.

Shared by every entry point (``gan_lab.train``, ``gan_lab.evaluate``), the benchmarks and the
tests, so that all of them build a run the same way. Each part is a ``_target_`` node of its
config group, made with ``hydra.utils.instantiate``.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Checkpoint, ProgressBar
from omegaconf import DictConfig, OmegaConf

from gan_lab.checkpoint_io import AtomicCheckpointIO
from gan_lab.config import TrainSettings
from gan_lab.console import IterationRichProgressBar, IterationTQDMProgressBar, quiet_lightning
from gan_lab.data.base import GANDataModule
from gan_lab.errors import ConfigError, UserError, one_line
from gan_lab.gan_module import GANModule, GANParts

log = logging.getLogger(__name__)


@contextmanager
def built_from(key: str, node: Any) -> Iterator[None]:
    """Around the construction of config node ``key``: a constructor's ``ValueError`` or
    ``TypeError`` (or Lightning's MisconfigurationException) becomes a ``ConfigError`` naming
    the node, in one line.

    gan_lab.validation checks every value against what its class declares before anything is
    built; this reports the rest (the checks inside torch's and Lightning's constructors, rules
    between arguments) under the key to fix instead of a traceback. ``HYDRA_FULL_ERROR=1``
    shows the original error as the cause.
    """
    try:
        yield
    except UserError:
        raise
    except (ValueError, TypeError, MisconfigurationException, InstantiationException) as error:
        cause = error
        while isinstance(cause, InstantiationException) and cause.__cause__ is not None:
            cause = cause.__cause__  # Hydra's wrapper: its message spans lines
        if isinstance(cause, UserError):
            raise cause from error
        if not isinstance(cause, (ValueError, TypeError, MisconfigurationException)):
            raise
        target = node.get("_target_") if isinstance(node, DictConfig) else node
        raise ConfigError(key, target, f"cannot be built: {one_line(cause)}") from error


def build_datamodule(cfg: DictConfig) -> GANDataModule:
    """The ``data`` group's DataModule, yielding the k real minibatches of one iteration."""
    with built_from("data", cfg.data):
        datamodule = instantiate(cfg.data)
    datamodule.batches_per_step = cfg.train.k_d_steps
    return datamodule


def build_parts(cfg: DictConfig, sample_shape: tuple[int, ...]) -> GANParts:
    """Prior, nets (sized from the prior and the data), loss, optimizers, regularizer, noise.

    Each is built under its config key (``built_from``); the optimizers, which Lightning builds
    only once training starts, are built here once on a stand-in parameter so that their own
    checks (betas, momentum) fail at start-up."""

    def build(key: str, *args: Any, **kwargs: Any) -> Any:
        node = OmegaConf.select(cfg, key)
        if not node:
            return None
        with built_from(key, node):
            made = instantiate(node)
            return made(*args, **kwargs) if args or kwargs else made

    prior = build("prior")
    for key in ("optimizer.g", "optimizer.d"):
        build(key, [torch.nn.Parameter(torch.zeros(1))])
    return GANParts(
        generator=build("model.g", latent_dim=prior.dim, sample_shape=sample_shape),
        discriminator=build("model.d", sample_shape=sample_shape),
        loss=build("loss"),
        prior=prior,
        optimizer_g=build("optimizer.g"),
        optimizer_d=build("optimizer.d"),
        regularizer=build("regularizer"),
        instance_noise=build("instance_noise"),
        sample_shape=tuple(sample_shape),
    )


def train_settings(cfg: DictConfig) -> TrainSettings:
    """``cfg.train`` as the typed ``TrainSettings`` (a checkpoint's stored config is untyped;
    keys it lacks take the schema's defaults)."""
    return TrainSettings(**OmegaConf.to_container(cfg.train, resolve=True))


def build_module(cfg: DictConfig, sample_shape: tuple[int, ...]) -> GANModule:
    """The GANModule of ``cfg`` for data of ``sample_shape``; the resolved config rides along
    in its checkpoints so that ``gan_lab.evaluate`` can rebuild the run."""
    return GANModule(
        build_parts(cfg, sample_shape),
        train_settings(cfg),
        config=OmegaConf.to_container(cfg, resolve=True),
        sample_seed=cfg.seed,
    )


def _instantiate_dict(key: str, node: DictConfig | None) -> list[Any]:
    made = []
    for name, value in (node or {}).items():
        if value:
            with built_from(f"{key}.{name}", value):
                made.append(instantiate(value))
    return made


def build_trainer(cfg: DictConfig) -> L.Trainer:
    """A Trainer whose budget is ``train.iterations`` iterations, with the configured loggers
    and a progress bar counting iterations."""
    quiet_lightning()
    callbacks = _instantiate_dict("callbacks", cfg.callbacks)
    if cfg.trainer.get("enable_progress_bar", True) and not any(
        isinstance(c, ProgressBar) for c in callbacks
    ):
        # Lightning's default bar redraws every step: ~5 % of a small MLP's iteration on CPU
        # (docs/benchmarks.md). Redrawing every log_every iterations costs nothing visible, and
        # the losses it shows are new only then.
        bar = (
            IterationRichProgressBar
            if importlib.util.find_spec("rich")
            else IterationTQDMProgressBar
        )
        callbacks.append(bar(every_n_iterations=cfg.train.log_every))
    loggers = _instantiate_dict("logger", cfg.logger) or False
    with built_from("trainer", cfg.trainer):
        return instantiate(
            cfg.trainer,
            logger=loggers,
            callbacks=callbacks,
            plugins=[AtomicCheckpointIO(trust=cfg.trust_checkpoint)],
            # The training stream is infinite; one "epoch" is the whole budget of iterations.
            # An int limit_train_batches also keeps Lightning from prefetching a batch ahead, so a
            # stream's state_dict is the state after the last batch trained on (gan_lab/data).
            max_epochs=1,
            limit_train_batches=cfg.train.iterations,
            log_every_n_steps=cfg.train.log_every,
            num_sanity_val_steps=0,
            # Lightning adds its own global_step-based ModelCheckpoint unless ours is there.
            enable_checkpointing=any(isinstance(c, Checkpoint) for c in callbacks),
        )
