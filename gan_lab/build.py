"""Builders: a composed run config becomes a DataModule, a GANModule and a Trainer.

Shared by every entry point (``gan_lab.train``, ``gan_lab.evaluate``), the benchmarks and the
tests, so that all of them build a run the same way. Each part is a ``_target_`` node of its
config group, made with ``hydra.utils.instantiate``.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Checkpoint, ProgressBar
from omegaconf import DictConfig, OmegaConf

from gan_lab.checkpoint_io import AtomicCheckpointIO
from gan_lab.config import TrainSettings
from gan_lab.console import IterationRichProgressBar, IterationTQDMProgressBar, quiet_lightning
from gan_lab.data.base import GANDataModule
from gan_lab.gan_module import GANModule, GANParts

log = logging.getLogger(__name__)


def build_datamodule(cfg: DictConfig) -> GANDataModule:
    """The ``data`` group's DataModule, yielding the k real minibatches of one iteration."""
    datamodule = instantiate(cfg.data)
    datamodule.batches_per_step = cfg.train.k_d_steps
    return datamodule


def build_parts(cfg: DictConfig, sample_shape: tuple[int, ...]) -> GANParts:
    """Prior, nets (sized from the prior and the data), loss, optimizers, regularizer, noise."""
    prior = instantiate(cfg.prior)
    return GANParts(
        generator=instantiate(cfg.model.g)(latent_dim=prior.dim, sample_shape=sample_shape),
        discriminator=instantiate(cfg.model.d)(sample_shape=sample_shape),
        loss=instantiate(cfg.loss),
        prior=prior,
        optimizer_g=instantiate(cfg.optimizer.g),
        optimizer_d=instantiate(cfg.optimizer.d),
        regularizer=instantiate(cfg.regularizer) if cfg.regularizer else None,
        instance_noise=instantiate(cfg.instance_noise) if cfg.instance_noise else None,
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


def _instantiate_dict(node: DictConfig | None) -> list[Any]:
    return [instantiate(value) for value in (node or {}).values() if value]


def build_trainer(cfg: DictConfig) -> L.Trainer:
    """A Trainer whose budget is ``train.iterations`` iterations, with the configured loggers
    and a progress bar counting iterations."""
    quiet_lightning()
    callbacks = _instantiate_dict(cfg.callbacks)
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
    return instantiate(
        cfg.trainer,
        logger=_instantiate_dict(cfg.logger) or False,
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
