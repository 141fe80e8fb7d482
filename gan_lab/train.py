"""CLI entry point and run orchestration: compose the config, build (gan_lab.build), validate,
fit, report where the results went."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf

import gan_lab.config  # noqa: F401 - registers the run schema with Hydra's ConfigStore
from gan_lab import build
from gan_lab.console import run_log
from gan_lab.data.base import GANDataModule
from gan_lab.errors import reported_as_one_line
from gan_lab.gan_module import GANModule
from gan_lab.resume import exit_on_sigterm, finished_metrics, mark_done
from gan_lab.validation import validate

# Named, not __name__: under ``python -m gan_lab.train`` this module is __main__.
log = logging.getLogger("gan_lab.train")


@dataclass
class Run:
    """What a finished fit leaves behind."""

    trainer: L.Trainer
    module: GANModule
    datamodule: GANDataModule
    metrics: dict[str, float]


def fit(cfg: DictConfig) -> Run:
    """Fit one GAN as the config says."""
    with run_log():
        L.seed_everything(cfg.seed, workers=True)
        datamodule = build.build_datamodule(cfg)
        validate(cfg, datamodule)
        module = build.build_module(cfg, datamodule.sample_shape)
        trainer = build.build_trainer(cfg)
        for logger in trainer.loggers:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        ckpt_path = build.resolve_ckpt_path(cfg)
        if trainer.is_global_zero:
            log.info(
                "training %s: %s vs %s, %s, on %s, %d iterations (k_d_steps=%d)%s; "
                "run directory %s",
                cfg.name,
                type(module.generator).__name__,
                type(module.discriminator).__name__,
                type(module.loss).__name__,
                type(datamodule).__name__,
                cfg.train.iterations,
                cfg.train.k_d_steps,
                f", resuming from {ckpt_path}" if ckpt_path else "",
                cfg.paths.output_dir,
            )
        with exit_on_sigterm():
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    metrics = {key: float(value) for key, value in trainer.callback_metrics.items()}
    _finish_wandb()
    return Run(trainer, module, datamodule, metrics)


def _finish_wandb() -> None:
    # Several runs in one process (tests, Hydra's basic launcher) each need their own W&B run.
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
    # One record, so that the console (Hydra's handler) and train.log both hold the whole
    # summary once; a print would reach only the console.
    log.info(
        "run finished\n"
        f"run directory : {out}\n"
        f"samples       : {out / 'samples'}\n"
        f"checkpoints   : {out / 'checkpoints'}\n"
        f"metrics       : {out / 'metrics.csv'}\n"
        f"final metrics : {shown}"
    )


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """CLI entry; returns ``optimized_metric``'s final value so Hydra sweepers can optimise it.

    A user error (gan_lab.errors.UserError) ends the run with one line and a non-zero status;
    ``HYDRA_FULL_ERROR=1`` shows its traceback.
    """
    with reported_as_one_line("gan_lab.train"):
        metrics = train(cfg)
    return metrics.get(cfg.optimized_metric) if cfg.optimized_metric else None


if __name__ == "__main__":
    main()
