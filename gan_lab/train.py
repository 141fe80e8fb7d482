"""Entry point: compose the config, build the parts, fit, report where the results went."""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Checkpoint, ProgressBar, RichProgressBar, TQDMProgressBar
from omegaconf import DictConfig, OmegaConf

import gan_lab.config  # noqa: F401 - registers the run schema with Hydra's ConfigStore
from gan_lab.checkpoint_io import AtomicCheckpointIO
from gan_lab.gan_module import GANModule
from gan_lab.nan_guard import NonFiniteGuard
from gan_lab.resume import exit_on_sigterm, finished_metrics, mark_done
from gan_lab.validation import validate

log = logging.getLogger(__name__)


def build_module(cfg: DictConfig, sample_shape: tuple[int, ...]) -> GANModule:
    """Instantiate prior, nets, loss, optimizers, regularizer and instance noise from the config."""
    prior = instantiate(cfg.prior)
    generator = instantiate(cfg.model.g)(latent_dim=prior.dim, sample_shape=sample_shape)
    discriminator = instantiate(cfg.model.d)(sample_shape=sample_shape)
    return GANModule(
        generator=generator,
        discriminator=discriminator,
        loss=instantiate(cfg.loss),
        prior=prior,
        optimizer_g=instantiate(cfg.optimizer.g),
        optimizer_d=instantiate(cfg.optimizer.d),
        k_d_steps=cfg.train.k_d_steps,
        regularizer=instantiate(cfg.regularizer) if cfg.regularizer else None,
        instance_noise=instantiate(cfg.instance_noise) if cfg.instance_noise else None,
        ema_decay=cfg.train.ema_decay,
        ema_warmup=cfg.train.ema_warmup,
        num_fixed_samples=cfg.train.num_fixed_samples,
        config=OmegaConf.to_container(cfg, resolve=True),
        nan_guard=NonFiniteGuard(cfg.train.on_nan, cfg.train.nan_check_every, cfg.train.max_skips),
        compile=cfg.train.compile,
        channels_last=cfg.train.channels_last,
        sample_seed=cfg.seed,
    )


def build_datamodule(cfg: DictConfig) -> Any:
    datamodule = instantiate(cfg.data)
    # Each training batch carries the k real minibatches of one iteration.
    datamodule.batches_per_step = cfg.train.k_d_steps
    return datamodule


def _instantiate_dict(node: DictConfig | None) -> list[Any]:
    return [instantiate(value) for value in (node or {}).values() if value]


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """``last`` means this run dir's last checkpoint, or a fresh start if there is none yet."""
    if cfg.ckpt_path != "last":
        return cfg.ckpt_path
    path = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    if path.is_file():
        return str(path)
    log.info("ckpt_path=last but %s does not exist yet: starting from scratch", path)
    return None


def build_trainer(cfg: DictConfig) -> L.Trainer:
    """A Trainer whose budget is ``train.iterations`` iterations, with the configured loggers."""
    callbacks = _instantiate_dict(cfg.callbacks)
    if cfg.trainer.get("enable_progress_bar", True) and not any(
        isinstance(c, ProgressBar) for c in callbacks
    ):
        # Lightning's default bar redraws every step: ~5 % of a small MLP's iteration on CPU
        # (docs/benchmarks.md). Redrawing every log_every iterations costs nothing visible.
        bar = RichProgressBar if importlib.util.find_spec("rich") else TQDMProgressBar
        callbacks.append(bar(refresh_rate=cfg.train.log_every))
    return instantiate(
        cfg.trainer,
        logger=_instantiate_dict(cfg.logger) or False,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        # The training stream is infinite; one "epoch" is the whole budget of iterations.
        max_epochs=1,
        limit_train_batches=cfg.train.iterations,
        log_every_n_steps=cfg.train.log_every,
        num_sanity_val_steps=0,
        # Lightning adds its own global_step-based ModelCheckpoint unless ours is there.
        enable_checkpointing=any(isinstance(c, Checkpoint) for c in callbacks),
    )


@dataclass
class Run:
    """What a finished fit leaves behind."""

    trainer: L.Trainer
    module: GANModule
    datamodule: Any
    metrics: dict[str, float]


def fit(cfg: DictConfig) -> Run:
    """Fit one GAN as the config says."""
    L.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg)
    validate(cfg, datamodule)
    module = build_module(cfg, datamodule.sample_shape)
    trainer = build_trainer(cfg)
    for logger in trainer.loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    with exit_on_sigterm():
        trainer.fit(module, datamodule=datamodule, ckpt_path=resolve_ckpt_path(cfg))
    metrics = {key: float(value) for key, value in trainer.callback_metrics.items()}
    _finish_wandb()
    return Run(trainer, module, datamodule, metrics)


def _finish_wandb() -> None:
    # Several runs in one process (tests, Hydra's basic launcher) each need their own W&B run.
    import sys

    if "wandb" in sys.modules and sys.modules["wandb"].run is not None:
        sys.modules["wandb"].finish()


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, print where the results went, return the final logged metrics."""
    if (metrics := finished_metrics(cfg)) is not None:
        return metrics
    run = fit(cfg)
    if run.trainer.is_global_zero:
        _report(cfg, run.metrics)
        if run.module.stop_reason is None:
            mark_done(cfg, run.metrics)
    return run.metrics


def _report(cfg: DictConfig, metrics: dict[str, float]) -> None:
    out = Path(cfg.paths.output_dir)
    shown = ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()) if "/" in k)
    print(f"\nrun directory : {out}")
    print(f"samples       : {out / 'samples'}")
    print(f"checkpoints   : {out / 'checkpoints'}")
    print(f"metrics       : {out / 'metrics.csv'}")
    print(f"final metrics : {shown}")


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """CLI entry; returns ``optimized_metric``'s final value so Hydra sweepers can optimise it."""
    metrics = train(cfg)
    return metrics.get(cfg.optimized_metric) if cfg.optimized_metric else None


if __name__ == "__main__":
    main()
